"""Learning-rate schedules as a pure function of budget progress.

The lr follows the same progress in [0, 1] as FOGZO's beta (the larger of the step and
FLOP fractions of the budget), so a step budget and a FLOP budget decay alike, and a
resumed trial, whose counters are restored, replays the exact same lr sequence. FOGZO's
extra variance late in a run needs a small late lr (docs/estimators.md), hence linear/cosine.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "linear", "cosine")


def check_schedule(schedule: str, warmup: float) -> None:
    """Raise ``ValueError`` (one line, naming the field) for an unknown schedule or warm-up."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction of the budget in [0, 1), got {warmup!r}")


def lr_at(base_lr: float, schedule: str, warmup: float, progress: float) -> float:
    """The lr at ``progress``: linear warm-up from 0 over the first ``warmup`` fraction, then
    ``constant``, or a ``linear`` / ``cosine`` decay that reaches 0 at progress 1."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return base_lr * p / warmup
    if schedule == "constant":
        return base_lr
    after = (p - warmup) / (1.0 - warmup)  # progress through the decay phase, 0 -> 1
    if schedule == "linear":
        return base_lr * (1.0 - after)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * after))
    raise ValueError(f"lr_schedule {schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
