"""The numbers a trial reports, and which way each one is better.

``eval_metric`` is the task's own metric and its name travels with the results
(``trials.metric_name``): accuracy for classification, higher is better; perplexity for
language modelling, lower is better. The losses are always lower-is-better. Every place
that picks a "best" value asks here, so none of them guesses.
"""

from __future__ import annotations

from collections.abc import Iterable

# eval_metric's possible names -> whether a higher value is better.
METRIC_NAMES: dict[str, bool] = {"accuracy": True, "perplexity": False}
DEFAULT_METRIC_NAME = "accuracy"  # what eval_metric holds when a table does not say
LOSSES = ("train_loss", "eval_loss")
REPORTED = (*LOSSES, "eval_metric")  # the columns a sweep can be searched and judged on


def higher_is_better(column: str, metric_name: str | None = None) -> bool:
    """Direction of a reported column; ``eval_metric``'s follows ``metric_name``."""
    if column in LOSSES:
        return False
    if column != "eval_metric":
        raise ValueError(f"{column!r} is not a reported metric; valid: {', '.join(REPORTED)}")
    name = metric_name or DEFAULT_METRIC_NAME
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric name {name!r}; valid: {', '.join(METRIC_NAMES)}")
    return METRIC_NAMES[name]


def best(values: Iterable[float], column: str, metric_name: str | None = None) -> float | None:
    """The best of ``values`` (NaN and None ignored), or None if there is none."""
    finite = [v for v in values if v is not None and v == v]
    if not finite:
        return None
    return (max if higher_is_better(column, metric_name) else min)(finite)
