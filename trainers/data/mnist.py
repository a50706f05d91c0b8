"""MNIST / FashionMNIST from torchvision's on-disk layout, read without torchvision.

torchvision's wheels do not import beside a CPU-only torch here, and nodes have no internet,
so the user copies `<data_dir>/MNIST/raw/*-ubyte[.gz]` once and we parse the IDX files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, DataSplits, make_splits, positive_int, subsample
from .idx import read_idx

#: dataset name -> (torchvision folder, normalisation mean, std)
VARIANTS: dict[str, tuple[str, float, float]] = {
    "mnist": ("MNIST", 0.1307, 0.3081),
    "fashion_mnist": ("FashionMNIST", 0.2860, 0.3530),
}

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(dataset: str, raw_dir: Path, filename: str) -> Path:
    """Return raw_dir/filename or its .gz twin; a one-line hint if neither exists."""
    for candidate in (raw_dir / filename, raw_dir / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    folder = VARIANTS[dataset][0]
    raise DatasetError(
        f"{dataset}: expected IDX file {raw_dir / filename}(.gz) — put "
        f"torchvision's {folder} folder under data_dir"
    )


def _read_split(dataset: str, raw_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images (N,H,W uint8) and labels (N,) and check they agree."""
    img_name, lbl_name = FILES[split]
    img_path, lbl_path = _find(dataset, raw_dir, img_name), _find(dataset, raw_dir, lbl_name)
    images = read_idx(img_path, expect_ndim=3, dataset=dataset)
    labels = read_idx(lbl_path, expect_ndim=1, dataset=dataset)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DatasetError(
            f"{dataset}: expected uint8 IDX data in {img_path} and {lbl_path}, "
            f"got {images.dtype} / {labels.dtype}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{dataset}: {img_path} has {len(images)} images but {lbl_path} "
            f"has {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


def _load_variant(
    dataset: str, data_dir: str | None, limit_train: int | None, limit_test: int | None
) -> DataSplits:
    folder, mean, std = VARIANTS[dataset]
    if data_dir is None:
        raise DatasetError(
            f"{dataset}: data_dir is required — point it at the folder that "
            f"holds torchvision's {folder}/raw/"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"{dataset}: data_dir {root} is not a directory — expected "
            f"{root / folder / 'raw'} inside it"
        )
    limits = {"train": limit_train, "test": limit_test}
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        limit = limits[split]
        if limit is not None:
            limit = positive_int(dataset, f"limit_{split}", limit)
        images, labels = _read_split(dataset, root / folder / "raw", split)
        keep = subsample(len(images), limit)
        x = (images[keep].astype(np.float32) / 255.0 - mean) / std
        arrays[split] = (x[:, None, :, :], labels[keep])
    # MNIST-style label files always use 0..9; keep 10 even if a subsample misses a digit.
    num_classes = max(
        10, int(max(arrays["train"][1].max(initial=0), arrays["test"][1].max(initial=0))) + 1
    )
    return make_splits(dataset, *arrays["train"], *arrays["test"], num_classes=num_classes)


def load_mnist(
    *, data_dir: str | None = None, limit_train: int | None = None, limit_test: int | None = None
) -> DataSplits:
    """MNIST from `<data_dir>/MNIST/raw/`, normalised with mean 0.1307 / std 0.3081.

    `limit_train` / `limit_test` keep a fixed-seed subset (same for every trial).
    """
    return _load_variant("mnist", data_dir, limit_train, limit_test)


def load_fashion_mnist(
    *, data_dir: str | None = None, limit_train: int | None = None, limit_test: int | None = None
) -> DataSplits:
    """FashionMNIST from `<data_dir>/FashionMNIST/raw/`, mean 0.2860 / std 0.3530."""
    return _load_variant("fashion_mnist", data_dir, limit_train, limit_test)
