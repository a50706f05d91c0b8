"""Shared types and helpers for dataset loaders.

Every loader returns a `DataSplits` so trainers never branch on the dataset, and every
user mistake surfaces as a one-line `DatasetError` that a sweep log can show verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contract.errors import DatasetError  # noqa: F401 - raised here, defined torch-free

#: Seed of every built-in train/test split and subsample. It is deliberately independent of
#: the trial seed so that all trials of a sweep are scored on the very same test examples.
SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)  # tensor fields: field-wise == would be ambiguous
class DataSplits:
    """In-memory train/test tensors plus the metadata a model builder needs.

    `input_shape` is the per-example shape (e.g. (1, 8, 8) or (32,)), so models can be
    built without looking at the tensors.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    #: "classification" (x float32 features, or int64 token ids for prompt
    #: classification; y class ids) or "language_modeling" (x and y int64 token ids of the
    #: same shape; num_classes is the vocabulary size). See trainers.tasks.
    task: str = "classification"
    #: Training-time augmentation ``augment(x_batch, generator) -> x_batch`` (None = none).
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    #: Keyword options for the model builder (e.g. ``vocab_size``, ``pad_token_id``,
    #: ``label_token_ids``); the trial passes only those the builder declares.
    model_hints: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Catch loader bugs here rather than as shape errors deep inside a trial.
        if self.task == "language_modeling":
            x_dtypes: tuple[torch.dtype, ...] = (torch.int64,)
        else:
            x_dtypes = (torch.float32, torch.int64)
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype not in x_dtypes or y.dtype != torch.int64:
                wanted = " or ".join(str(d).removeprefix("torch.") for d in x_dtypes)
                raise TypeError(
                    f"{self.name}: {split} needs {wanted} x / int64 y, got {x.dtype} / {y.dtype}"
                )
            if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name}: {split} x {tuple(x.shape)} / y "
                    f"{tuple(y.shape)} disagree with input_shape "
                    f"{self.input_shape}"
                )

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.test_x.shape[0])


def positive_int(dataset: str, option: str, value: object) -> int:
    """Validate an integer option (bools are rejected: `True` is not a size)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DatasetError(f"{dataset}: option {option}={value!r} must be a positive integer")
    return int(value)


def split_indices(
    y: np.ndarray, test_fraction: float = 0.2, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/test index split, stratified when every class has 2+ examples.

    Stratifying keeps small classes represented in the test set; tiny or degenerate label
    sets fall back to a plain seeded permutation instead of failing.
    """
    n = len(y)
    n_test = min(max(1, round(n * test_fraction)), n - 1) if n > 1 else 0
    rng = np.random.default_rng(seed)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_classes = len(counts)
    if counts.min() >= 2 and n_classes <= n_test <= n - n_classes:
        # Allocate test slots per class proportionally (largest remainder), >=1 each.
        share = counts * (n_test / n)
        alloc = np.maximum(1, np.floor(share).astype(int))
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        i = 0
        while alloc.sum() < n_test:
            c = order[i % n_classes]
            if alloc[c] < counts[c] - 1:
                alloc[c] += 1
            i += 1
        while alloc.sum() > n_test:
            c = int(np.argmax(alloc))
            alloc[c] -= 1
        test = np.concatenate(
            [rng.permutation(np.flatnonzero(inverse == c))[: alloc[c]] for c in range(n_classes)]
        )
    else:
        test = rng.permutation(n)[:n_test]
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def subsample(n: int, limit: int | None, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted indices of a deterministic subset of size min(limit, n) (all if limit is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def remap_labels(*label_arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Map arbitrary labels (ints, strings) jointly onto 0..C-1; returns (mapped, classes)."""
    classes, inverse = np.unique(
        np.concatenate([np.asarray(a).ravel() for a in label_arrays]), return_inverse=True
    )
    out, start = [], 0
    for a in label_arrays:
        out.append(inverse[start : start + len(a)].astype(np.int64))
        start += len(a)
    return out, classes


def standardise(
    train: np.ndarray, test: np.ndarray, *, per_feature: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with train-split statistics only, so no test information leaks in.

    Constant features (std 0) are only centred, never divided by zero.
    """
    axis = 0 if per_feature else None
    mean = train.mean(axis=axis, dtype=np.float64)
    std = train.std(axis=axis, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def make_splits(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
) -> DataSplits:
    """Wrap numpy arrays as a `DataSplits` (float32 features, int64 labels)."""
    return DataSplits(
        train_x=torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32)),
        train_y=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        test_x=torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.float32)),
        test_y=torch.from_numpy(np.ascontiguousarray(test_y, dtype=np.int64)),
        num_classes=int(num_classes),
        input_shape=tuple(int(s) for s in train_x.shape[1:]),
        name=name,
    )
