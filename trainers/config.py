"""The configuration of one trial: a frozen, validated dataclass built from a plain dict.

The sweep service expands its grid into these dicts; ``TrialConfig.from_dict`` is the one
place a trial's settings are checked, so deep code never reads ``cfg["lr"]``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.quant import QuantSpec
from trainers.schedule import check_schedule

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "cuda", "auto")


class ConfigError(ValueError):
    """A user mistake in a trial configuration (one line, names the field)."""


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines one training run.

    Budget: ``steps`` and/or ``flops`` (cumulative training FLOPs); training stops at the
    first one reached, so "same compute" comparisons set ``flops`` for every estimator.
    ``init_from`` loads a float checkpoint before quantization (fine-tuning);
    ``save_model_to`` writes the trained model's state at the end (a pre-training stage).
    ``lr`` left None becomes the estimator's default for the optimizer, so after construction
    it is always the value the trial runs with (and the value its results record).
    ``lr_schedule`` (constant, linear, cosine) and ``warmup`` (a fraction of the budget) shape
    the lr over the same budget progress as FOGZO's beta (``trainers.schedule``).
    """

    estimator: str = "ste"
    estimator_options: Mapping[str, Any] = field(default_factory=dict)
    quantizer: str = "int"
    bits: int = 2
    quant_options: Mapping[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    optimizer: str = "sgd"
    lr: float | None = None  # None: the estimator's own default for this optimizer (resolved below)
    lr_schedule: str = (
        "constant"  # constant | linear | cosine (decay to 0 at the end of the budget)
    )
    warmup: float = 0.0  # fraction of the budget with a linear warm-up from 0 to lr
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps: int | None = 300
    flops: float | None = None
    num_evals: int = 10
    eval_batch_size: int = 2048
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    init_from: str | None = None
    save_model_to: str | None = None
    diagnostics: Mapping[str, Any] | None = None  # gradient-quality probe (trainers.diagnostics)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.steps is None and self.flops is None:
            raise ConfigError(
                "budget: set steps or flops (or both; training stops at the first reached)"
            )
        for name in ("steps", "flops"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        for name in ("batch_size", "num_evals", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr is None:
            object.__setattr__(self, "lr", self._default_lr())
        if self.lr < 0:
            raise ConfigError(f"lr must be >= 0, got {self.lr}")
        try:
            check_schedule(self.lr_schedule, self.warmup)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        try:
            self.quant_spec()
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None
        try:
            self.diagnostics_settings()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self._check_component_options()

    def _default_lr(self) -> float:
        """No shared lr fits every estimator (n-SPSA diverged at STE's), so each has its own."""
        from trainers.estimators import default_lr  # torch: imported only when needed

        try:
            return default_lr(self.estimator, self.optimizer)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _check_component_options(self) -> None:
        """Unknown model / dataset option names fail here, when the spec is read, not inside
        a trial hours later."""
        from trainers.data.registry import DATASETS, dataset_options
        from trainers.models.registry import MODELS, model_options
        from trainers.options import check_option_names

        for kind, name, options, registry, valid_for in (
            ("model", self.model, self.model_options, MODELS, model_options),
            ("dataset", self.dataset, self.dataset_options, DATASETS, dataset_options),
        ):
            try:
                check_option_names(kind, name, options, registry, valid_for)
            except ValueError as err:
                raise ConfigError(
                    f"{kind}_options: {err}" if name in registry else str(err)
                ) from None

    def quant_spec(self) -> QuantSpec:
        valid = {f.name for f in dataclasses.fields(QuantSpec)} - {"kind", "bits"}
        unknown = sorted(set(self.quant_options) - valid)
        if unknown:
            raise ConfigError(
                f"quant_options: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        bits = 8 if self.quantizer.startswith("fp8") else self.bits
        return QuantSpec(kind=self.quantizer, bits=bits, **self.quant_options)

    def diagnostics_settings(self) -> dict[str, Any] | None:
        """The gradient-quality probe's settings with defaults, or None when it is off."""
        from trainers.diagnostics import diagnostics_settings  # torch: imported only when asked

        return diagnostics_settings(self.diagnostics)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialConfig:
        """Build from a plain dict, rejecting unknown keys with the list of valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(
                f"unknown trial config key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (dict(v) if isinstance(v, Mapping) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)
