"""The sweep spec: one YAML file, validated once at the boundary, expanded into trials.

A spec names the grid axes (estimators x bits x quantizers x models x datasets x seeds),
shared trial settings, per-estimator hyper-parameters (a list is one more grid axis),
the budget per trial, the search mode (grid, or Optuna over ranges) and the resources.
Every mistake becomes ``SpecError`` with one line naming the field, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import itertools
import json
import os
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from service.errors import SpecError
from service.protocol import (
    PROTOCOL_KEY,
    TRIAL_KEYS,
    TUNED,
    TUNING,
    apply_settings,
    group_id,
    sample_settings,
    split_protocol,
)
from service.rows import config_columns
from trainers.config import ConfigError, TrialConfig
from trainers.data import DATASETS
from trainers.estimators import ESTIMATORS, default_eps, default_lr
from trainers.inputs import input_errors
from trainers.models import MODELS
from trainers.quant import QUANT_KINDS

STAGE_PREFIX = "stage:"  # "stage:<trial id>" = that trial's checkpoint under <sweep>/stages/


TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig) if f.init}
_GRID_OWNED = {
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
_PER_ESTIMATOR_TRIAL_KEYS = (TRIAL_FIELDS - _GRID_OWNED) | {"steps", "flops"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_NEEDS_A_GRID = ("quzo", "qfo")  # estimators whose weights live on the quantizer's grid

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
    unknown = sorted(set(section) - _PER_ESTIMATOR_TRIAL_KEYS - {"datasets", "bits"})
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r}; valid: datasets, bits, "
            f"{', '.join(sorted(_PER_ESTIMATOR_TRIAL_KEYS))}"
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
        owned = sorted(set(values) & _GRID_OWNED)
        if owned:
            raise ValueError(f"{owned[0]!r} is set by grid/budget/estimators, not trial")
        unknown = sorted(set(values) - TRIAL_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown key {unknown[0]!r}; "
                f"valid: {', '.join(sorted(TRIAL_FIELDS - _GRID_OWNED))}"
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

    def _model_axis(self, model: str, axis: str) -> list:
        """A model's own ``datasets`` / ``bits`` (its ``models`` section), else the grid's."""
        return self.models.get(model, {}).get(axis, getattr(self.grid, axis))

    def _model_settings(self, model: str) -> dict[str, Any]:
        return {
            k: v for k, v in self.models.get(model, {}).items() if k not in ("datasets", "bits")
        }

    def _pretrained_estimators(self) -> list[str]:
        return (self.pretrain or {}).get("estimators") or self.grid.estimators

    # --- expansion ---------------------------------------------------------------------------

    def _expand_pretrain(self) -> list[PlannedTrial]:
        """One float pre-training trial per model of the grid (empty without ``pretrain``).

        Defaults: STE (plain backprop on the float model), no quantization, the grid's first
        dataset and seed 0; anything in ``pretrain`` overrides them and ``trial``.
        """
        if self.pretrain is None:
            return []
        planned = []
        stage = {k: v for k, v in self.pretrain.items() if k != "estimators"}
        for model in self.grid.models:
            shared = {
                k: v for k, v in self._model_settings(model).items() if k not in ("steps", "flops")
            }
            config = {
                **self.trial,
                **shared,
                "estimator": "ste",
                "quantizer": "none",
                "bits": 8,
                "model": model,
                "dataset": self._model_axis(model, "datasets")[0],
                "seed": 0,
                "steps": None,
                "flops": None,
                "estimator_options": {},
                **stage,
            }
            _fill_defaults(config)
            tid = "pretrain-" + trial_id(config)
            config["save_model_to"] = STAGE_PREFIX + tid
            planned.append(PlannedTrial(tid, config))
        return [_checked(trial, "pretrain") for trial in planned]

    def _expand(self, pretrain: list[PlannedTrial]) -> tuple[list[PlannedTrial], list[str]]:
        """Every trial of the grid (or, for Optuna, the base configs it samples around), and
        the grid cells left out with their reasons."""
        planned, skipped = [], []
        pretrained = dict(zip(self.grid.models, (t.trial_id for t in pretrain)))
        g = self.grid
        for est, quantizer, bits, model, dataset, seed in (
            (e, q, b, m, d, s)
            for e, q, m in itertools.product(g.estimators, g.quantizers, g.models)
            for b in self._model_axis(m, "bits")
            for d in self._model_axis(m, "datasets")
            for s in g.seeds
        ):
            if est in _NEEDS_A_GRID and quantizer == "none":
                skipped.append(
                    f"{est} x quantizer none ({est} keeps its weights on a quantized grid)"
                )
                continue
            if quantizer.startswith("fp8") and bits != self._model_axis(model, "bits")[0]:
                continue  # FP8 is 8-bit whatever the bits axis says: one trial, not one per bit
            for hp in _expand_lists(self.estimators.get(est, {})):
                config = {
                    **self.trial,
                    "estimator": est,
                    "quantizer": quantizer,
                    "bits": 8 if quantizer.startswith("fp8") else bits,
                    "model": model,
                    "dataset": dataset,
                    "seed": seed,
                    "steps": self.budget.steps,
                    "flops": self.budget.flops,
                    **self._model_settings(model),
                }
                options = {k: v for k, v in hp.items() if k not in _PER_ESTIMATOR_TRIAL_KEYS}
                config.update({k: v for k, v in hp.items() if k in _PER_ESTIMATOR_TRIAL_KEYS})
                config["estimator_options"] = options
                if (
                    self.pretrain is not None and est in self._pretrained_estimators()
                ):  # fine-tune from it
                    config["init_from"] = STAGE_PREFIX + pretrained[model]
                _fill_defaults(config)
                planned.append(PlannedTrial(trial_id(config), config))
        if not planned:
            raise SpecError(f"grid: no valid trial ({'; '.join(sorted(set(skipped)))})")
        checked = [_checked(t, f"estimators.{t.config['estimator']}") for t in planned]
        return checked, sorted(set(skipped))


@dataclasses.dataclass(frozen=True)
class PlannedTrial:
    """One trial of the plan: its plain config (what travels to the trial's worker), and, built
    and validated once when the spec is read, its typed ``TrialConfig`` (estimator, quantizer
    and diagnostics parts typed) and its trials-table columns."""

    trial_id: str
    config: dict[str, Any]  # a plain trial config (``trainers.TrialConfig.from_dict`` input)
    settings: TrialConfig | None = dataclasses.field(default=None, compare=False, repr=False)
    columns: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)


def _checked(trial: PlannedTrial, where: str) -> PlannedTrial:
    """``trial`` validated, with its built ``TrialConfig`` and row columns."""
    built = _check_trial(trial.config, where)
    return PlannedTrial(trial.trial_id, trial.config, built, config_columns(trial.config, built))


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A validated spec expanded once: what ``load_spec`` returns and everything downstream
    (runner, tuner, results ledger, progress, status) takes, so no one expands it again.

    ``trials`` are the main sweep's (in Optuna mode the base configs it samples around),
    ``pretrain`` the float pre-training stage's (empty without one), ``skipped`` the grid
    cells left out, each with its reason.
    """

    spec: SweepSpec
    trials: tuple[PlannedTrial, ...]
    pretrain: tuple[PlannedTrial, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def planned(self) -> dict[str, dict[str, Any]]:
        """Every trial the sweep may run, by id, pre-training stage included (Tune trials
        are resolved against it)."""
        return {t.trial_id: t.config for t in (*self.pretrain, *self.trials)}

    @functools.cached_property
    def columns(self) -> dict[str, dict[str, Any]]:
        """Every planned trial's trials-table columns, by id (built once with the plan)."""
        return {t.trial_id: t.columns for t in (*self.pretrain, *self.trials) if t.columns}

    @property
    def total(self) -> int:
        """Trials the sweep will record: Optuna's samples stand for its base configs."""
        optuna = self.spec.search.mode == "optuna"
        main = self.spec.search.num_samples if optuna else len(self.trials)
        return main + len(self.pretrain)

    def summary(self) -> dict[str, Any]:
        """What ``qsweep status`` needs without expanding the spec again (``PLAN_FILE``)."""
        return {
            "name": self.name,
            "total": self.total,
            "trials": [t.trial_id for t in self.trials],
            "pretrain": [t.trial_id for t in self.pretrain],
            "skipped": list(self.skipped),
        }


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Expand and check every trial of ``spec`` (each is validated here, once)."""
    pretrain = spec._expand_pretrain()
    trials, skipped = spec._expand(pretrain)
    if spec.protocol is not None:
        trials = _with_protocol(spec.protocol, trials)
    return SweepPlan(spec, tuple(trials), tuple(pretrain), tuple(skipped))


def _with_protocol(protocol: Protocol, grid: list[PlannedTrial]) -> list[PlannedTrial]:
    """The grid (when ``same_lr``), then every arm's tuning trials, then its re-runs (last:
    they wait for their arm's tuning trials, ``service.protocol``)."""
    tuning, tuned = [], []
    for group, base in protocol_arms(protocol, [t.config for t in grid]).items():
        settings = sample_settings(
            base["estimator"],
            base.get("optimizer"),
            protocol.space.get(base["estimator"], {}),
            protocol.tuning_trials,
            protocol.sampler_seed,
        )
        for chosen in settings:
            config = apply_settings(base, chosen)
            config.update(
                seed=protocol.tuning_seed,
                eval_split="validation",
                validation_fraction=protocol.validation_fraction,
            )
            config[PROTOCOL_KEY] = {
                "role": TUNING,
                "group": group,
                "metric": protocol.metric,
                "settings": chosen,
            }
            tuning.append(PlannedTrial(trial_id(config), config))
        for seed in protocol.seeds:
            config = {**base, "seed": seed}
            config[PROTOCOL_KEY] = {"role": TUNED, "group": group, "direction": protocol.direction}
            tuned.append(PlannedTrial(trial_id(config), config))
    checked = [_checked(t, f"protocol ({t.config['estimator']})") for t in (*tuning, *tuned)]
    return [*(grid if protocol.same_lr else []), *checked]


def protocol_arms(protocol: Protocol, grid: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Arm (tuning group) id -> its base config: a grid config without its seed and the
    settings the protocol tunes (one arm per grid cell, whatever its seeds)."""
    arms: dict[str, dict[str, Any]] = {}
    for config in grid:
        tuned = {"lr", "optimizer", "eps"} | set(protocol.space.get(config["estimator"], {}))
        base = {k: v for k, v in config.items() if k not in tuned | {"seed"}}
        base["estimator_options"] = {
            k: v for k, v in config["estimator_options"].items() if k not in tuned
        }
        arms.setdefault(group_id(base), base)
    return arms


def _absolute_local(path: Any) -> Any:
    """A relative local path made absolute against the directory the spec is read from:
    trials run in Ray workers whose working directory is not the user's. ``~`` paths (each
    node's home) and URIs stay as written."""
    if not isinstance(path, str) or not path or path.startswith("~") or "://" in path:
        return path
    return os.path.abspath(path)


def _resolve_paths(config: dict[str, Any]) -> None:
    """``data_dir`` and a model checkpoint's ``path``, made absolute (``_absolute_local``)."""
    if "data_dir" in config:
        config["data_dir"] = _absolute_local(config["data_dir"])
    options = config.get("model_options")
    if isinstance(options, dict) and "path" in options:
        config["model_options"] = {**options, "path": _absolute_local(options["path"])}


def _fill_defaults(config: dict[str, Any]) -> None:
    """Write the estimator's default lr and eps into a trial config that leaves them out, so
    the config, its Parquet row and ``qsweep validate`` show the values the trial runs with
    (and its id changes if a default does). A value the spec gives always wins; a malformed
    optimizer or estimator is left for ``_check_trial`` to report."""
    _resolve_paths(config)
    estimator, optimizer = config.get("estimator"), config.get("optimizer", "sgd")
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        return
    if config.get("lr") is None and isinstance(optimizer, str):
        try:
            config["lr"] = default_lr(estimator, optimizer)
        except ValueError:
            pass  # an unknown optimizer: TrialConfig names it
    options = config.get("estimator_options")
    eps = default_eps(estimator)
    if eps is not None and isinstance(options, dict) and "eps" not in options:
        config["estimator_options"] = {**options, "eps": eps}


def _expand_lists(hp: dict[str, Any]) -> list[dict[str, Any]]:
    """``{lr: [0.1, 0.01], n: 1}`` -> two dicts: a list value is one more grid axis."""
    keys = sorted(hp)
    axes = [hp[k] if isinstance(hp[k], list) else [hp[k]] for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*axes)]


def trial_id(config: dict[str, Any]) -> str:
    """Readable and deterministic: the same config always gets the same id (resume, dedupe)."""
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return (
        f"{config['estimator']}-{config['quantizer']}{config['bits']}-{config['model']}-"
        f"{config['dataset']}-s{config['seed']}-{digest}"
    )


# Trial settings and estimator options are checked against their dataclasses' declared types,
# strictly (no coercion: values stay as written, trial ids hash them). One of the wrong type
# (momentum: "x", steps: 1.5e9, n: true) would fail its trial, and its row could not be
# written to the typed Parquet columns.

_INT_LIMIT = 2**62  # integers land in int64 columns (seed offsets are added to seeds)
_MAX_VALUES = 100_000  # a spec is small; YAML aliases can make a tiny file expand to billions


def _check_values(data: Any) -> None:
    """Every integer fits the int64 Parquet columns (and torch/numpy seeds); no structure
    contains itself (``a: &a [*a]``) and the document has at most ``_MAX_VALUES`` values
    with YAML aliases expanded (an alias bomb), before anything walks or hashes it."""
    count = 0

    def walk(value: Any, where: str, ancestors: set[int]) -> None:
        nonlocal count
        count += 1
        if count > _MAX_VALUES:
            raise SpecError(f"spec: more than {_MAX_VALUES} values once YAML aliases are expanded")
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > _INT_LIMIT:
                raise SpecError(
                    f"{where or 'spec'}: {value} is out of range (integers must be within ±2**62)"
                )
        elif isinstance(value, (dict, list)):
            if id(value) in ancestors:
                raise SpecError(f"{where or 'spec'}: a YAML alias that contains itself")
            ancestors.add(id(value))
            for key, item in value.items() if isinstance(value, dict) else enumerate(value):
                walk(item, f"{where}.{key}" if where else str(key), ancestors)
            ancestors.discard(id(value))

    try:
        walk(data, "", set())
    except RecursionError:
        raise SpecError("spec: nested too deeply") from None


def _strict_model(config_class: type) -> type[BaseModel]:
    hints = typing.get_type_hints(config_class)
    return create_model(
        f"Strict{config_class.__name__}",
        __config__=ConfigDict(strict=True, extra="ignore"),
        **{f.name: (hints[f.name], None) for f in dataclasses.fields(config_class) if f.init},
    )


_TrialSettings = _strict_model(TrialConfig)
_strict_options = functools.cache(_strict_model)  # per estimator config class, registered late too


def _check_trial(config: dict[str, Any], where: str) -> TrialConfig:
    """The trial config's typed ``TrialConfig``, or one line naming what is wrong."""
    options = config.get("estimator_options")
    checks = [(_TrialSettings, config, "")]
    if config.get("estimator") in ESTIMATORS and isinstance(options, dict):
        model = _strict_options(ESTIMATORS[config["estimator"]].config_class)
        checks.append((model, options, "estimator_options."))
    for model, values, prefix in checks:
        try:
            model.model_validate(values)
        except ValidationError as err:
            first = err.errors()[0]
            raise SpecError(
                f"{where}: {prefix}{'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
    config = split_protocol(config)[0]
    try:
        return TrialConfig.from_dict(config)  # builds the estimator's config and quantizer spec
    except (ConfigError, ValueError, TypeError) as err:
        raise SpecError(f"{where}: {err}") from None


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{loc}: {msg}"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def apply_scale(data: dict[str, Any], scale: str | None) -> dict[str, Any]:
    """Resolve a preset's ``scales`` block: ``scales: {smoke: {...}, paper: {...}}`` holds
    overrides deep-merged into the spec. Without ``scale`` the first one listed is used
    (presets list ``smoke`` first, so the default runs in minutes on a laptop)."""
    scales = data.get("scales")
    if scales is None:
        if scale is not None:
            raise SpecError(f"--scale {scale}: this spec defines no scales")
        return data
    if (
        not isinstance(scales, dict)
        or not scales
        or not all(isinstance(v, dict) for v in scales.values())
    ):
        raise SpecError("scales: expected a mapping of scale name -> overrides")
    name = scale if scale is not None else next(iter(scales))
    if name not in scales:
        raise SpecError(f"--scale {name}: not one of {', '.join(scales)}")
    resolved = _deep_merge({k: v for k, v in data.items() if k != "scales"}, scales[name])
    chosen = (scales[name].get("grid") or {}).get("estimators")
    if isinstance(chosen, list) and isinstance(resolved.get("estimators"), dict):
        # a scale that narrows the grid's estimators drops the others' sections with them
        resolved["estimators"] = {k: v for k, v in resolved["estimators"].items() if k in chosen}
    resolved["name"] = (
        f"{resolved.get('name', 'sweep')}-{name}"
        if isinstance(resolved.get("name"), str)
        else resolved.get("name")
    )
    return resolved


def input_problems(plan: SweepPlan) -> list[str]:
    """What this machine finds wrong with the files the trials will read (a checkpoint
    directory, a task file): one line per distinct problem, naming where it first arises."""
    problems: dict[str, str] = {p: p for p in missing_tracker_packages(plan.spec)}
    for trial in (*plan.pretrain, *plan.trials):
        where = "pretrain" if trial in plan.pretrain else f"estimators.{trial.config['estimator']}"
        for error in input_errors(trial.settings):
            problems.setdefault(error, f"{where}: {error}")
    return list(problems.values())


def parse_spec(data: Any, scale: str | None = None, check_files: bool = True) -> SweepPlan:
    """Validate a spec dict and expand it once, so every error surfaces here."""
    if not isinstance(data, dict):
        raise SpecError("spec: expected a YAML mapping at the top level")
    data = apply_scale(data, scale)
    _check_values(data)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err)) from None
    plan = plan_sweep(spec)
    problems = input_problems(plan) if check_files else []
    if problems:
        raise SpecError(problems[0])
    for key in spec.search.space:
        if key not in TRIAL_FIELDS - _GRID_OWNED and not any(
            key in {f.name for f in dataclasses.fields(ESTIMATORS[e].config_class)}
            for e in spec.grid.estimators
        ):
            raise SpecError(
                f"search.space.{key}: not a trial setting nor an option of any estimator in the "
                "grid"
            )
    return plan


def load_spec(path: str | Path, scale: str | None = None, check_files: bool = True) -> SweepPlan:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror or err})") from None
    return load_spec_text(text, str(path), scale, check_files)


def load_spec_text(
    text: str, origin: str, scale: str | None = None, check_files: bool = True
) -> SweepPlan:
    """A spec from YAML text; ``origin`` (a file name, an environment variable) names it in
    errors."""
    try:
        data = yaml.safe_load(text)  # safe_load only: a spec is data, it never constructs objects
    except yaml.YAMLError as err:
        raise SpecError(f"{origin}: not valid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise SpecError(f"{origin}: not valid YAML (nested too deeply)") from None
    return parse_spec(data, scale, check_files)
