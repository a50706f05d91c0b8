"""A user's own tabular data (.npz or .parquet), so sweeps are not limited to built-ins."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, DataSplits, make_splits, remap_labels, split_indices, standardise

NAME = "table"


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    """Features as float64, rejecting non-numeric and non-finite values with a clear message."""
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DatasetError(f"{NAME}: {what} has dtype {arr.dtype}; expected numeric features")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise DatasetError(f"{NAME}: {what} contains NaN or inf; expected finite features")
    return out


def _read_npz(path: Path, x_key: str, y_key: str) -> tuple[np.ndarray, ...]:
    """(x, y, x_test | None, y_test | None) from an .npz; `<x_key>_test` is the test split."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{NAME}: cannot read {path} as .npz ({exc})") from exc
    with npz:
        keys = set(npz.files)
        for key in (x_key, y_key):
            if key not in keys:
                raise DatasetError(
                    f"{NAME}: {path} has no array {key!r}; expected keys "
                    f"{x_key!r} and {y_key!r} (found {sorted(keys)})"
                )
        tx, ty = f"{x_key}_test", f"{y_key}_test"
        if (tx in keys) != (ty in keys):
            raise DatasetError(
                f"{NAME}: {path} has only one of {tx!r} / {ty!r}; expected "
                f"both for an explicit test split, or neither"
            )
        x = _numeric(npz[x_key], f"{path}[{x_key!r}]")
        xt = _numeric(npz[tx], f"{path}[{tx!r}]") if tx in keys else None
        return x, npz[y_key], xt, (npz[ty] if ty in keys else None)


def _read_parquet(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): `label` column -> y, every other numeric column -> a feature."""
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{NAME}: cannot read {path} as parquet ({msg})") from exc
    if label not in df.columns:
        raise DatasetError(
            f"{NAME}: {path} has no label column {label!r}; set option label= "
            f"to one of {[str(c) for c in df.columns]}"
        )
    if df[label].isna().any():
        raise DatasetError(
            f"{NAME}: label column {label!r} in {path} has missing values; "
            f"expected a label on every row"
        )
    feats = df.drop(columns=[label]).select_dtypes(include=["number", "bool"])
    if feats.shape[1] == 0:
        raise DatasetError(f"{NAME}: {path} has no numeric feature columns besides {label!r}")
    return _numeric(feats.to_numpy(), f"{path} features"), df[label].to_numpy()


def load_table(
    *,
    data_dir: str | None = None,
    path: str | None = None,
    x_key: str = "x",
    y_key: str = "y",
    label: str = "label",
) -> DataSplits:
    """Load `path` (.npz or .parquet); a relative path is resolved against data_dir.

    Resolving against data_dir matters under Ray Tune, which changes each trial's working
    directory. Labels are remapped to 0..C-1, features standardised per column with train
    statistics, and without an explicit test split a fixed-seed stratified 80/20 split is used.
    """
    if path is None:
        raise DatasetError(f"{NAME}: option path= is required (a .npz or .parquet file)")
    file = Path(path).expanduser()
    if not file.is_absolute() and data_dir is not None:
        file = Path(data_dir).expanduser() / file
    if not file.is_file():
        raise DatasetError(f"{NAME}: expected a .npz or .parquet file at {file}, found nothing")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        x, y, x_test, y_test = _read_npz(file, x_key, y_key)
    elif suffix in (".parquet", ".pq"):
        (x, y), x_test, y_test = _read_parquet(file, label), None, None
    else:
        raise DatasetError(
            f"{NAME}: {file} has suffix {suffix or '(none)'!r}; expected .npz or .parquet"
        )

    if x.ndim == 1:  # a single feature stored as a vector
        x = x[:, None]
    if x_test is not None and x_test.ndim == 1:
        x_test = x_test[:, None]
    y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or len(x) < 2:
        raise DatasetError(
            f"{NAME}: {file} has x {x.shape} and labels {y.shape}; expected "
            f"N>=2 rows of features and N labels"
        )
    if x_test is not None:
        y_test = np.asarray(y_test).reshape(-1)
        if len(y_test) != len(x_test) or x_test.shape[1:] != x.shape[1:]:
            raise DatasetError(
                f"{NAME}: {file} test split x {x_test.shape} / y "
                f"{y_test.shape} does not match train x {x.shape}"
            )
        (y, y_test), classes = remap_labels(y, y_test)
        train_x, train_y, test_x, test_y = x, y, x_test, y_test
    else:
        (y,), classes = remap_labels(y)
        train, test = split_indices(y)
        train_x, train_y, test_x, test_y = x[train], y[train], x[test], y[test]
    train_x, test_x = standardise(train_x, test_x, per_feature=True)
    return make_splits(NAME, train_x, train_y, test_x, test_y, num_classes=len(classes))
