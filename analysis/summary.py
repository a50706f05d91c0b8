"""The small headline table: final quality and compute per regime x arm x bits, over seeds.

Pure pandas on the trials table (never torch or Ray), shared by ``qsweep run`` (printed
at the end of a sweep) and ``qsweep report``. Quality is the median and min–max range over
seeds (three seeds make a std meaningless), and each arm is marked "within noise" when its
range overlaps the best arm's of its (regime, quantizer, bits) group. The regime says how a
trial started: "from scratch" (QAT), "fine-tune" (from the spec's pre-training stage) or
"pre-training" (that stage itself), so the two kinds of training are never ranked together.
"""

from __future__ import annotations

import json

import pandas as pd

from analysis.bootstrap import noise_flags
from analysis.tradeoff import add_arms, lower_is_better, without_tuning

REGIMES = ("from scratch", "fine-tune", "pre-training")
COLUMNS = [
    "regime",
    "estimator",
    "quantizer",
    "bits",
    "trials",
    "completed",
    "failed",
    "metric_median",
    "metric_min",
    "metric_max",
    "loss_median",
    "loss_min",
    "loss_max",
    "flops_mean",
    "peak_memory_mean",
    "vs_best",
]


def _starts_from_checkpoint(config: object) -> bool:
    try:
        return bool(json.loads(config).get("init_from")) if isinstance(config, str) else False
    except (ValueError, AttributeError):
        return False


def regimes(trials: pd.DataFrame) -> pd.Series:
    """Each trial's regime (see the module docstring), from its id and stored config."""
    pre = trials["trial_id"].astype(str).str.startswith("pretrain-")
    tuned = trials["config"].map(_starts_from_checkpoint) if "config" in trials else False
    regime = pd.Series("from scratch", index=trials.index)
    regime[tuned & ~pre] = "fine-tune"
    regime[pre] = "pre-training"
    return regime


def _with_arms(trials: pd.DataFrame) -> pd.DataFrame:
    """``estimator`` replaced by the arm label (``nspsa n=1`` vs ``nspsa n=7960``); the
    pre-training stage is its own arm and never splits the others' labels."""
    trials = without_tuning(trials)
    trials = trials.assign(regime=regimes(trials))
    staged = trials["regime"] == "pre-training"
    main = trials[~staged]
    if "sweep" in main and not main.empty:
        main = add_arms(main).assign(estimator=lambda t: t["arm"]).drop(columns="arm")
    return pd.concat([main, trials[staged].assign(estimator="float pre-training")])


def headline_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (regime, arm, quantizer, bits): trials, completed, failed, median / min / max
    of the final eval metric and loss over completed trials, mean training FLOPs and peak
    memory, and ``vs_best``: "best", "within noise" or "" within its (regime, quantizer, bits)
    group."""
    if trials.empty:
        return pd.DataFrame(columns=COLUMNS)
    trials = _with_arms(trials)
    keys = ["regime", "estimator", "quantizer", "bits"]
    completed = trials[trials["status"] == "completed"]
    counts = trials.groupby(keys).agg(
        trials=("trial_id", "count"),
        completed=("status", lambda s: int((s == "completed").sum())),
        failed=("status", lambda s: int((s == "failed").sum())),
    )
    quality = completed.groupby(keys).agg(
        metric_median=("final_eval_metric", "median"),
        metric_min=("final_eval_metric", "min"),
        metric_max=("final_eval_metric", "max"),
        loss_median=("final_eval_loss", "median"),
        loss_min=("final_eval_loss", "min"),
        loss_max=("final_eval_loss", "max"),
        flops_mean=("flops", "mean"),
        peak_memory_mean=("peak_memory_bytes", "mean"),
    )
    table = counts.join(quality, how="left").reset_index()
    table["_order"] = table["regime"].map({r: i for i, r in enumerate(REGIMES)})
    table = table.sort_values(["_order", "bits", "estimator", "quantizer"]).drop(columns="_order")
    table["vs_best"] = ""
    for (regime, quantizer, bits), group in table.groupby(["regime", "quantizer", "bits"]):
        same = trials[
            (trials["regime"] == regime)
            & (trials["quantizer"] == quantizer)
            & (trials["bits"] == bits)
        ]
        table.loc[group.index, "vs_best"] = noise_flags(
            group["metric_median"],
            group["metric_min"],
            group["metric_max"],
            lower_is_better("eval_metric", same),
        )
    return table.reindex(columns=COLUMNS)


def headline_rows(trials: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The headline as people read it — (its title, its rows as text) — the one table both
    ``qsweep run``/``report`` print and report.html shows: per regime x arm x bits, done/failed,
    the final eval metric and loss as median [min–max] over seeds, "vs best" within a regime."""
    from analysis.bootstrap import fmt_spread
    from analysis.tradeoff import metric_label

    label = metric_label(trials)
    title = f"final eval {label} (median [min–max] over seeds)"
    rows = [
        {
            "regime": r.regime,
            "arm": r.estimator,
            "quantizer": r.quantizer,
            "bits": str(r.bits),
            "done/failed": f"{r.completed}/{r.failed}",
            label: fmt_spread(r.metric_median, r.metric_min, r.metric_max),
            "vs best": r.vs_best,
            "eval loss": fmt_spread(r.loss_median, r.loss_min, r.loss_max),
            "FLOPs": "-" if pd.isna(r.flops_mean) else f"{r.flops_mean:.2e}",
        }
        for r in headline_table(trials).itertuples()
    ]
    columns = ["regime", "arm", "quantizer", "bits", "done/failed", label, "vs best"]
    return title, pd.DataFrame(rows, columns=[*columns, "eval loss", "FLOPs"])
