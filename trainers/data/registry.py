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
from .lm_corpus import load_lm
from .mnist import load_fashion_mnist, load_mnist
from .mnist5k import load_mnist5k
from .prompt_cls import load_prompt_cls
from .synthetic import load_teacher_student
from .table import load_table
from .text import load_text

#: Every loader takes keyword-only `data_dir` plus its own keyword options with defaults.
DATASETS: dict[str, Callable[..., DataSplits]] = {
    "digits": load_digits_splits,
    "teacher_student": load_teacher_student,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "mnist5k": load_mnist5k,
    "table": load_table,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagefolder": load_imagefolder,
    "text": load_text,
    "prompt_cls": load_prompt_cls,
    "lm": load_lm,
}

#: Loader keywords filled in by ``load_dataset`` itself, never by the user.
_INTERNAL = ("data_dir", "seed")


def dataset_options(name: str) -> list[str]:
    """Option names a dataset accepts (its loader's keywords other than data_dir / seed)."""
    params = inspect.signature(DATASETS[name]).parameters
    return [p for p in params if p not in _INTERNAL]


def load_dataset(
    name: str, *, data_dir: str | None = None, seed: int = 0, **options: Any
) -> DataSplits:
    """Load a dataset by registry name into in-memory train/test tensors.

    `seed` is the trial seed, passed on only to loaders that declare a ``seed`` keyword:
    ``prompt_cls`` draws its k-shot train sample with it, as MeZO does. Every other
    dataset ignores it (splits, subsamples and synthetic data use fixed seeds), and test
    sets never depend on it, so every trial of a sweep is scored on identical data.
    """
    check_option_names("dataset", name, options, DATASETS, dataset_options, DatasetError)
    loader = DATASETS[name]
    if "seed" in inspect.signature(loader).parameters:
        options["seed"] = seed
    return loader(data_dir=data_dir, **options)
