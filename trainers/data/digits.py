"""scikit-learn's bundled 8x8 digits: the offline default dataset (no download needed)."""

from __future__ import annotations

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
    from sklearn.datasets import load_digits

    size = positive_int("digits", "size", size)
    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float64) / 16.0)[:, None, :, :]
    if size != NATIVE_SIZE:
        x = F.interpolate(
            torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False
        ).numpy()
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = split_indices(y)
    train_x, test_x = standardise(x[train], x[test], per_feature=False)
    return make_splits("digits", train_x, y[train], test_x, y[test], num_classes=10)
