"""A planned trial in Ray Tune's terms and back: the two directions side by side.

Encoding (which imports Ray Tune) and decoding (which does not: the results ledger and
``qsweep status`` use it). Encoding: a Tune trial's ``config`` holds only ``planned_id`` (one
grid value, or one categorical choice for Optuna) plus, in Optuna mode, the values Optuna
sampled. Decoding turns that back into our trial id and full trial config against the sweep's
plan.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from service.plan import STAGE_PREFIX, SweepPlan
from service.spec import TRIAL_FIELDS, SweepSpec
from trainers.estimators import ESTIMATORS


def _search_domain(rng) -> Any:
    from ray import tune

    if rng.choices is not None:
        return tune.choice(rng.choices)
    if rng.integer:
        return (tune.lograndint if rng.log else tune.randint)(int(rng.low), int(rng.high) + 1)
    return (tune.loguniform if rng.log else tune.uniform)(rng.low, rng.high)


def param_space_and_search(
    spec: SweepSpec, planned_ids: list[str]
) -> tuple[dict[str, Any], Any, int]:
    """Grid: every planned trial once. Optuna: a planned trial is one categorical choice."""
    from ray import tune

    if spec.search.mode == "grid":
        return {"planned_id": tune.grid_search(planned_ids)}, None, 1
    from ray.tune.search.optuna import OptunaSearch

    space = {
        "planned_id": tune.choice(planned_ids),
        **{key: _search_domain(rng) for key, rng in spec.search.space.items()},
    }
    search = OptunaSearch(metric=spec.search.metric, mode=spec.search.direction)
    return space, search, spec.search.num_samples


def _waits_for_stage(trial) -> tuple[bool, bool]:
    """Sort key: a tuning protocol's re-runs last (they wait for their arm's tuning trials,
    ``service.protocol``), and within each part the trials that wait for the stage last."""
    role = (trial.config.get("protocol") or {}).get("role")
    return role == "tuned", str(trial.config.get("init_from") or "").startswith(STAGE_PREFIX)


def encode(
    plan: SweepPlan, skip: set[str] | frozenset[str] = frozenset()
) -> tuple[dict[str, Any], Any, int]:
    """(param_space, search algorithm, num_samples) of the sweep's one Tune run: the
    pre-training stage first, then trials from scratch (they run while it does), then its
    own, and a tuning protocol's re-runs last (``service.stage_gate``, ``service.protocol``),
    leaving out planned trials in ``skip`` (already finished; grid mode)."""
    ordered = (*plan.pretrain, *sorted(plan.trials, key=_waits_for_stage))  # sorted is stable
    planned = [t.trial_id for t in ordered if t.trial_id not in skip]
    return param_space_and_search(plan.spec, planned)


def decode(
    planned: dict[str, dict[str, Any]], config: dict[str, Any], tune_trial_id: str
) -> tuple[str, dict[str, Any]]:
    """Our trial id and full trial config from a Tune trial's ``config``.

    Grid mode: ``{"planned_id": id}`` -> the planned trial. Optuna mode adds sampled values
    at the top level: trial settings replace the base value, estimator options go into
    ``estimator_options`` (only for estimators that accept them); the id gets Tune's
    trial id appended, which Tune keeps across a resume.
    """
    base_id = config["planned_id"]
    trial = json.loads(json.dumps(planned[base_id]))  # deep copy of plain data
    sampled = {k: v for k, v in config.items() if k != "planned_id"}
    if not sampled:
        return base_id, trial
    accepted = {f.name for f in dataclasses.fields(ESTIMATORS[trial["estimator"]].config_class)}
    for key, value in sampled.items():
        if key in TRIAL_FIELDS:
            trial[key] = value
        elif key in accepted:
            trial["estimator_options"][key] = value
    return f"{base_id}-{tune_trial_id}", trial
