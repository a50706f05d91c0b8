"""The sweep spec's models: what one spec file may say, each field checked where it is declared.

A spec names the grid axes (estimators x bits x quantizers x models x datasets x seeds),
shared trial settings, per-estimator hyper-parameters (a list is one more grid axis),
the budget per trial, the search mode (grid, or Optuna over ranges) and the resources.
Expanding it into trials is ``service.plan``'s job; reading it, ``service.spec_loading``'s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.protocol import TRIAL_KEYS
from trainers.config import TrialConfig
from trainers.data import DATASETS
from trainers.estimators import ESTIMATORS
from trainers.models import MODELS
from trainers.quant import QUANT_KINDS

TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig) if f.init}
GRID_OWNED = {
    "estimator",
    "bits",
    "quantizer",
    "model",
    "dataset",
    "seed",
    "steps",
    "flops",
    "estimator_options",
    "init_from",
    "save_model_to",
}
# Per-estimator keys that are trial settings rather than estimator options (lr, optimizer,
# num_evals, ...); steps/flops override the budget (the FOGZO paper runs n-SPSA for 300
# steps and FOGZO until it matches that loss).
PER_ESTIMATOR_TRIAL_KEYS = (TRIAL_FIELDS - GRID_OWNED) | {"steps", "flops"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_REGISTRIES = {
    "estimators": (ESTIMATORS, "estimator"),
    "quantizers": (QUANT_KINDS, "quantizer"),
    "models": (MODELS, "model"),
    "datasets": (DATASETS, "dataset"),
}


class Grid(_Strict):
    estimators: list[str]
    bits: list[int] = [2]
    quantizers: list[str] = ["int"]
    models: list[str] = ["mlp"]
    datasets: list[str] = ["digits"]
    seeds: list[int] = [0]

    @field_validator("*")
    @classmethod
    def _non_empty_unique(cls, values: list, info) -> list:
        if not values:
            raise ValueError("must list at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"has duplicates: {values}")
        return values

    @field_validator("estimators", "quantizers", "models", "datasets")
    @classmethod
    def _registered(cls, values: list[str], info) -> list[str]:
        valid, kind = _REGISTRIES[info.field_name]
        return _check_names(values, valid, kind)

    @field_validator("bits")
    @classmethod
    def _bit_range(cls, values: list[int]) -> list[int]:
        bad = [b for b in values if not 1 <= b <= 8]
        if bad:
            raise ValueError(f"bits must be in 1..8, got {bad}")
        return values


def _check_model_section(model: str, section: dict[str, Any], grid: Grid) -> None:
    """``models.<name>``: a grid model; its ``datasets`` / ``bits`` checked as the grid's
    axes, every other key a per-trial setting (as in an estimator's section)."""
    where = f"models.{model}"
    if model not in grid.models:
        raise ValueError(f"{where}: not in grid.models {grid.models}")
    unknown = sorted(set(section) - PER_ESTIMATOR_TRIAL_KEYS - {"datasets", "bits"})
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r}; valid: datasets, bits, "
            f"{', '.join(sorted(PER_ESTIMATOR_TRIAL_KEYS))}"
        )
    axes = {k: section[k] for k in ("datasets", "bits") if k in section}
    try:
        Grid.model_validate({"estimators": grid.estimators, **axes})
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(
            f"{where}.{first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}"
        ) from None


def _check_names(values: list[str], valid, kind: str) -> list[str]:
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown[0]!r}; valid: {', '.join(valid)}")
    return values


class Budget(_Strict):
    steps: int | None = Field(default=None, gt=0)
    flops: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_needed(self) -> Budget:
        if self.steps is None and self.flops is None:
            raise ValueError("set steps or flops (or both: a trial stops at the first reached)")
        return self


class Range(_Strict):
    """An Optuna search range: ``low``/``high`` (``log`` for a log scale) or ``choices``."""

    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Range:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty choices list or low/high")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"needs low < high (got low={self.low}, high={self.high})")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Protocol(_Strict):
    """The tuning protocol (``service.protocol``, ``docs/claims.md``): the same number of
    tuning trials for every arm, scored on a validation split, the best re-run with fresh
    seeds on the test split."""

    tuning_trials: int = Field(default=8, ge=1, description="tuning trials per arm")
    seeds: list[int] = Field(
        default=[100, 101, 102, 103, 104],
        min_length=5,
        description="fresh seeds the best configuration of each arm is re-run with (>= 5)",
    )
    tuning_seed: int = Field(default=0, description="the seed of every tuning trial")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    metric: Literal["eval_loss", "eval_metric", "train_loss"] = "eval_loss"
    direction: Literal["min", "max"] = "min"
    sampler_seed: int = 0
    space: dict[str, dict[str, Range]] = Field(
        default={},
        description="per estimator: ranges that replace its default dimensions (lr, "
        "optimizer, eps) or add one (any trial setting or estimator option)",
    )
    same_lr: bool = Field(
        default=True, description="also run the grid at its one shared lr (the report compares)"
    )

    @model_validator(mode="after")
    def _fresh_seeds(self) -> Protocol:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {self.seeds} repeats a seed")
        if self.tuning_seed in self.seeds:
            raise ValueError(
                f"seeds: the re-runs need fresh seeds, but {self.tuning_seed} is the tuning seed"
            )
        return self


class Search(_Strict):
    mode: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(default=1, ge=1)
    metric: Literal["eval_loss", "eval_metric", "train_loss"] = "eval_loss"
    direction: Literal["min", "max"] = "min"
    space: dict[str, Range] = {}

    @model_validator(mode="after")
    def _space_needs_optuna(self) -> Search:
        if self.space and self.mode != "optuna":
            raise ValueError("space is only used with mode: optuna")
        return self


class EarlyStopping(_Strict):
    """ASHA on the search metric, measured in evaluations."""

    grace_period: int = Field(default=2, ge=1)
    reduction_factor: float = Field(default=3, gt=1, allow_inf_nan=False)


class Resources(_Strict):
    cpus: float = Field(default=1, gt=0, allow_inf_nan=False)
    gpus: float = Field(default=0, ge=0, allow_inf_nan=False)


_SECRET_KEY = re.compile(r"key|token|password|passwd|secret|credential", re.IGNORECASE)


class _Tracker(_Strict):
    """One experiment tracker's settings: names only, never a secret (the spec is stored with
    the results and travels in a Ray job's environment); keys come from the environment."""

    _secret_env: typing.ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        for key in data if isinstance(data, dict) else ():
            if isinstance(key, str) and _SECRET_KEY.search(key):
                raise ValueError(
                    f"{key}: secrets do not belong in the spec (it is stored with the results); "
                    f"set {cls._secret_env} in the environment instead"
                )
        return data

    @staticmethod
    def _name(value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


class MlflowTracking(_Tracker):
    """``tracking.mlflow``: MLflow's ``MLflowLoggerCallback`` (``service.tracking``)."""

    _secret_env = "MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
    tracking_uri: str | None = Field(
        default=None,
        description="file:///abs/mlruns, http(s)://server, databricks, ...; default: "
        "MLFLOW_TRACKING_URI, else MLflow's own default",
    )
    experiment: str | None = Field(default=None, description="default: the sweep's name")

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        cls._name(uri)
        if uri is None:
            return None
        if urllib.parse.urlsplit(uri).password is not None:
            raise ValueError(
                "holds a password: set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                "(or MLFLOW_TRACKING_TOKEN) in the environment instead"
            )
        if ":" not in uri:  # a bare local path: the driver's working directory is not the user's
            return Path(os.path.abspath(os.path.expanduser(uri))).as_uri()
        return uri

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str | None) -> str | None:
        return cls._name(value)


class WandbTracking(_Tracker):
    """``tracking.wandb``: Weights & Biases' ``WandbLoggerCallback`` (``service.tracking``)."""

    _secret_env = "WANDB_API_KEY"
    project: str
    mode: Literal["online", "offline"] = "online"
    entity: str | None = None

    @field_validator("project", "entity")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return cls._name(value)


TRACKER_EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # tracker -> package (and extra)


class Tracking(_Strict):
    """Experiment trackers fed by Ray Tune's logger callbacks; the Parquet stays the record."""

    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None

    def names(self) -> list[str]:
        return [name for name in TRACKER_EXTRAS if getattr(self, name) is not None]


def missing_tracker_packages(spec: SweepSpec) -> list[str]:
    """One line per tracker the spec names whose package is not installed here."""
    names = spec.tracking.names() if spec.tracking is not None else []
    return [
        f"tracking.{name}: the {TRACKER_EXTRAS[name]} package is not installed: "
        f"pip install -e '.[{name}]'"
        for name in names
        if importlib.util.find_spec(TRACKER_EXTRAS[name]) is None
    ]


class SweepSpec(_Strict):
    """The whole sweep. Besides the grid and budget, two per-trial guards (top level, they
    apply to every trial; enforced in the trainable by ``service.limits``):

    ``time_limit_s``: wall-clock seconds one attempt may run, from the trainable's start
    (data loading and checkpoint restore included). ``memory_limit_mb``: resident memory of
    the trial's Ray worker process (RSS, read from ``/proc``; it includes that process's
    Python, torch and Ray, roughly 300 MB on CPU, and host memory only, not GPU memory).
    A watchdog thread samples both every ``service.limits.INTERVAL_S`` and, past a limit,
    raises in the training thread at its next Python instruction (every evaluation also
    checks), so the attempt fails with ``time limit of ... exceeded`` / ``memory limit of ...
    exceeded``: recorded as a failure and retried up to ``retries`` times, from the last
    checkpoint. Not a hard cap: memory that grows within one sampling interval, or time
    spent inside one long native call, is only seen after it; Ray's memory monitor and the
    OS remain the last line against a node running out of memory.
    """

    name: str
    results: str = "results"
    grid: Grid
    trial: dict[str, Any] = {}
    estimators: dict[str, dict[str, Any]] = {}
    budget: Budget
    search: Search = Search()
    early_stopping: EarlyStopping | None = None
    resources: Resources = Resources()
    max_concurrent: int | None = Field(default=None, ge=1)
    retries: int = Field(default=1, ge=0)
    checkpoint_every: int = Field(
        default=1, ge=0, description="checkpoint every k evaluations (0 = never)"
    )
    checkpoint_min_s: float = Field(
        default=10.0,
        ge=0,
        allow_inf_nan=False,
        description="no checkpoint sooner than this many seconds after a trial's (re)start or its "
        "previous checkpoint: a trial shorter than it restarts from scratch after a failure, "
        "which costs less than saving it",
    )
    time_limit_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="wall-clock seconds one attempt of a trial may run (None = no limit); over it "
        "the attempt fails with 'time limit of ... exceeded' (retried like any failure)",
    )
    memory_limit_mb: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="resident memory (MB) a trial's worker process may reach (None = no limit); "
        "over it the attempt fails with 'memory limit of ... exceeded'",
    )
    pretrain: dict[str, Any] | None = Field(
        default=None,
        description="optional float pre-training stage: trial settings (with steps or flops); "
        "the grid trials of its `estimators` (default: all) start from its checkpoint",
    )
    models: dict[str, dict[str, Any]] = Field(
        default={},
        description="per-model settings: `datasets` / `bits` (lists: that model's own axes, "
        "e.g. llama on text only) and trial settings; estimators' sections override them",
    )
    protocol: Protocol | None = Field(
        default=None,
        description="tuning protocol: every arm tuned with the same budget on a validation "
        "split, its best re-run with fresh seeds (docs/claims.md)",
    )
    tracking: Tracking | None = Field(
        default=None,
        description="experiment trackers: {mlflow: {tracking_uri, experiment}} and/or "
        "{wandb: {project, mode, entity}}; secrets only from the environment",
    )

    @field_validator("pretrain")
    @classmethod
    def _pretrain_keys(cls, values: dict[str, Any] | None) -> dict[str, Any] | None:
        if values is None:
            return None
        unknown = sorted(set(values) - TRIAL_FIELDS - {"estimators"})
        if unknown:
            raise ValueError(
                f"unknown key {unknown[0]!r}; valid: estimators, {', '.join(sorted(TRIAL_FIELDS))}"
            )
        chosen = values.get("estimators")
        if chosen is not None and (
            not isinstance(chosen, list)
            or not chosen
            or not all(isinstance(e, str) for e in chosen)
        ):
            raise ValueError("estimators: expected a non-empty list of estimator names")
        if values.get("steps") is None and values.get("flops") is None:
            raise ValueError("set steps or flops for the pre-training stage")
        fixed = sorted(set(values) & {"model", "init_from", "save_model_to"})
        if fixed:
            raise ValueError(
                f"{fixed[0]!r} cannot be set here: one pre-training runs per grid model"
            )
        return values

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
            raise ValueError("use letters, digits, '_', '-' or '.' (it names the results folder)")
        return name

    @field_validator("trial")
    @classmethod
    def _trial_keys(cls, values: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(set(values) & GRID_OWNED)
        if owned:
            raise ValueError(f"{owned[0]!r} is set by grid/budget/estimators, not trial")
        unknown = sorted(set(values) - TRIAL_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown key {unknown[0]!r}; valid: {', '.join(sorted(TRIAL_FIELDS - GRID_OWNED))}"
            )
        return values

    @model_validator(mode="after")
    def _estimator_sections(self) -> SweepSpec:
        for name in self.estimators:
            if name not in ESTIMATORS:
                raise ValueError(
                    f"estimators.{name}: unknown estimator; valid: {', '.join(ESTIMATORS)}"
                )
            if name not in self.grid.estimators:
                raise ValueError(
                    f"estimators.{name}: not in grid.estimators {self.grid.estimators}"
                )
        for name in (self.pretrain or {}).get("estimators") or []:
            if name not in self.grid.estimators:
                raise ValueError(
                    f"pretrain.estimators: {name!r} is not in grid.estimators "
                    f"{self.grid.estimators}"
                )
        for name, section in self.models.items():
            _check_model_section(name, section, self.grid)
        if self.pretrain is not None and self.search.mode != "grid":
            raise ValueError(
                "pretrain: needs search.mode grid (the stage runs first in the sweep's one Tune "
                "grid, its fine-tuning trials waiting for its model)"
            )
        if self.protocol is not None:
            if self.search.mode != "grid":
                raise ValueError("protocol: needs search.mode grid (it does its own tuning)")
            if self.early_stopping is not None:
                raise ValueError(
                    "protocol: not with early_stopping (a stopped tuning trial would be scored "
                    "before its budget)"
                )
            for name, section in self.protocol.space.items():
                if name not in self.grid.estimators:
                    raise ValueError(
                        f"protocol.space.{name}: not in grid.estimators {self.grid.estimators}"
                    )
                for key in section:
                    fields = {f.name for f in dataclasses.fields(ESTIMATORS[name].config_class)}
                    if key not in fields | set(TRIAL_KEYS):
                        raise ValueError(
                            f"protocol.space.{name}.{key}: not a tuned trial setting "
                            f"({', '.join(TRIAL_KEYS)}) nor an option of {name}"
                        )
        return self
