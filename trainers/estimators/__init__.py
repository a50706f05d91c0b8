"""Gradient estimators behind one interface, picked by name from ``ESTIMATORS``."""

from __future__ import annotations

import dataclasses
import functools
import typing
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

# The registry: one line per estimator.
ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (STE, NSPSA, FOGZO, MeZO, QuZO, QFO)
}


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    """Add an estimator defined elsewhere (a plugin, a test) to the registry; usable as a
    class decorator. Its config's options become Parquet columns like the built-ins'."""
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
    if cls.updates_in_place and "lr" not in {f.name for f in dataclasses.fields(cls.config_class)}:
        raise TypeError(f"{cls.__name__} updates in place: its config needs an lr field")
    ESTIMATORS[cls.name] = cls
    return cls


def estimator_class(name: str) -> type[Estimator]:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}") from None


def estimator_config(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Build the frozen config of estimator ``name``; unknown option names are rejected."""
    config_class = estimator_class(name).config_class
    options = dict(options or {})
    valid = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid)) or 'none'}"
        )
    return config_class(**options)


def option_fields() -> list[tuple[str, Any]]:
    """``(name, type)`` of every registered estimator's options, in registry order, each name
    once: the estimator-option columns of the trials table (``contract.schema``). ``lr`` is
    the trial's own column (for an in-place estimator it is its config's lr)."""
    return list(_option_fields(tuple(ESTIMATORS.values())))


@functools.cache
def _option_fields(classes: tuple[type[Estimator], ...]) -> tuple[tuple[str, Any], ...]:
    """``option_fields`` of these classes, computed once per registry state: the type hints
    cost ~0.8 ms, and the results ledger asks for every trial row it registers."""
    found: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls.config_class)
        for f in dataclasses.fields(cls.config_class):
            if f.name != "lr":
                found.setdefault(f.name, hints[f.name])
    return tuple(found.items())


def default_lr(name: str, optimizer: str = "sgd") -> float:
    """The lr a trial that sets none runs at: an in-place estimator's config default, or the
    estimator's ``default_lr`` per optimizer (SGD with momentum and Adam want steps ~20x apart)."""
    cls = estimator_class(name)
    if cls.updates_in_place:
        return {f.name: f.default for f in dataclasses.fields(cls.config_class)}["lr"]
    lrs = cls.config_class.default_lr
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
    name: str,
    options: Mapping[str, Any] | Any,
    cost: CostModel,
    seed: int,
    lr: float | None = None,
    device: torch.device | str = "cpu",
) -> Estimator:
    """The estimator ``name`` with its own generator seeded from the trial seed, on the
    model's ``device`` (torch draws noise for a CUDA tensor only from a CUDA generator).
    ``options`` is its built config or a mapping of options; ``lr`` goes into an in-place
    estimator's."""
    cls = estimator_class(name)
    if isinstance(options, cls.config_class):
        config = options
    else:
        extra = {"lr": lr} if cls.updates_in_place and lr is not None else {}
        config = estimator_config(name, {**dict(options or {}), **extra})
    return cls(config, cost, torch.Generator(device=device).manual_seed(seed))


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
    "option_fields",
    "register_estimator",
    "FOGZOConfig",
    "MeZOConfig",
    "NSPSAConfig",
    "QFOConfig",
    "QuZOConfig",
    "STEConfig",
]
