"""The small headline table: final quality and compute per estimator x bits, over seeds.

Pure pandas on the trials table (never torch or Ray), shared by ``qsweep run`` (printed
at the end of a sweep) and ``qsweep report``.
"""

from __future__ import annotations

import pandas as pd


def headline_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (estimator, quantizer, bits): trials, completed, failed, mean/std of the
    final eval metric and loss over completed trials, mean training FLOPs and peak memory."""
    if trials.empty:
        return pd.DataFrame(columns=["estimator", "quantizer", "bits", "trials", "completed", "failed",
                                     "metric_mean", "metric_std", "loss_mean", "flops_mean", "peak_memory_mean"])
    keys = ["estimator", "quantizer", "bits"]
    completed = trials[trials["status"] == "completed"]
    counts = trials.groupby(keys).agg(trials=("trial_id", "count"),
                                      completed=("status", lambda s: int((s == "completed").sum())),
                                      failed=("status", lambda s: int((s == "failed").sum())))
    quality = completed.groupby(keys).agg(metric_mean=("final_eval_metric", "mean"),
                                          metric_std=("final_eval_metric", "std"),
                                          loss_mean=("final_eval_loss", "mean"),
                                          flops_mean=("flops", "mean"),
                                          peak_memory_mean=("peak_memory_bytes", "mean"))
    return counts.join(quality, how="left").reset_index().sort_values(["bits", "estimator", "quantizer"])
