"""Which trial failures are worth a retry, and the one-line reason of each failure.

Ray Tune retries every failed trial up to ``FailureConfig(max_failures)`` and has no
per-exception filter (it asks only for a count of failures against the trial's budget:
``service.ray_compat``'s ``retry_budget`` touchpoint, with its canary). A divergence or a
configuration error fails again at the same step on every attempt, so retrying it only
spends compute. So the trainable sorts its own exceptions with ``is_deterministic``; for a
deterministic one it reports one last result carrying ``FAILURE_KEY`` (``failure_result``)
and re-raises. Reports are synchronous, so ``FailOnce`` sees that result before Tune sees
the exception, and lowers the trial's retry budget to the failures it already had
(``ray_compat.no_more_retries``):
Tune records the trial as ERROR at once (one attempt), with the traceback in its error
file, and ``Tuner.restore(resume_errored=True)`` (``qsweep resume --retry-failed``) reruns it
like any failed trial. The search metric in that result is NaN, so ASHA does not stop the
trial on it (``NaN < cutoff`` is false) unless it reached ASHA's ``max_t``; Tune then ends it
TERMINATED, and the sink still records it failed.

Retried, as infrastructure faults: a lost worker or node, an actor killed, Ray's memory
monitor killing a worker (the driver sees these as ``RayActorError``); and, raised inside
the trainable, ``OSError`` (storage, network), ``MemoryError``, ``torch.OutOfMemoryError``
and ``torch.AcceleratorError`` (device faults), Ray errors, and the spec's time and memory
limits (``TrialLimitExceeded``: node load and what a reused worker process holds change
between attempts, and a retry resumes from the last checkpoint). Everything else the
trial's code raises — ``TrialDiverged``, ``ConfigError``, ``DatasetError``, a model's
``ValueError``, a bug — is deterministic: same config and seed, same failure.

The reasons themselves (``reason``, ``summarize``, ``FAILURE_KEY``) live in the Ray-free
``service.failure_text``, so the results ledger reads them without Ray; they are public here too.
"""

from __future__ import annotations

import math
import traceback
from typing import Any

import torch
from ray import tune
from ray.exceptions import RayError

from service.failure_text import (  # the Ray-free half, public here as before
    FAILURE_KEY,
    MAX_REASON_CHARS,
    SELF_EXPLAINING,
    TRACEBACK_KEY,
    last_line,
    reason,
    summarize,
)
from service.limits import TrialLimitExceeded
from service.ray_compat import no_more_retries, set_retry_budget

__all__ = [
    "FAILURE_KEY",
    "MAX_REASON_CHARS",
    "RETRIED",
    "SELF_EXPLAINING",
    "TRACEBACK_KEY",
    "FailOnce",
    "failure_result",
    "is_deterministic",
    "last_line",
    "reason",
    "summarize",
]

RETRIED: tuple[type[BaseException], ...] = (
    OSError,
    MemoryError,
    torch.OutOfMemoryError,
    *((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()),
    RayError,
    TrialLimitExceeded,
)


def is_deterministic(err: BaseException) -> bool:
    """Whether ``err``, raised by a trial's own code, would be raised again by a retry."""
    return isinstance(err, Exception) and not isinstance(err, RETRIED)


def failure_result(err: BaseException, metric: str | None = None) -> dict[str, Any]:
    """The trainable's last result for a deterministic failure (see the module docstring).

    With a search metric (Optuna, ASHA), Tune refuses a result without it, so it is NaN:
    the search and the scheduler see no value, never a made-up one.
    """
    result: dict[str, Any] = {
        FAILURE_KEY: reason(err),
        TRACEBACK_KEY: "".join(traceback.format_exception(err)).strip(),
    }
    if metric:
        result[metric] = math.nan
    return result


class FailOnce(tune.Callback):
    """Ends a trial at its first deterministic failure: when its ``FAILURE_KEY`` result
    arrives, no more retries for the exception that follows. A rerun (``resume
    --retry-failed``) gets ``max_failures = retries`` back (Tune counts failures over all
    of a trial's attempts, as before)."""

    def __init__(self, retries: int) -> None:
        self.retries = retries

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        set_retry_budget(trial, self.retries)

    def on_trial_result(
        self, iteration: int, trials: list, trial, result: dict, **info: Any
    ) -> None:
        if FAILURE_KEY in result:
            no_more_retries(trial)  # the coming failure exceeds its budget
