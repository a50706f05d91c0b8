"""Ray Tune's callback telemetry, counted without importing every tracker library.

At the start of each ``fit()`` Ray Tune tags its usage stats with how many callbacks of each
built-in class the run has (``ray.air._internal.usage.tag_callbacks``). To know those classes
it imports its MLflow, W&B and Comet integrations, which import mlflow, wandb and comet_ml
whenever they are installed: measured on the quick sweep, ~0.9 s of the driver's CPU at the
start of ``fit()`` (driver CPU over the fit 2.6 -> 1.8 s), paid by every sweep on an install
with the tracking extras, whether its spec names a tracker or not. Counting by class name
gives Ray the same tag without them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

# Ray's built-in tracker callbacks, by name (their modules are what must not be imported).
TRACKER_CALLBACKS = (
    "WandbLoggerCallback",
    "MLflowLoggerCallback",
    "CometLoggerCallback",
    "AimLoggerCallback",
)


def count_callbacks_by_name(callbacks: list[Any] | None) -> dict[str, int]:
    """What Ray's ``_count_callbacks`` returns, from class names instead of classes."""
    from ray.tune import Callback
    from ray.tune.logger import LoggerCallback
    from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

    built_in = {*TRACKER_CALLBACKS, *(cls.__name__ for cls in DEFAULT_CALLBACK_CLASSES)}
    counts: dict[str, int] = defaultdict(int)
    for callback in callbacks or []:
        if not isinstance(callback, Callback):
            continue
        name = type(callback).__name__
        if name in built_in:
            counts[name] += 1
        elif isinstance(callback, LoggerCallback):
            counts["CustomLoggerCallback"] += 1
        else:
            counts["CustomCallback"] += 1
    return counts


def count_callbacks_lightly() -> None:
    """Make Ray count a run's callbacks with ``count_callbacks_by_name``. Where a Ray release
    no longer has the function, nothing changes (Ray's own counting stays)."""
    try:
        from ray.air._internal import usage
    except ImportError:
        return
    if callable(getattr(usage, "_count_callbacks", None)):
        usage._count_callbacks = count_callbacks_by_name
