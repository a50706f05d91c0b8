"""CIFAR-10 / CIFAR-100 from the official archives' on-disk layouts, without torchvision.

Nodes have no internet and torchvision does not import here, so the user unpacks the
official archive under ``data_dir`` once. Either version is read:

- python: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (torchvision's layout) or
  ``cifar-100-python/{train,test}``: pickled dicts, loaded with a restricted unpickler
  (``safe_pickle``) so a file in ``data_dir`` cannot run code;
- binary: ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` (records: label byte
  + 3072 pixel bytes) or ``cifar-100-binary/{train,test}.bin`` (coarse + fine label bytes
  + 3072 pixels). CIFAR-100 trains on the 100 fine labels.

Images are normalised with the standard per-channel CIFAR statistics; training batches
get the standard random crop 32 (padding 4) + horizontal flip, in torch, per batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .augment import RandomCropFlip, normalised_black
from .base import DatasetError, DataSplits, make_splits, positive_int, subsample
from .safe_pickle import UnsafePickleError, load_restricted

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarVariant:
    """Where one CIFAR variant lives on disk and how it is normalised."""

    name: str
    num_classes: int
    python_dir: str
    python_files: dict[str, tuple[str, ...]]
    label_key: str
    binary_dir: str
    binary_files: dict[str, tuple[str, ...]]
    label_bytes: int  # labels before the pixels of a binary record; the last one is used
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


VARIANTS: dict[str, CifarVariant] = {
    "cifar10": CifarVariant(
        "cifar10",
        10,
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "labels",
        "cifar-10-batches-bin",
        {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
        1,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarVariant(
        "cifar100",
        100,
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "fine_labels",
        "cifar-100-binary",
        {"train": ("train.bin",), "test": ("test.bin",)},
        2,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def _entry(batch: dict, key: str) -> object:
    """``batch[key]``: Python 2 batches have str keys under latin1, Python 3 ones bytes."""
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def _read_python(v: CifarVariant, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = load_restricted(path)
    except Exception as err:  # a user file: any failure to parse it is a data error
        reason = "refused" if isinstance(err, UnsafePickleError) else "unreadable"
        raise DatasetError(
            f"{v.name}: CIFAR batch {path} {reason} ({err}); only pickles of "
            f"plain containers and numpy arrays are loaded"
        ) from None
    try:
        data = np.asarray(_entry(batch, "data"), dtype=np.uint8)
        labels = np.asarray(_entry(batch, v.label_key), dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"{v.name}: {path} is not a CIFAR batch (needs 'data' and "
            f"'{v.label_key}', problem: {err})"
        ) from None
    if data.ndim != 2 or data.shape[1] != PIXELS or len(data) != len(labels):
        raise DatasetError(
            f"{v.name}: {path} holds data {data.shape} and {labels.shape} "
            f"labels; expected (N, {PIXELS}) and (N,)"
        )
    return data, labels


def _read_binary(v: CifarVariant, path: Path) -> tuple[np.ndarray, np.ndarray]:
    record = v.label_bytes + PIXELS
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise DatasetError(
            f"{v.name}: {path} has {raw.size} bytes, not a multiple of the "
            f"{record}-byte CIFAR record"
        )
    raw = raw.reshape(-1, record)
    return raw[:, v.label_bytes :], raw[:, v.label_bytes - 1].astype(np.int64)


def _read_split(v: CifarVariant, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one split, python version first."""
    python_dir, binary_dir = root / v.python_dir, root / v.binary_dir
    if python_dir.is_dir():
        reader, folder, names = _read_python, python_dir, v.python_files[split]
    elif binary_dir.is_dir():
        reader, folder, names = _read_binary, binary_dir, v.binary_files[split]
    else:
        raise DatasetError(
            f"{v.name}: expected {python_dir} (python version) or {binary_dir} "
            f"(binary version) — unpack the official archive into data_dir"
        )
    parts = []
    for name in names:
        if not (folder / name).is_file():
            raise DatasetError(f"{v.name}: expected file {folder / name}")
        parts.append(reader(v, folder / name))
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lbl for _, lbl in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= v.num_classes):
        raise DatasetError(
            f"{v.name}: labels in {folder} span {labels.min()}..{labels.max()}, "
            f"outside 0..{v.num_classes - 1}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(
    dataset: str,
    data_dir: str | None,
    limit_train: int | None,
    limit_test: int | None,
    augment: bool,
) -> DataSplits:
    """Shared loader of both variants (see the module docstring)."""
    v = VARIANTS[dataset]
    if data_dir is None:
        raise DatasetError(
            f"{dataset}: data_dir is required — point it at the folder that "
            f"holds {v.python_dir}/ or {v.binary_dir}/"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"{dataset}: data_dir {root} is not a directory — expected "
            f"{root / v.python_dir} inside it"
        )
    if not isinstance(augment, bool):
        raise DatasetError(f"{dataset}: option augment={augment!r} must be true or false")
    mean = np.array(v.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(v.std, dtype=np.float32).reshape(1, 3, 1, 1)
    arrays = {}
    for split, limit in (("train", limit_train), ("test", limit_test)):
        if limit is not None:
            limit = positive_int(dataset, f"limit_{split}", limit)
        images, labels = _read_split(v, root, split)
        keep = subsample(len(images), limit)
        arrays[split] = ((images[keep].astype(np.float32) / 255.0 - mean) / std, labels[keep])
    splits = make_splits(dataset, *arrays["train"], *arrays["test"], num_classes=v.num_classes)
    if not augment:
        return splits
    return dataclasses.replace(splits, augment=RandomCropFlip(4, normalised_black(v.mean, v.std)))


def load_cifar10(
    *,
    data_dir: str | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    augment: bool = True,
) -> DataSplits:
    """CIFAR-10 (50k/10k, 10 classes) from ``<data_dir>/cifar-10-batches-{py,bin}/``.

    ``limit_*`` keep a fixed-seed subset (same for every trial); ``augment`` enables the
    random crop + flip of training batches.
    """
    return load_cifar("cifar10", data_dir, limit_train, limit_test, augment)


def load_cifar100(
    *,
    data_dir: str | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    augment: bool = True,
) -> DataSplits:
    """CIFAR-100 (fine labels) from ``<data_dir>/cifar-100-{python,binary}/``."""
    return load_cifar("cifar100", data_dir, limit_train, limit_test, augment)
