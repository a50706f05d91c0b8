"""Where an unexpected error's traceback goes, and the one line the user sees instead.

A user mistake is one line and exit 2 (``service.errors``). Anything else is a bug or a
broken environment: the full traceback is written to ``qsweep-error-<time>.log`` in the
sweep's directory when the command knows a local one (else the system temp directory), and
the user gets one line naming the exception, the operation it came from and that file —
never a bare ``[Errno 2] No such file or directory``.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback

_sweep_dir: str | None = None


def remember_sweep_dir(sweep_dir: str) -> None:
    """The command now knows its sweep directory: a crash log goes there."""
    global _sweep_dir
    _sweep_dir = sweep_dir


def _log_directory() -> str:
    if (
        _sweep_dir
        and "://" not in _sweep_dir
        and os.path.isdir(_sweep_dir)
        and os.access(_sweep_dir, os.W_OK)
    ):
        return _sweep_dir
    return tempfile.gettempdir()


def write_traceback(command: str, err: BaseException) -> str:
    """Write ``err``'s traceback to a log file; return its path ('' if even that failed)."""
    name = f"qsweep-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = f"qsweep {command}\n" + "".join(traceback.format_exception(err))
    for directory in dict.fromkeys([_log_directory(), tempfile.gettempdir()]):
        path = os.path.join(directory, name)
        try:
            with open(path, "w", encoding="utf-8") as out:
                out.write(text)
            return path
        except OSError:
            continue
    return ""


def origin(err: BaseException) -> str:
    """``function (file:line)`` of the innermost frame: the operation that raised."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{frame.name} ({_short(frame.filename)}:{frame.lineno})"


def _short(filename: str) -> str:
    """A path from its package on: ``ray/tune/analysis/experiment_analysis.py``."""
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) :])
    return "/".join(parts[-3:])


def describe(err: BaseException) -> str:
    """One line: the exception type, its message's first line, and where it was raised."""
    text = str(err).strip()
    message = text.splitlines()[0] if text else ""
    if isinstance(err, OSError) and err.strerror:
        message = err.strerror + (f": {err.filename!r}" if err.filename else " (no path given)")
    return f"{type(err).__name__}: {message} in {origin(err)}"


def one_line(command: str, err: BaseException) -> str:
    """What the CLI prints for an unexpected error; the traceback goes to a log file."""
    path = write_traceback(command, err)
    where = f"full traceback: {path}" if path else "the traceback could not be written anywhere"
    return f"error: qsweep {command} failed unexpectedly: {describe(err)}; {where}"
