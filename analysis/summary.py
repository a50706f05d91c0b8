"""The small headline table: final quality and compute per estimator x bits, over seeds.

Pure pandas on the trials table (never torch or Ray), shared by ``qsweep run`` (printed
at the end of a sweep) and ``qsweep report``. Quality is the median and min–max range over
seeds (three seeds make a std meaningless), and each arm is marked "within noise" when its
range overlaps the best arm's of its (quantizer, bits) group.
"""

from __future__ import annotations

import pandas as pd

from analysis.bootstrap import noise_flags
from analysis.tradeoff import lower_is_better

COLUMNS = ["estimator", "quantizer", "bits", "trials", "completed", "failed", "metric_median", "metric_min",
           "metric_max", "loss_median", "loss_min", "loss_max", "flops_mean", "peak_memory_mean", "vs_best"]


def headline_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (estimator, quantizer, bits): trials, completed, failed, median / min / max
    of the final eval metric and loss over completed trials, mean training FLOPs and peak
    memory, and ``vs_best``: "best", "within noise" or "" within its (quantizer, bits) group."""
    if trials.empty:
        return pd.DataFrame(columns=COLUMNS)
    keys = ["estimator", "quantizer", "bits"]
    completed = trials[trials["status"] == "completed"]
    counts = trials.groupby(keys).agg(trials=("trial_id", "count"),
                                      completed=("status", lambda s: int((s == "completed").sum())),
                                      failed=("status", lambda s: int((s == "failed").sum())))
    quality = completed.groupby(keys).agg(metric_median=("final_eval_metric", "median"),
                                          metric_min=("final_eval_metric", "min"),
                                          metric_max=("final_eval_metric", "max"),
                                          loss_median=("final_eval_loss", "median"),
                                          loss_min=("final_eval_loss", "min"),
                                          loss_max=("final_eval_loss", "max"),
                                          flops_mean=("flops", "mean"),
                                          peak_memory_mean=("peak_memory_bytes", "mean"))
    table = counts.join(quality, how="left").reset_index().sort_values(["bits", "estimator", "quantizer"])
    table["vs_best"] = ""
    for (quantizer, bits), group in table.groupby(["quantizer", "bits"]):
        lower = lower_is_better("eval_metric", trials[(trials["quantizer"] == quantizer) & (trials["bits"] == bits)])
        table.loc[group.index, "vs_best"] = noise_flags(group["metric_median"], group["metric_min"],
                                                        group["metric_max"], lower)
    return table.reindex(columns=COLUMNS)
