"""The record a trial reports at every evaluation (``trainers.run_trial`` -> the results ledger).

A plain dict on the wire (Ray Tune passes dicts), typed here so the producer and the
consumer name the same keys. Counters are cumulative over the trial; ``done`` marks the
last record. The curve columns of ``contract.schema.CURVES_SCHEMA`` are ``CURVE_METRICS``.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Evaluation(TypedDict, total=False):
    step: int
    forwards: int
    backwards: int
    flops: float
    wall_s: float  # training time only, evaluations excluded
    train_loss: float  # mean since the previous evaluation
    eval_loss: float
    eval_metric: float  # named by metric_name (contract.metrics)
    metric_name: str
    peak_memory_bytes: int
    num_params: int
    progress: float  # fraction of the budget used, 1.0 at the end
    current_lr: float
    done: bool
    layer_bits: str  # JSON, first record of each attempt only
    d_zo: int  # the estimator's describe(), where it has figures
    noise_to_guide: float
    beta_min: float
    diagnostics: dict[str, float]  # gradient-quality probe (contract.schema.DIAGNOSTIC_FIGURES)


# The per-evaluation numbers a curve keeps (the rest is identity, added by the ledger).
CURVE_METRICS = (
    "forwards",
    "backwards",
    "flops",
    "wall_s",
    "train_loss",
    "eval_loss",
    "eval_metric",
    "peak_memory_bytes",
)
COST_COLUMNS = ("forwards", "backwards", "flops", "wall_s", "peak_memory_bytes")


def step_of(record: dict[str, Any]) -> int | None:
    """The record's step (Tune's ``training_iteration`` for a trainable that sends none)."""
    step = record.get("step", record.get("training_iteration"))
    return None if step is None else int(step)
