"""The one-line reason of a trial's failure, from the exception or from the text Tune recorded.

Ray-free (no ``ray``, directly or not; Ray's wording comes from ``service.ray_compat``, which
imports Ray only inside its functions), so the results ledger (``service.ledger``) can turn
what Tune recorded into ``trials.error`` without Ray; ``service.failures`` re-exports every
public name here, next to the retry policy, which needs Ray. The trainable names its failure
with ``reason`` and the driver reads it back with ``summarize``: both must give the same line.
"""

from __future__ import annotations

import re

from contract.errors import ConfigError, DatasetError, TrialDiverged  # torch-free (the ledger)
from service.limits import TrialLimitExceeded
from service.ray_compat import (  # Ray's wording, fenced there with canaries (imports no Ray)
    ACTOR_DEATH_ADVICE,
    ACTOR_DEATH_KINDS,
    ACTOR_IP_KEY,
    ACTOR_PID_KEY,
    DEAD_ACTOR_PREFIX,
    GENERIC_ACTOR_LINES,
    RAY_TASK_HEADER,
)

FAILURE_KEY = "qsweep_failure"  # in a trainable's last result: the one-line reason it failed
TRACEBACK_KEY = "qsweep_failure_traceback"
MAX_REASON_CHARS = 300

# Exceptions whose message names what went wrong on its own: no type name in front of it.
SELF_EXPLAINING: tuple[type[BaseException], ...] = (
    TrialDiverged,
    ConfigError,
    DatasetError,
    TrialLimitExceeded,
)


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


_EXCEPTION_LINE = re.compile(
    r"(?P<type>[A-Za-z_][\w.]*): (?P<message>.*)|(?P<bare>[A-Za-z_][\w.]*)"
)
_SELF_EXPLAINING_NAMES = {f"{cls.__module__}.{cls.__qualname__}" for cls in SELF_EXPLAINING}


def _actor_death(text: str) -> str:
    """``worker died (pid, ip): ...``, ``node lost ...``, ``out of memory ...`` or
    ``actor killed ...``."""
    kind = next(
        (kind for kind, fragments in ACTOR_DEATH_KINDS if any(f in text for f in fragments)),
        "worker died",
    )
    # Ray's generic first line, tab-indented ids (class, actor id, pid, ip), then the cause.
    ids = dict(
        line.strip().split(": ", 1)
        for line in text.splitlines()
        if line.startswith("\t") and ": " in line
    )
    pid = f"pid {ids[ACTOR_PID_KEY]}" if ACTOR_PID_KEY in ids else ""
    where = ", ".join(part for part in (pid, ids.get(ACTOR_IP_KEY, "")) if part)
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("\t")
    ]
    detail = next(
        (line for line in lines if line not in GENERIC_ACTOR_LINES), lines[0] if lines else ""
    )
    detail = detail.split(ACTOR_DEATH_ADVICE)[0]  # Ray's guesses, not what happened
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
    if lines[0].startswith(DEAD_ACTOR_PREFIX):
        return _actor_death(text or "")
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    after = (
        lines[frames[-1] + 1 :]
        if frames
        else lines[1:]
        if RAY_TASK_HEADER.match(lines[0])
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
