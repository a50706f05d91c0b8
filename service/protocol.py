"""The tuning protocol: every arm gets the same tuning budget, then its best is re-run.

A comparison at one shared lr measures the lr, not the estimator. With a spec's
``protocol:`` each arm (one grid cell: estimator, its options, quantizer, bits, model,
dataset; any seed) gets ``tuning_trials`` configurations from its own search space, trained
on the training split less a held-out validation part and scored there; the best is then
re-run with ``seeds`` fresh seeds and measured on the test split. The anchor is MLCommons
AlgoPerf's external-tuning ruleset (same number of tuning trials per algorithm, each from
its own declared space, scored on held-out data); ``docs/claims.md`` says how verdicts use it.

Search space per arm (``docs/claims.md``): ``lr`` log-uniform over [default / 10, default x 10]
around the estimator's own default for the sampled optimizer; ``optimizer`` in {sgd (with
momentum 0.9), adam} for estimators that take an optimizer; ``eps`` log-uniform over
[default / 3, default x 3] for zeroth-order estimators. ``protocol.space.<estimator>``
replaces the dimensions it names (absolute ranges or choices). The points are one seeded
Latin hypercube, the same unit points for every arm with the same dimensions.

Everything runs in the sweep's one Tune run, like the pre-training stage
(``service.stage_gate``): tuning trials first in the grid, the re-runs last; a re-run waits
in its trainable until every tuning trial of its arm has a score (``tuned_settings``).
Planned configs carry the role under ``PROTOCOL_KEY`` (stripped before training). Ray-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from contract import storage
from service.stage_gate import STAGES_DIR, StageFailed

PROTOCOL_KEY = "protocol"  # planned config -> {"role": "tuning" | "tuned", "group": id}
TUNED_CONFIG_KEY = "tuned_config"  # a re-run's first result: its config with the chosen settings
TUNING, TUNED = "tuning", "tuned"
LR_DECADES = 1.0  # lr over [default / 10**LR_DECADES, default * 10**LR_DECADES]
EPS_FACTOR = 3.0  # eps over [default / EPS_FACTOR, default * EPS_FACTOR]
OPTIMIZER_CHOICES = ("sgd", "adam")
# Tuned keys that are trial settings; every other tuned key is an estimator option.
TRIAL_KEYS = ("lr", "optimizer", "momentum", "weight_decay")
POLL_S = 0.2


def split_protocol(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the trial config ``run_trial`` takes, the protocol role: {} for an ordinary trial)."""
    trial = {k: v for k, v in config.items() if k != PROTOCOL_KEY}
    return trial, dict(config.get(PROTOCOL_KEY) or {})


def role_of(config: Mapping[str, Any]) -> str:
    """The trial's role column: tuning, tuned, pretrain (a stage that saves its model) or grid."""
    role = (config.get(PROTOCOL_KEY) or {}).get("role")
    if role:
        return role
    return "pretrain" if config.get("save_model_to") else "grid"


def tuning_ids(planned: Mapping[str, Mapping[str, Any]], group: str) -> list[str]:
    """The tuning trials of arm ``group``, in plan order."""
    return [
        tid
        for tid, config in planned.items()
        if (config.get(PROTOCOL_KEY) or {}).get("role") == TUNING
        and config[PROTOCOL_KEY].get("group") == group
    ]


def group_id(base: Mapping[str, Any]) -> str:
    """An arm's id: readable, and a digest of its untuned settings (seed left out)."""
    digest = hashlib.sha1(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{base['estimator']}-{base['quantizer']}{base['bits']}-{base['model']}-{digest}"


def _dimensions(estimator: str, declared: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, range) of the arm's search space; a default lr range is ``None`` (relative to
    the sampled optimizer's default), a declared one a ``Range``."""
    from trainers.estimators import ESTIMATORS, default_eps  # torch: only when planning

    dims: list[tuple[str, Any]] = []
    in_place = ESTIMATORS[estimator].updates_in_place
    if not in_place:
        dims.append(("optimizer", declared.get("optimizer", OPTIMIZER_CHOICES)))
    dims.append(("lr", declared.get("lr")))
    eps = default_eps(estimator)
    if "eps" in declared:
        dims.append(("eps", declared["eps"]))
    elif eps is not None:
        dims.append(("eps", ("log", eps / EPS_FACTOR, eps * EPS_FACTOR)))
    for name, value in declared.items():
        if name not in ("optimizer", "lr", "eps"):
            dims.append((name, value))
    return dims


def latin_hypercube(points: int, dims: int, seed: int) -> np.ndarray:
    """``points`` x ``dims`` unit points, one in each of ``points`` strata per dimension."""
    rng = np.random.default_rng(seed)
    cells = np.stack([rng.permutation(points) for _ in range(dims)], axis=1)
    return (cells + rng.random((points, dims))) / points


def _round(x: float) -> float:
    """Three significant digits: readable settings, no information a log-range search needs."""
    return float(f"{x:.3g}")


def _pick(value: Any, u: float) -> Any:
    """The value at unit coordinate ``u`` of one dimension (choices, a Range, or a log tuple)."""
    if isinstance(value, tuple) and value and value[0] == "log":
        _, low, high = value
        return _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    if isinstance(value, (tuple, list)):
        return value[min(int(u * len(value)), len(value) - 1)]
    if value.choices is not None:  # a declared Range
        return value.choices[min(int(u * len(value.choices)), len(value.choices) - 1)]
    low, high = value.low, value.high
    x = (
        math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        if value.log
        else low + u * (high - low)
    )
    return int(round(x)) if value.integer else _round(x)


def sample_settings(
    estimator: str, base_optimizer: str | None, declared: Mapping[str, Any], count: int, seed: int
) -> list[dict[str, Any]]:
    """``count`` settings for one arm: {lr, optimizer?, eps?, ...}, from its space."""
    from trainers.estimators import default_lr  # torch: only when planning

    dims = _dimensions(estimator, declared)
    unit = latin_hypercube(count, len(dims), seed)
    out = []
    for row in unit:
        chosen: dict[str, Any] = {}
        for (name, value), u in zip(dims, row):
            if name == "lr" and value is None:
                optimizer = chosen.get("optimizer", base_optimizer or "sgd")
                centre = default_lr(estimator, optimizer)
                chosen["lr"] = _round(centre * 10 ** (LR_DECADES * (2 * u - 1)))
            else:
                chosen[name] = _pick(value, u)
        out.append(chosen)
    return out


def apply_settings(config: dict[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with tuned settings in place: trial settings at the top, options inside."""
    out = {**config, "estimator_options": dict(config.get("estimator_options") or {})}
    for key, value in settings.items():
        if key in TRIAL_KEYS:
            out[key] = value
        else:
            out["estimator_options"][key] = value
    if out.get("optimizer") == "adam":
        out.pop("momentum", None)  # Adam takes none; the row's column stays empty
    return out


# --- the hand-over from tuning trials to their arm's re-runs (through the results folder) ----


def _score_path(sweep_dir: str, group: str, tid: str) -> str:
    return f"{sweep_dir.rstrip('/')}/{STAGES_DIR}/tuning/{group}/{tid}.json"


def record_score(
    sweep_dir: str, group: str, tid: str, score: float | None, settings: Mapping[str, Any]
) -> None:
    """A tuning trial's validation score (None: it failed; it ranks last) and settings."""
    fs, path = storage.resolve(_score_path(sweep_dir, group, tid))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    finite = score is not None and math.isfinite(score)
    body = {"trial_id": tid, "score": score if finite else None, "settings": dict(settings)}
    storage.write_text_atomic(fs, path, json.dumps(body, sort_keys=True))


def _read_score(sweep_dir: str, group: str, tid: str) -> dict[str, Any] | None:
    fs, path = storage.resolve(_score_path(sweep_dir, group, tid))
    if not storage.exists(fs, path):
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.readall().decode())


def choose_best(scores: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The best-scored entry (ties: the earliest in plan order); None if every one failed."""
    scored = [s for s in scores if s.get("score") is not None]
    if not scored:
        return None
    sign = 1.0 if direction == "min" else -1.0
    return min(scored, key=lambda s: sign * s["score"])  # min keeps the first of equals


def tuned_settings(
    sweep_dir: str,
    group: str,
    tuning_ids: list[str],
    direction: str,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], str]:
    """Wait until every tuning trial of ``group`` has a score, then (the best one's settings,
    its trial id); ``StageFailed`` when all of them failed."""
    while True:
        found = [_read_score(sweep_dir, group, tid) for tid in tuning_ids]
        if all(f is not None for f in found):
            break
        sleep(poll_s)
    best = choose_best(found, direction)
    if best is None:
        raise StageFailed(f"every tuning trial of arm {group} failed: nothing to re-run")
    return best["settings"], best["trial_id"]
