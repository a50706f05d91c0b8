"""The plan: a validated ``SweepSpec`` expanded into its trials, each checked and built once.

Trial ids, defaults written into configs, the float pre-training stage and the tuning
protocol's arms are decided here; everything downstream (runner, tuner, results ledger,
progress, status) takes the ``SweepPlan`` and never expands the spec again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from service.errors import SpecError
from service.protocol import (
    PROTOCOL_KEY,
    TUNED,
    TUNING,
    apply_settings,
    group_id,
    sample_settings,
    split_protocol,
)
from service.rows import config_columns
from service.spec import PER_ESTIMATOR_TRIAL_KEYS, Protocol, SweepSpec, missing_tracker_packages
from trainers.config import ConfigError, TrialConfig
from trainers.estimators import ESTIMATORS, default_eps, default_lr
from trainers.inputs import input_errors

STAGE_PREFIX = "stage:"  # "stage:<trial id>" = that trial's checkpoint under <sweep>/stages/

_NEEDS_A_GRID = ("quzo", "qfo")  # estimators whose weights live on the quantizer's grid


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
    pretrain = _expand_pretrain(spec)
    trials, skipped = _expand(spec, pretrain)
    if spec.protocol is not None:
        trials = _with_protocol(spec.protocol, trials)
    return SweepPlan(spec, tuple(trials), tuple(pretrain), tuple(skipped))


def _model_axis(spec: SweepSpec, model: str, axis: str) -> list:
    """A model's own ``datasets`` / ``bits`` (its ``models`` section), else the grid's."""
    return spec.models.get(model, {}).get(axis, getattr(spec.grid, axis))


def _model_settings(spec: SweepSpec, model: str) -> dict[str, Any]:
    return {k: v for k, v in spec.models.get(model, {}).items() if k not in ("datasets", "bits")}


def _pretrained_estimators(spec: SweepSpec) -> list[str]:
    return (spec.pretrain or {}).get("estimators") or spec.grid.estimators


def _expand_pretrain(spec: SweepSpec) -> list[PlannedTrial]:
    """One float pre-training trial per model of the grid (empty without ``pretrain``).

    Defaults: STE (plain backprop on the float model), no quantization, the grid's first
    dataset and seed 0; anything in ``pretrain`` overrides them and ``trial``.
    """
    if spec.pretrain is None:
        return []
    planned = []
    stage = {k: v for k, v in spec.pretrain.items() if k != "estimators"}
    for model in spec.grid.models:
        shared = {
            k: v for k, v in _model_settings(spec, model).items() if k not in ("steps", "flops")
        }
        config = {
            **spec.trial,
            **shared,
            "estimator": "ste",
            "quantizer": "none",
            "bits": 8,
            "model": model,
            "dataset": _model_axis(spec, model, "datasets")[0],
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


def _expand(spec: SweepSpec, pretrain: list[PlannedTrial]) -> tuple[list[PlannedTrial], list[str]]:
    """Every trial of the grid (or, for Optuna, the base configs it samples around), and
    the grid cells left out with their reasons."""
    planned, skipped = [], []
    pretrained = dict(zip(spec.grid.models, (t.trial_id for t in pretrain)))
    g = spec.grid
    for est, quantizer, bits, model, dataset, seed in (
        (e, q, b, m, d, s)
        for e, q, m in itertools.product(g.estimators, g.quantizers, g.models)
        for b in _model_axis(spec, m, "bits")
        for d in _model_axis(spec, m, "datasets")
        for s in g.seeds
    ):
        if est in _NEEDS_A_GRID and quantizer == "none":
            skipped.append(f"{est} x quantizer none ({est} keeps its weights on a quantized grid)")
            continue
        if quantizer.startswith("fp8") and bits != _model_axis(spec, model, "bits")[0]:
            continue  # FP8 is 8-bit whatever the bits axis says: one trial, not one per bit
        for hp in _expand_lists(spec.estimators.get(est, {})):
            config = {
                **spec.trial,
                "estimator": est,
                "quantizer": quantizer,
                "bits": 8 if quantizer.startswith("fp8") else bits,
                "model": model,
                "dataset": dataset,
                "seed": seed,
                "steps": spec.budget.steps,
                "flops": spec.budget.flops,
                **_model_settings(spec, model),
            }
            options = {k: v for k, v in hp.items() if k not in PER_ESTIMATOR_TRIAL_KEYS}
            config.update({k: v for k, v in hp.items() if k in PER_ESTIMATOR_TRIAL_KEYS})
            config["estimator_options"] = options
            if spec.pretrain is not None and est in _pretrained_estimators(spec):
                config["init_from"] = STAGE_PREFIX + pretrained[model]  # fine-tune from it
            _fill_defaults(config)
            planned.append(PlannedTrial(trial_id(config), config))
    if not planned:
        raise SpecError(f"grid: no valid trial ({'; '.join(sorted(set(skipped)))})")
    checked = [_checked(t, f"estimators.{t.config['estimator']}") for t in planned]
    return checked, sorted(set(skipped))


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


def input_problems(plan: SweepPlan) -> list[str]:
    """What this machine finds wrong with the files the trials will read (a checkpoint
    directory, a task file): one line per distinct problem, naming where it first arises."""
    problems: dict[str, str] = {p: p for p in missing_tracker_packages(plan.spec)}
    for trial in (*plan.pretrain, *plan.trials):
        where = "pretrain" if trial in plan.pretrain else f"estimators.{trial.config['estimator']}"
        for error in input_errors(trial.settings):
            problems.setdefault(error, f"{where}: {error}")
    return list(problems.values())
