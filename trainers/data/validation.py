"""A validation split carved from the training data, for tuning without touching the test set.

A tuning protocol (``docs/claims.md``) scores each configuration on held-out training
examples; only the re-runs of the chosen configuration are measured on the test split. The
carve is deterministic and independent of the trial seed, so every tuning trial of a sweep
is scored on the very same examples. Feature standardisation stays as the loader did it
(statistics of the whole training split, labels never used).
"""

from __future__ import annotations

import dataclasses

import torch

from trainers.data.base import DatasetError, DataSplits

#: Seed of the validation carve: fixed, so all tuning trials share one validation set.
VALIDATION_SEED = 20_261_207


def hold_out_validation(data: DataSplits, fraction: float) -> DataSplits:
    """``data`` whose test split is ``fraction`` of its training examples (at least one) and
    whose training split is the rest; the original test split is left out entirely."""
    n = len(data.train_x)
    held = max(1, round(n * fraction))
    if held >= n:
        raise DatasetError(
            f"{data.name}: validation_fraction {fraction} leaves no training example of {n}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    val, train = order[:held], order[held:]
    return dataclasses.replace(
        data,
        train_x=data.train_x[train],
        train_y=data.train_y[train],
        test_x=data.train_x[val],
        test_y=data.train_y[val],
    )
