"""Per-trial time and memory limits (``time_limit_s`` / ``memory_limit_mb`` of the spec).

``LimitWatchdog`` wraps one attempt of a trial inside its Ray worker. A daemon thread
samples the attempt's wall-clock time and the worker process's resident memory every
``INTERVAL_S``; past a limit it raises ``_Interrupt`` in the training thread
(``PyThreadState_SetAsyncExc``: delivered at that thread's next Python instruction), and
the ``with`` block turns it into ``TrialLimitExceeded`` naming the limit. ``check()``,
called at every evaluation, raises the same error synchronously, so a limit is enforced
even where the asynchronous one cannot land. Ray Tune records the exception as the
trial's failure and retries it up to the spec's ``retries``: unlike a divergence, going
over a limit depends on the node and the worker process, and a retry resumes from the last
checkpoint (``service.failures``).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from types import TracebackType

INTERVAL_S = 0.1
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class TrialLimitExceeded(RuntimeError):
    """One attempt of a trial went over the spec's time or memory limit."""


class _Interrupt(Exception):
    """Raised asynchronously in the training thread; never leaves ``LimitWatchdog``."""

    def __str__(self) -> str:
        return "trial interrupted by its time/memory limit"


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux ``/proc``); None where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


class LimitWatchdog:
    """``with LimitWatchdog(time_limit_s, memory_limit_mb): train()`` in the training thread."""

    def __init__(
        self,
        time_limit_s: float | None,
        memory_limit_mb: float | None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.time_limit_s = time_limit_s
        self.memory_limit_mb = memory_limit_mb
        self.interval_s = interval_s
        self.reason: str | None = None
        self._started = time.monotonic()
        self._target: int | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.time_limit_s is not None or self.memory_limit_mb is not None

    def exceeded(self) -> str | None:
        """Why this attempt is over a limit now, or None."""
        if self.time_limit_s is not None:
            elapsed = time.monotonic() - self._started
            if elapsed > self.time_limit_s:
                return f"time limit of {self.time_limit_s:g} s exceeded (ran {elapsed:.1f} s)"
        if self.memory_limit_mb is not None:
            rss = resident_bytes()
            if rss is not None and rss > self.memory_limit_mb * 2**20:
                return (
                    f"memory limit of {self.memory_limit_mb:g} MB exceeded "
                    f"(worker process resident memory {rss / 2**20:.0f} MB)"
                )
        return None

    def check(self) -> None:
        """Raise ``TrialLimitExceeded`` if a limit is (or was) exceeded."""
        reason = self.reason or self.exceeded()
        if reason is not None:
            self.reason = reason
            raise TrialLimitExceeded(reason)

    def _watch(self) -> None:
        while not self._closed.wait(self.interval_s):
            reason = self.exceeded()
            if reason is None:
                continue
            with self._lock:
                if not self._closed.is_set():
                    self.reason = reason
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(self._target), ctypes.py_object(_Interrupt)
                    )
            return

    def __enter__(self) -> LimitWatchdog:
        self._started = time.monotonic()
        self._target = threading.get_ident()
        if self.active:
            self._thread = threading.Thread(target=self._watch, name="qsweep-limits", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._closed.set()
            if self.reason is not None:  # an interrupt not delivered yet must not fire later
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), None)
        if self._thread is not None:
            self._thread.join()
        # A trial that got to its end keeps its result (its last evaluation was checked);
        # an interrupted one, or one that failed while being interrupted, fails for the limit.
        if (
            self.reason is not None
            and exc_type is not None
            and not issubclass(exc_type, TrialLimitExceeded)
        ):
            raise TrialLimitExceeded(self.reason) from None
