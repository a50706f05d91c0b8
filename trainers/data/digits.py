"""scikit-learn's bundled 8x8 digits: the offline default dataset (no download needed)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataSplits, make_splits, positive_int, split_indices, standardise

NATIVE_SIZE = 8


def load_digits_splits(*, data_dir: str | None = None, size: int = NATIVE_SIZE) -> DataSplits:
    """1797 8x8 images, stratified 80/20 split with the fixed split seed.

    Pixels are scaled to [0, 1] and then standardised with one global train mean/std (as is
    usual for images; per-pixel stats would divide the always-zero border by ~0).
    ``size`` upsamples bilinearly to size x size (28: MNIST's shape, so the FOGZO paper's
    784-10-10 MLP runs offline). `data_dir` is ignored: the data ships inside scikit-learn.
    """
    size = positive_int("digits", "size", size)
    images, target = _read_digits()
    x = (images / 16.0)[:, None, :, :]
    if size != NATIVE_SIZE:
        x = F.interpolate(
            torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False
        ).numpy()
    y = target
    train, test = split_indices(y)
    train_x, test_x = standardise(x[train], x[test], per_feature=False)
    return make_splits("digits", train_x, y[train], test_x, y[test], num_classes=10)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float64, labels int64) from scikit-learn's ``digits.csv.gz``,
    read as ``sklearn.datasets.load_digits`` reads it but without importing scikit-learn:
    that import is 0.9 s, most of a short trial's first start in a fresh worker."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = next(
        (p for f in folders if (p := Path(f, "datasets", "data", "digits.csv.gz")).is_file()), None
    )
    if path is None:  # an unusual install: let scikit-learn find its file
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, np.int64)
    with gzip.open(path, "rt") as stream:
        data = np.loadtxt(stream, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
