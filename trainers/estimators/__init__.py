"""Gradient estimators behind one interface, picked by name from ``ESTIMATORS``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from trainers.estimators.base import CostModel, Estimator, StepResult
from trainers.estimators.fogzo import FOGZO, FOGZOConfig
from trainers.estimators.mezo import MeZO, MeZOConfig
from trainers.estimators.nspsa import NSPSA, NSPSAConfig
from trainers.estimators.qfo import QFO, QFOConfig
from trainers.estimators.quzo import QuZO, QuZOConfig
from trainers.estimators.ste import STE, STEConfig

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (STE, NSPSA, FOGZO, MeZO, QuZO, QFO)
}


def estimator_class(name: str) -> type[Estimator]:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}") from None


def estimator_config(name: str, options: dict[str, Any] | None = None) -> Any:
    """Build the frozen config of estimator ``name``; unknown option names are rejected."""
    config_class = estimator_class(name).config_class
    options = dict(options or {})
    valid = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid)) or 'none'}"
        )
    return config_class(**options)


def default_lr(name: str, optimizer: str = "sgd") -> float:
    """The lr a trial that sets none runs at: the estimator's ``default_lr``, one per optimizer
    where the estimator uses one (SGD with momentum and Adam want steps ~20x apart)."""
    lrs = estimator_class(name).config_class.default_lr
    if isinstance(lrs, Mapping):
        if optimizer not in lrs:
            raise ValueError(
                f"{name}: no default lr for optimizer {optimizer!r}; valid: {', '.join(lrs)}"
            )
        return lrs[optimizer]
    return lrs


def default_eps(name: str) -> float | None:
    """The estimator's default perturbation ``eps`` (None for STE, which has none)."""
    fields = {f.name: f for f in dataclasses.fields(estimator_class(name).config_class)}
    return fields["eps"].default if "eps" in fields else None


def build_estimator(
    name: str, options: dict[str, Any] | None, cost: CostModel, seed: int, lr: float
) -> Estimator:
    """The estimator ``name`` with its own generator seeded from the trial seed."""
    generator = torch.Generator().manual_seed(seed)
    return estimator_class(name)(estimator_config(name, options), cost, generator, lr)


__all__ = [
    "ESTIMATORS",
    "CostModel",
    "Estimator",
    "StepResult",
    "build_estimator",
    "default_eps",
    "default_lr",
    "estimator_class",
    "estimator_config",
    "FOGZOConfig",
    "MeZOConfig",
    "NSPSAConfig",
    "QFOConfig",
    "QuZOConfig",
    "STEConfig",
]
