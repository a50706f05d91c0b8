"""The quality-vs-compute trade-off as pure functions on the trials and curves tables.

Layer 1 of the analysis (numbers only; plots and the report only draw what these return).
A *setting* is (model, dataset, quantizer, bits); an *arm* is what is compared within a
setting: the estimator, plus the sweep name when several sweeps are combined, plus any
hyper-parameter that varies between its trials (e.g. ``nspsa lr=0.001``). Seeds of an
arm are aggregated.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from contract.metrics import DEFAULT_METRIC_NAME, higher_is_better
from contract.schema import ARM_SETTING_COLUMNS, option_columns

SETTING = ["model", "dataset", "quantizer", "bits"]


def lower_is_better(metric: str, frame: pd.DataFrame | None = None) -> bool:
    """Direction of ``metric`` (``contract.metrics``): ``eval_metric``'s is that of the metric
    the trials name in their ``metric_name`` column (accuracy when they name none)."""
    name = None
    if metric == "eval_metric" and frame is not None and "metric_name" in frame:
        named = [n for n in frame["metric_name"].dropna().unique() if n != DEFAULT_METRIC_NAME]
        name = named[0] if named else None
    return not higher_is_better(metric, name)


def metric_label(frame: pd.DataFrame) -> str:
    """ "accuracy" or "perplexity" (what eval_metric holds), for tables and axes."""
    names = frame["metric_name"].dropna().unique() if "metric_name" in frame else []
    return str(names[0]) if len(names) == 1 else DEFAULT_METRIC_NAME


COSTS = ["flops", "forwards", "wall_s"]
# What a tuning protocol chooses per arm (service.protocol): re-runs are one arm across them.
TUNED_SETTINGS = frozenset({"lr", "optimizer", "momentum", "eps"})
# Columns analysis adds to a trials table; every other non-core column is an estimator option.
DERIVED_COLUMNS = frozenset({"arm", "regime"})


def _format_value(value: object) -> str:
    """A hyper-parameter as a label shows it: ``n=4`` not ``n=4.0`` (nullable int columns
    arrive in pandas as floats), ``lr=0.001``."""
    if isinstance(value, float) and not math.isnan(value):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)  # never merge two distinct values
    return str(value)


def add_arms(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with an ``arm`` column (see module docstring)."""
    trials = trials.copy()
    several_sweeps = trials["sweep"].nunique() > 1

    def label(group: pd.DataFrame, role: str) -> pd.Series:
        options = option_columns(c for c in group.columns if c not in DERIVED_COLUMNS)
        candidates = [*ARM_SETTING_COLUMNS, *options]
        if role == "tuned":  # an arm's re-runs share its chosen settings: not what splits it
            candidates = [c for c in candidates if c not in TUNED_SETTINGS]
        varying = [c for c in candidates if c in group and group[c].nunique(dropna=True) > 1]
        base = group["estimator"].astype(str)
        if several_sweeps:
            base = group["sweep"].astype(str) + ":" + base
        if role in ("tuned", "tuning"):
            base = base + f" [{role}]"
        for column in varying:
            base = base + f" {column}=" + group[column].map(_format_value)
        return base

    trials["arm"] = ""
    role = (
        trials["role"].astype(object).where(trials["role"].notna(), "grid")
        if "role" in trials
        else pd.Series("grid", index=trials.index)
    )
    for (_, _, r), group in trials.groupby(["sweep", "estimator", role], dropna=False):
        trials.loc[group.index, "arm"] = label(group, r)
    return trials


def without_tuning(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` less a tuning protocol's tuning trials: they are scored on a validation split,
    so their metrics never sit in a table beside test-split ones (``docs/claims.md``)."""
    if "role" not in trials:
        return trials
    return trials[trials["role"].astype(object).ne("tuning")]


def attach_arms(curves: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Curves joined with each trial's arm and setting (curves carry estimator/bits only)."""
    columns = ["sweep", "trial_id", "arm", "status", *SETTING] + (
        ["metric_name"] if "metric_name" in trials else []
    )
    return curves.drop(columns=[c for c in ("estimator", "bits") if c in curves]).merge(
        trials[columns], on=["sweep", "trial_id"], how="inner"
    )


def final_quality(trials: pd.DataFrame) -> pd.DataFrame:
    """Per setting x arm over completed trials: final and best eval metric and loss (mean, std;
    the finals also median, min and max over seeds), mean compute, wall time and peak memory;
    failed trials are counted, not averaged."""
    keys = [*SETTING, "arm"]
    done = trials[trials["status"] == "completed"]
    counts = trials.groupby(keys).agg(
        trials=("trial_id", "size"), failed=("status", lambda s: int((s == "failed").sum()))
    )
    stats = done.groupby(keys).agg(
        completed=("trial_id", "size"),
        final_metric_mean=("final_eval_metric", "mean"),
        final_metric_std=("final_eval_metric", "std"),
        best_metric_mean=("best_eval_metric", "mean"),
        best_metric_std=("best_eval_metric", "std"),
        final_loss_mean=("final_eval_loss", "mean"),
        final_loss_std=("final_eval_loss", "std"),
        **{
            f"final_{name}_{stat}": (column, stat)
            for name, column in (("metric", "final_eval_metric"), ("loss", "final_eval_loss"))
            for stat in ("median", "min", "max")
        },
        flops_mean=("flops", "mean"),
        wall_s_mean=("wall_s", "mean"),
        peak_memory_mean=("peak_memory_bytes", "mean"),
    )
    table = counts.join(stats, how="left").reset_index()
    table["completed"] = table["completed"].fillna(0).astype(int)
    return table


def first_reach(curve: pd.DataFrame, metric: str, target: float) -> pd.Series | None:
    """The first evaluation (by step) at which ``metric`` reaches ``target``, or None.

    Reaching means ``<= target`` for losses and ``>= target`` for accuracy. Measured at
    evaluation points, without interpolation: compute-to-target is what was observed.
    """
    curve = curve.sort_values("step")
    values = curve[metric]
    hit = values <= target if lower_is_better(metric, curve) else values >= target
    hit = hit & values.notna()
    if not hit.any():
        return None
    return curve[hit].iloc[0]


def compute_to_target(curves: pd.DataFrame, metric: str, target: float) -> pd.DataFrame:
    """Per trial: whether it reached ``target`` and the FLOPs, forwards and wall seconds it
    had spent at that evaluation (NaN when not reached — never a made-up number)."""
    rows = []
    for (sweep, trial_id), curve in curves.groupby(["sweep", "trial_id"]):
        first = first_reach(curve, metric, target)
        row = {
            "sweep": sweep,
            "trial_id": trial_id,
            "arm": curve["arm"].iloc[0],
            "reached": first is not None,
            **{c: curve[c].iloc[0] for c in SETTING},
        }
        row.update({c: (float(first[c]) if first is not None else math.nan) for c in COSTS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["sweep", "trial_id", "arm", "reached", *SETTING, *COSTS])


def summarize_reach(per_trial: pd.DataFrame) -> pd.DataFrame:
    """Per setting x arm: trials that reached / trials, and the median cost over those that
    did. An arm reaches only if every one of its seeds does; otherwise its costs stay NaN
    and the report prints "not reached"."""
    rows = []
    for key, group in per_trial.groupby([*SETTING, "arm"]):
        reached = int(group["reached"].sum())
        all_reached = reached == len(group)
        row = dict(zip([*SETTING, "arm"], key))
        row.update({"reached": reached, "trials": len(group)})
        row.update({c: float(group[c].median()) if all_reached else math.nan for c in COSTS})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*SETTING, "arm", "reached", "trials", *COSTS])


def reach_ratios(summary: pd.DataFrame, arm: str, cost: str = "flops") -> pd.DataFrame:
    """How many times less ``cost`` ``arm`` needs than every other arm of the same setting
    (``other / arm``; > 1 means ``arm`` is cheaper). NaN where either side never reached."""
    rows = []
    for key, group in summary.groupby(SETTING):
        mine = group[group["arm"] == arm]
        if mine.empty:
            continue
        base = float(mine[cost].iloc[0])
        for other in group[group["arm"] != arm].itertuples():
            value = getattr(other, cost)
            ratio = (
                value / base
                if base > 0 and not (math.isnan(base) or math.isnan(value))
                else math.nan
            )
            rows.append(
                {
                    **dict(zip(SETTING, key)),
                    "arm": arm,
                    "versus": other.arm,
                    "cost": cost,
                    "ratio": ratio,
                }
            )
    return pd.DataFrame(rows, columns=[*SETTING, "arm", "versus", "cost", "ratio"])


def reference_target(
    trials: pd.DataFrame, reference_arm: str, metric: str, setting: tuple
) -> float:
    """The FOGZO paper's target, "the loss n-SPSA reaches": the reference arm's final value
    in ``setting`` that EVERY one of its completed seeds reaches — the worst seed's final
    value. (The mean would leave the worse seeds of the reference itself "not reached".)"""
    final = {
        "eval_loss": "final_eval_loss",
        "eval_metric": "final_eval_metric",
        "train_loss": "final_train_loss",
    }[metric]
    mask = (trials["arm"] == reference_arm) & (trials["status"] == "completed")
    for column, value in zip(SETTING, setting):
        mask &= trials[column] == value
    values = trials.loc[mask, final].dropna()
    if not len(values):
        return math.nan
    return float(values.max() if lower_is_better(metric, trials) else values.min())


def quality_at_compute(
    curves: pd.DataFrame, metric: str, budget: float, cost: str = "flops"
) -> pd.DataFrame:
    """Per trial: ``metric`` at the last evaluation with cumulative ``cost`` (FLOPs, or wall
    seconds for an equal-wall-time comparison) <= ``budget``."""
    eligible = curves[curves[cost] <= budget].sort_values("step")
    last = eligible.groupby(["sweep", "trial_id"]).tail(1)
    return last[
        ["sweep", "trial_id", "arm", *SETTING, *dict.fromkeys(["flops", cost]), metric]
    ].reset_index(drop=True)


def common_budget(curves: pd.DataFrame) -> float:
    """The largest compute every trial reached (min over trials of max FLOPs): the budget at
    which all arms can be compared."""
    if curves.empty:
        return math.nan
    return float(curves.groupby(["sweep", "trial_id"])["flops"].max().min())


def pareto_front(
    cost: np.ndarray, quality: np.ndarray, higher_is_better: bool = True
) -> np.ndarray:
    """Boolean mask of the points no other point beats on both axes (less or equal cost and
    better or equal quality, one of them strictly)."""
    cost = np.asarray(cost, dtype=float)
    q = np.asarray(quality, dtype=float) * (1 if higher_is_better else -1)
    front = np.zeros(len(cost), dtype=bool)
    for i in range(len(cost)):
        if np.isnan(cost[i]) or np.isnan(q[i]):
            continue
        dominated = (cost <= cost[i]) & (q >= q[i]) & ((cost < cost[i]) | (q > q[i]))
        front[i] = not dominated.any()
    return front


def memory_by_arm(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean peak tensor memory (bytes) per setting x arm over trials that measured it."""
    measured = trials[trials["peak_memory_bytes"].fillna(0) > 0]
    return (
        measured.groupby([*SETTING, "arm"])["peak_memory_bytes"]
        .agg(["mean", "max"])
        .reset_index()
        .rename(columns={"mean": "peak_memory_mean", "max": "peak_memory_max"})
    )
