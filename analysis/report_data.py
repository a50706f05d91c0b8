"""The report's numbers: every trade-off table of a sweep in one ``Report``, as data.

``build_report`` takes the loaded ``SweepResults`` plus the report's options and only calls
the pure functions of ``analysis.tradeoff`` (and ``analysis.claims`` / ``analysis.diagnostics``)
to arrange their tables. Nothing here formats text, draws or writes a file: the renderers
(``analysis.report_text``, ``analysis.report_html``, ``analysis.report_plotly``) take the
finished ``Report`` and recompute nothing. pandas only (no matplotlib, no Ray, no torch).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis import claims as paper_claims
from analysis import diagnostics as gradient_quality
from analysis import tradeoff
from analysis.load import ResultsError, SweepResults
from analysis.tradeoff import COSTS, SETTING
from contract.metrics import REPORTED

GROUP = ["model", "dataset", "quantizer"]  # one figure per group; bit-widths are its panels
TASK = ["model", "dataset"]  # one Pareto front per task: every estimator and bit-width competes
FINISHED = ("completed", "failed", "stopped")
TRIAL_CURVE_POINTS = 100  # a seed's thin line in the curves plot: every k-th evaluation, k so
# that at most this many remain (plus the last); the median and its band use every evaluation


@dataclass(frozen=True)
class Report:
    """Everything the report shows, as plain tables (tests check these, not pixels)."""

    name: str
    location: str
    metric: str
    reference: str | None
    focus: str
    trials: pd.DataFrame  # the trials table with its ``arm`` column
    headline: pd.DataFrame  # tradeoff.final_quality: setting x arm
    targets: pd.DataFrame  # per setting: target, where it came from, the reference arm that set it
    reach: pd.DataFrame  # tradeoff.summarize_reach + target; NaN cost = not reached by every seed
    ratios: pd.DataFrame  # focus arm vs every other arm: other's cost / focus's cost, per cost
    equal_compute: pd.DataFrame  # per setting x arm: quality at the setting's common FLOPs budget
    pareto: pd.DataFrame  # completed trials with ``on_front`` (one front per model x dataset)
    memory: pd.DataFrame  # tradeoff.memory_by_arm
    failed: pd.DataFrame  # failed and stopped trials with the last line of their error
    curve_bands: pd.DataFrame  # per setting x arm x step: median / min / max over seeds
    # every evaluation of the trials in curve_bands (one row per trial x step, with arm and
    # setting): the seeds behind each band, for plots that show single trials
    trial_curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    # gradient-quality probes with arm (may be empty)
    diagnostics: pd.DataFrame = field(default_factory=pd.DataFrame)
    # per setting x arm: mean cosine, SNR
    diagnostics_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    # analysis.claims.evaluate: the papers' claims found here (with each tuned arm's tuning
    # sensitivity; grid rows next to a tuned verdict have primary False)
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)
    tuning_trials: int = 0  # a tuning protocol's tuning trials (not in ``trials``)
    spec: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def matching_arms(arms: Any, name: str) -> list[str]:
    """Arms ``name`` designates: that arm, else every arm of that estimator (any sweep prefix,
    any hyper-parameter suffix), so ``--reference nspsa`` also works on combined sweeps."""
    arms = sorted(set(arms))
    if name in arms:
        return [name]
    return [a for a in arms if a.startswith(name + " ") or a.split(" ")[0].split(":")[-1] == name]


def _targets(
    trials: pd.DataFrame, metric: str, target: float | None, reference: str | None
) -> pd.DataFrame:
    """The target per setting: the explicit one, else the reference arm's worst-seed final value.
    With several reference arms (e.g. nspsa at several lr) the best-tuned one sets it."""
    rows = []
    for key, group in trials.groupby(SETTING):
        best, source, ref = math.nan, "no target (no reference arm given)", None
        if target is not None:
            best, source = float(target), f"explicit target {float(target):g}"
        elif reference:
            source = f"no target: no completed '{reference}' trial here"
            sign = 1 if tradeoff.lower_is_better(metric, group) else -1
            for arm in matching_arms(group["arm"], reference):
                value = tradeoff.reference_target(trials, arm, metric, key)
                if not math.isnan(value) and (math.isnan(best) or sign * value < sign * best):
                    best, source, ref = value, f"{arm}: worst-seed final {metric}", arm
        rows.append(
            {**dict(zip(SETTING, key)), "target": best, "source": source, "reference_arm": ref}
        )
    return pd.DataFrame(rows, columns=[*SETTING, "target", "source", "reference_arm"])


def _reach(curves: pd.DataFrame, targets: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Compute to first reach each setting's target, over finished trials only: a running trial
    has not failed to reach it yet, a diverged one has."""
    finished = curves[curves["status"].isin(FINISHED)]
    target_of = {tuple(row[: len(SETTING)]): row.target for row in targets.itertuples(index=False)}
    parts = [
        tradeoff.compute_to_target(c, metric, target_of[key])
        for key, c in finished.groupby(SETTING)
        if not math.isnan(target_of.get(key, math.nan))
    ]
    per_trial = (
        pd.concat(parts, ignore_index=True)
        if parts
        else tradeoff.compute_to_target(finished.iloc[:0], metric, math.nan)
    )
    return tradeoff.summarize_reach(per_trial).merge(
        targets[[*SETTING, "target"]], on=SETTING, how="left"
    )


def _ratios(reach: pd.DataFrame, focus_arms: list[str]) -> pd.DataFrame:
    """Focus arm vs every other arm: one row per pair, a ratio column per cost, and how many
    seeds of each side reached the target (to say who did not, instead of a number)."""
    columns = [*SETTING, "arm", "versus", *COSTS, "arm_reached", "versus_reached"]
    parts = [tradeoff.reach_ratios(reach, arm, cost) for arm in focus_arms for cost in COSTS]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    # unstack, not pivot_table(dropna=False): that would invent every combination of the
    # index levels
    wide = (
        pd.concat(parts)
        .set_index([*SETTING, "arm", "versus", "cost"])["ratio"]
        .unstack("cost")
        .reset_index()
    )
    counts = reach[[*SETTING, "arm"]].assign(
        n=reach["reached"].astype(str) + "/" + reach["trials"].astype(str)
    )
    wide = wide.merge(counts.rename(columns={"n": "arm_reached"}), on=[*SETTING, "arm"], how="left")
    wide = wide.merge(
        counts.rename(columns={"arm": "versus", "n": "versus_reached"}), on=[*SETTING, "versus"]
    )
    return wide.reindex(columns=columns)


def _equal_compute(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Quality of every completed trial at its setting's common budget, aggregated per arm."""
    metrics = list(dict.fromkeys(["eval_metric", "eval_loss", metric]))
    agg: dict[str, tuple[str, str]] = {
        "trials": ("trial_id", "size"),
        "flops_at_eval": ("flops", "mean"),
    }
    for m in metrics:
        agg.update({f"{m}_{s}": (m, s) for s in ("median", "min", "max")})
    rows = []
    for _, c in curves[curves["status"] == "completed"].groupby(SETTING):
        budget = tradeoff.common_budget(c)
        q = tradeoff.quality_at_compute(c, metrics[0], budget)
        for m in metrics[1:]:
            q = q.merge(
                tradeoff.quality_at_compute(c, m, budget)[["sweep", "trial_id", m]],
                on=["sweep", "trial_id"],
            )
        rows.append(
            q.groupby([*SETTING, "arm"]).agg(**agg).reset_index().assign(budget_flops=budget)
        )
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=[*SETTING, "arm", "budget_flops"])
    )


def _pareto(trials: pd.DataFrame) -> pd.DataFrame:
    columns = [
        *SETTING,
        *["arm", "seed", "trial_id", "steps", "flops", "final_eval_metric", "final_eval_loss"],
    ]
    done = trials[trials["status"] == "completed"].dropna(subset=["flops", "final_eval_metric"])
    parts = [
        g[columns].assign(
            on_front=tradeoff.pareto_front(
                g["flops"], g["final_eval_metric"], not tradeoff.lower_is_better("eval_metric", g)
            )
        )
        for _, g in done.groupby(TASK)
    ]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=[*columns, "on_front"])
    )


def curve_bands(curves: pd.DataFrame) -> pd.DataFrame:
    """Seeds of an arm aggregated per evaluation step: median FLOPs and the median, min and max
    of eval loss and accuracy (the line and band of the curves plot)."""
    agg: dict[str, tuple[str, str]] = {
        "flops": ("flops", "median"),
        "seeds": ("trial_id", "nunique"),
    }
    for m in ("eval_loss", "eval_metric"):
        agg.update({f"{m}_{s}": (m, s) for s in ("median", "min", "max")})
    if "metric_name" in curves:
        agg["metric_name"] = ("metric_name", "first")
    return curves.groupby([*SETTING, "arm", "step"]).agg(**agg).reset_index()


def _trial_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The evaluations behind ``curve_bands``, one row per trial x step, in plotting order,
    each trial thinned to every k-th evaluation (``TRIAL_CURVE_POINTS``; its last kept): every
    point is a hover target in the page, and 1,000 trials of 1,000
    evaluations made a 300 MB page that took a minute to write. Bands and medians use all."""
    columns = [*SETTING, "arm", "sweep", "trial_id", "seed", "step", "flops"]
    columns += ["eval_loss", "eval_metric"] + (["metric_name"] if "metric_name" in curves else [])
    ordered = curves[columns].sort_values([*SETTING, "arm", "sweep", "trial_id", "step"])
    per_trial = ordered.groupby(["sweep", "trial_id"], sort=False)
    keep = every_kth(per_trial.cumcount(), per_trial["step"].transform("size"))
    return ordered[keep].reset_index(drop=True)


def every_kth(position: Any, size: Any) -> Any:
    """Which of a line's points to draw: every k-th (k so that at most ``TRIAL_CURVE_POINTS``
    remain) and the last; ``position`` within the line, ``size`` its length (arrays)."""
    stride = -(-size // TRIAL_CURVE_POINTS)  # ceil division
    return (position % stride == 0) | (position == size - 1)


def _versions(trials: pd.DataFrame) -> dict[str, str]:
    found: dict[str, set[str]] = {}
    for text in trials["versions"].dropna().unique():
        try:
            for pkg, version in json.loads(text).items():
                found.setdefault(pkg, set()).add(str(version))
        except (ValueError, AttributeError):
            found.setdefault("unparsed", set()).add(str(text))
    return {pkg: ", ".join(sorted(v)) for pkg, v in sorted(found.items())}


def _last_line(text: Any) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _notes(
    trials: pd.DataFrame, reach: pd.DataFrame, targets: pd.DataFrame, metric: str, focus: str
) -> list[str]:
    """What a reader must know before trusting the numbers."""
    notes = []
    unfinished = int(trials["status"].isin(["running", "pending"]).sum())
    if unfinished:
        notes.append(
            f"The sweep is still running: {unfinished} of {len(trials)} trials are running or "
            "pending, so these results are partial."
        )
    own = reach.merge(targets[[*SETTING, "reference_arm"]], on=SETTING)
    own = own[(own["arm"] == own["reference_arm"]) & (own["reached"] < own["trials"])]
    if len(own):
        where = ", ".join(
            f"{r.arm} {r.reached}/{r.trials} at {r.bits} bits" for r in own.itertuples()
        )
        notes.append(
            f"Some seeds of the reference arm never reach the target ({where}): comparisons with "
            "that arm are 'not reached', not numbers. Pass an explicit target to compare at a "
            "fixed value."
        )
    if not matching_arms(trials["arm"], focus):
        notes.append(
            f"No arm matches the focus {focus!r} (arms: {', '.join(sorted(set(trials['arm'])))})."
        )
    return notes


def _failed(trials: pd.DataFrame) -> pd.DataFrame:
    failed = trials[trials["status"].isin(["failed", "stopped"])]
    return failed.assign(error=failed["error"].map(_last_line))[
        ["trial_id", "arm", *SETTING, "seed", "status", "attempts", "error"]
    ].reset_index(drop=True)


def build_report(
    results: SweepResults,
    metric: str = "eval_loss",
    target: float | None = None,
    reference: str | None = "nspsa",
    focus: str = "fogzo",
) -> Report:
    """All tables of the report for ``results`` (one sweep or several ``combine``-d).

    Compute-to-target follows the FOGZO paper's "compute for the same loss as n-SPSA": the
    target is ``target`` if given, else the ``reference`` arm's worst-seed final ``metric`` in each
    setting; ratios compare the ``focus`` arm with every other arm of the setting.
    """
    if metric not in REPORTED:
        raise ResultsError(f"unknown metric {metric!r}; choose one of {sorted(REPORTED)}")
    if results.trials.empty:
        raise ResultsError(f"{results.location}: no trials recorded yet")
    every = tradeoff.add_arms(results.trials)
    trials = tradeoff.without_tuning(every)  # validation-split scores: the claims' tuning tables
    curves = tradeoff.attach_arms(results.curves, trials)
    targets = _targets(trials, metric, target, reference)
    reach = _reach(curves, targets, metric)
    diagnostics = gradient_quality.by_step(results.diagnostics, trials)
    plotted = curves[curves["status"] != "failed"]
    return Report(
        name=results.name,
        location=results.location,
        metric=metric,
        reference=reference,
        focus=focus,
        trials=trials,
        headline=tradeoff.final_quality(trials),
        targets=targets,
        reach=reach,
        ratios=_ratios(reach, matching_arms(trials["arm"], focus)),
        equal_compute=_equal_compute(curves, metric),
        pareto=_pareto(trials),
        memory=tradeoff.memory_by_arm(trials),
        failed=_failed(every),
        curve_bands=curve_bands(plotted),
        trial_curves=_trial_curves(plotted),
        diagnostics=diagnostics,
        diagnostics_summary=gradient_quality.summary(diagnostics),
        claims=paper_claims.evaluate(
            every,
            curves,
            paper_claims.specs_by_sweep(results.spec, trials),
            diagnostics=results.diagnostics,
        ),
        tuning_trials=len(every) - len(trials),
        spec=results.spec,
        versions=_versions(trials),
        notes=_notes(trials, reach, targets, metric, focus),
    )
