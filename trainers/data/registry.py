"""Name -> loader registry, so sweep configs pick datasets by a string."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..options import check_option_names
from .base import DatasetError, DataSplits
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits_splits
from .imagefolder import load_imagefolder
from .mnist import load_fashion_mnist, load_mnist
from .synthetic import load_teacher_student
from .table import load_table
from .text import load_text

#: Every loader takes keyword-only `data_dir` plus its own keyword options with defaults.
DATASETS: dict[str, Callable[..., DataSplits]] = {
    "digits": load_digits_splits,
    "teacher_student": load_teacher_student,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "table": load_table,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagefolder": load_imagefolder,
    "text": load_text,
}


def dataset_options(name: str) -> list[str]:
    """Option names a dataset accepts (its loader's keywords other than data_dir)."""
    params = inspect.signature(DATASETS[name]).parameters
    return [p for p in params if p != "data_dir"]


def load_dataset(
    name: str, *, data_dir: str | None = None, seed: int = 0, **options: Any
) -> DataSplits:
    """Load a dataset by registry name into in-memory train/test tensors.

    `seed` is the trial seed. It is accepted so callers can pass their whole trial config,
    but no built-in dataset depends on it: splits, subsamples and synthetic data use fixed
    seeds so every trial of a sweep trains and is scored on identical data.
    """
    del seed  # see docstring: data must not vary between trials
    check_option_names("dataset", name, options, DATASETS, dataset_options, DatasetError)
    return DATASETS[name](data_dir=data_dir, **options)
