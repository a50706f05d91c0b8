"""Which trial failures are worth a retry, and the one-line reason of each failure.

Ray Tune retries every failed trial up to ``FailureConfig(max_failures)`` and has no
per-exception filter (Ray 2.60: ``TuneController._process_trial_failure`` asks only
``Trial.should_recover()``, a count against ``trial.max_failures``). A divergence or a
configuration error fails again at the same step on every attempt, so retrying it only
spends compute. So the trainable sorts its own exceptions with ``is_deterministic``; for a
deterministic one it reports one last result carrying ``FAILURE_KEY`` (``failure_result``)
and re-raises. Reports are synchronous, so ``FailOnce`` sees that result before Tune sees
the exception, and lowers the trial's ``max_failures`` to the failures it already had:
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
"""

from __future__ import annotations

import math
import re
import traceback
from typing import Any

import torch
from ray import tune
from ray.exceptions import ActorDiedError, RayActorError, RayError

from service.limits import TrialLimitExceeded
from trainers.config import ConfigError
from trainers.data.base import DatasetError
from trainers.trial import TrialDiverged

FAILURE_KEY = "qsweep_failure"  # in a trainable's last result: the one-line reason it failed
TRACEBACK_KEY = "qsweep_failure_traceback"
MAX_REASON_CHARS = 300

RETRIED: tuple[type[BaseException], ...] = (
    OSError,
    MemoryError,
    torch.OutOfMemoryError,
    *((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()),
    RayError,
    TrialLimitExceeded,
)
# Exceptions whose message names what went wrong on its own: no type name in front of it.
SELF_EXPLAINING: tuple[type[BaseException], ...] = (
    TrialDiverged,
    ConfigError,
    DatasetError,
    TrialLimitExceeded,
)


def is_deterministic(err: BaseException) -> bool:
    """Whether ``err``, raised by a trial's own code, would be raised again by a retry."""
    return isinstance(err, Exception) and not isinstance(err, RETRIED)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def reason(err: BaseException) -> str:
    """One line: the exception's message (its first line), with its type unless the message
    explains itself (``nspsa: training loss became inf at step 205``)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    message = lines[0].strip() if lines else ""
    if isinstance(err, SELF_EXPLAINING) and message:
        return _clip(message)
    return _clip(f"{type(err).__name__}: {message}" if message else type(err).__name__)


_GENERIC_ACTOR_LINES = {RayActorError.BASE_ERROR_MSG, ActorDiedError.BASE_ERROR_MSG}
_EXCEPTION_LINE = re.compile(
    r"(?P<type>[A-Za-z_][\w.]*): (?P<message>.*)|(?P<bare>[A-Za-z_][\w.]*)"
)
_SELF_EXPLAINING_NAMES = {f"{cls.__module__}.{cls.__qualname__}" for cls in SELF_EXPLAINING}
_RAY_TASK_HEADER = re.compile(r"^(\x1b\[[0-9;]*m)?ray::\S+")


def _actor_death(text: str) -> str:
    """``worker died (pid, ip): ...`` / ``node lost ...`` / ``out of memory ...`` / ``actor killed ...``."""
    if "NODE_OUT_OF_MEMORY" in text or "running low on memory" in text:
        kind = "out of memory"
    elif "its node has died" in text:
        kind = "node lost"
    elif "killed by `ray.kill`" in text:
        kind = "actor killed"
    else:
        kind = "worker died"
    # Ray's generic first line, tab-indented ids (class, actor id, pid, ip), then the cause.
    ids = dict(
        line.strip().split(": ", 1)
        for line in text.splitlines()
        if line.startswith("\t") and ": " in line
    )
    where = ", ".join(
        part for part in (f"pid {ids['pid']}" if "pid" in ids else "", ids.get("ip", "")) if part
    )
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("\t")
    ]
    detail = next(
        (line for line in lines if line not in _GENERIC_ACTOR_LINES), lines[0] if lines else ""
    )
    detail = detail.split(" Some common causes include")[0]  # Ray's guesses, not what happened
    return _clip(f"{kind}{f' ({where})' if where else ''}: {detail}")


def summarize(text: str | None) -> str | None:
    """The one-line reason of a failure from the text Tune recorded for it (``str`` of the
    exception Tune received; ``sink.trial_error_text``), None if there is none.

    An exception the trainable raised (``RayTaskError``) reads ``ray::...`` then its
    traceback then ``module.Type: message``: the reason is that line, as ``reason`` makes
    it from the exception itself. A dead actor (``RayActorError``) reads ``The actor ...``.
    Text, not Tune's pickled exception: nothing here unpickles what a file holds.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return None
    if lines[0].startswith("The actor "):
        return _actor_death(text or "")
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    after = (
        lines[frames[-1] + 1 :]
        if frames
        else lines[1:]
        if _RAY_TASK_HEADER.match(lines[0])
        else lines
    )
    head = next((line for line in after if not line[0].isspace()), None)
    match = _EXCEPTION_LINE.fullmatch(head.strip()) if head else None
    if match is None:
        return last_line(text)
    qualified, message = match["type"] or match["bare"], (match["message"] or "").strip()
    if message and qualified in _SELF_EXPLAINING_NAMES:
        return _clip(message)
    name = qualified.rsplit(".", 1)[-1]
    return _clip(f"{name}: {message}" if message else name)


def last_line(text: str | None) -> str | None:
    """The last non-empty line of ``text``, one line; None if there is none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return _clip(lines[-1]) if lines else None


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
        trial.max_failures = self.retries

    def on_trial_result(
        self, iteration: int, trials: list, trial, result: dict, **info: Any
    ) -> None:
        if FAILURE_KEY in result:
            trial.max_failures = trial.run_metadata.num_failures  # the coming failure exceeds it
