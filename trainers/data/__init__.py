"""Datasets as in-memory tensors plus a resumable batch sampler (pure torch/numpy, no ray).

Small datasets live entirely in memory so a trial's step is a tensor index, which keeps
zeroth-order estimators (many forward passes per step) cheap and fully deterministic.
"""

from .base import SPLIT_SEED, DatasetError, DataSplits
from .idx import read_idx
from .registry import DATASETS, dataset_options, load_dataset
from .sampler import BatchSampler

__all__ = [
    "DATASETS",
    "SPLIT_SEED",
    "BatchSampler",
    "DataSplits",
    "DatasetError",
    "dataset_options",
    "load_dataset",
    "read_idx",
]
