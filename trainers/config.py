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

from contract.errors import ConfigError  # noqa: F401 - raised here, defined torch-free
from trainers.quant import QuantSpec
from trainers.schedule import check_schedule

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "cuda", "auto")
EVAL_SPLITS = ("test", "validation")


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

    Built once, it also holds the typed parts the plain dict describes: ``estimator_config``
    (the registered estimator's config dataclass; an in-place one's carries ``lr``),
    ``quant`` (the quantizer's ``QuantSpec``) and ``diagnostics_config`` (the probe's
    settings with defaults, or None). The optimizer settings (``optimizer``, ``momentum``,
    ``weight_decay``) apply to estimators that fill gradients for an optimizer; for an
    in-place one (MeZO, QuZO, QFO) setting them is an error and they stay None.
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
    optimizer: str | None = None  # None: sgd (for in-place estimators: none at all)
    lr: float | None = None  # None: the estimator's own default for this optimizer (resolved below)
    lr_schedule: str = (
        "constant"  # constant | linear | cosine (decay to 0 at the end of the budget)
    )
    warmup: float = 0.0  # fraction of the budget with a linear warm-up from 0 to lr
    momentum: float | None = None  # None: 0.9 with sgd (ignored by adam)
    weight_decay: float | None = None  # None: 0.0
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
    # "validation": train on the training split less a held-out part and evaluate on that part
    # (a tuning protocol scores configurations there, never on the test split)
    eval_split: str = "test"
    validation_fraction: float = 0.2

    # Built in __post_init__ from the fields above (not constructor arguments).
    estimator_config: Any = field(init=False, repr=False, compare=False, default=None)
    quant: QuantSpec = field(init=False, repr=False, compare=False, default=None)
    diagnostics_config: dict[str, Any] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        self._resolve_optimizer()
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
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
        if self.eval_split not in EVAL_SPLITS:
            raise ConfigError(
                f"eval_split {self.eval_split!r} is not one of {', '.join(EVAL_SPLITS)}"
            )
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if self.lr is None:
            object.__setattr__(self, "lr", self._default_lr())
        if self.lr < 0:
            raise ConfigError(f"lr must be >= 0, got {self.lr}")
        try:
            check_schedule(self.lr_schedule, self.warmup)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        object.__setattr__(self, "quant", self._build_quant_spec())
        try:
            from trainers.diagnostics import diagnostics_settings  # torch: imported when built

            object.__setattr__(self, "diagnostics_config", diagnostics_settings(self.diagnostics))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        object.__setattr__(self, "estimator_config", self._build_estimator_config())
        self._check_component_options()

    def _in_place(self) -> bool:
        from trainers.estimators import ESTIMATORS

        cls = ESTIMATORS.get(self.estimator)
        return bool(cls is not None and cls.updates_in_place)

    def _resolve_optimizer(self) -> None:
        """Optimizer defaults for estimators that use one; none for in-place estimators,
        where a value given would be recorded without taking effect."""
        names = ("optimizer", "momentum", "weight_decay")
        if self._in_place():
            given = [n for n in names if getattr(self, n) is not None]
            if given:
                raise ConfigError(
                    f"{', '.join(given)}: {self.estimator} updates the weights in place and "
                    f"uses no optimizer; remove {'it' if len(given) == 1 else 'them'}"
                )
            return
        for name, default in zip(names, ("sgd", 0.9, 0.0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    def _build_estimator_config(self) -> Any:
        """The estimator's typed config; an in-place estimator's carries the trial's lr."""
        from trainers.estimators import estimator_config

        options = dict(self.estimator_options)
        if self._in_place():
            options["lr"] = self.lr
        try:
            return estimator_config(self.estimator, options)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None

    def _default_lr(self) -> float:
        """No shared lr fits every estimator (n-SPSA diverged at STE's), so each has its own."""
        from trainers.estimators import default_lr  # torch: imported only when needed

        try:
            return default_lr(self.estimator, self.optimizer or "sgd")
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
        return self.quant

    def _build_quant_spec(self) -> QuantSpec:
        valid = {f.name for f in dataclasses.fields(QuantSpec)} - {"kind", "bits"}
        unknown = sorted(set(self.quant_options) - valid)
        if unknown:
            raise ConfigError(
                f"quant_options: unknown key(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        bits = 8 if self.quantizer.startswith("fp8") else self.bits
        try:
            return QuantSpec(kind=self.quantizer, bits=bits, **self.quant_options)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None

    def diagnostics_settings(self) -> dict[str, Any] | None:
        """The gradient-quality probe's settings with defaults, or None when it is off."""
        return self.diagnostics_config

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialConfig:
        """Build from a plain dict, rejecting unknown keys with the list of valid ones."""
        valid = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(
                f"unknown trial config key(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
            for f in dataclasses.fields(self)
            if f.init
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)
