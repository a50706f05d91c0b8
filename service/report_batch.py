"""Hand a trial's evaluations to Tune in batches, not one ``tune.report`` each.

A function trainable's ``tune.report`` blocks until the driver has taken the result and
asked for the next one: a round trip through Ray per call. For trials of a second that is
most of their overhead (ten evaluations, ten round trips). So the trainable keeps its
evaluation records and sends them together: at least every ``every_s`` seconds (the live
view stays live), always with a checkpoint (the checkpoint's step is then the last row the
driver has, so a restore never skips a row), at the trial's end, and before a failure is
raised. The result Tune sees is the newest record (what the search, the scheduler and the
loggers read) plus the whole batch under ``EVALUATIONS``; ``rows`` unpacks it on the driver.

With a scheduler (ASHA) every evaluation is its own report: the scheduler counts reports.
Ray-free, so the rules are tested without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

EVALUATIONS = "qsweep_evaluations"  # result key: the batch of evaluation records, oldest first
REPORT_EVERY_S = 1.0  # default: longest a finished evaluation waits before Tune sees it


def rows(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The evaluation records one Tune result carries, oldest first (one for an unbatched
    result, e.g. a failure report or a result from an older qsweep's trainable)."""
    batch = result.get(EVALUATIONS)
    return list(batch) if batch else [result]


def newest(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` without its batch: what a logger that wants one row per result should see."""
    return {k: v for k, v in result.items() if k != EVALUATIONS}


class ReportBatcher:
    """Collects records and calls ``send(result, checkpoint)`` when a batch is due.

    Args:
        send: hands one result (and an optional checkpoint) to Tune.
        every_s: longest a record waits (0: every record goes alone).
        clock: seconds, monotonic (a parameter so tests drive time).
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any], Any], None],
        every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send, self.every_s, self.clock = send, every_s, clock
        self.pending: list[dict[str, Any]] = []
        self.sent_at = clock()

    def add(self, record: dict[str, Any], checkpoint: Any = None, last: bool = False) -> None:
        """One evaluation record; sent now with everything pending when a checkpoint comes
        with it, when it is the ``last``, or when the oldest pending record is due."""
        self.pending.append(record)
        due = self.clock() - self.sent_at >= self.every_s
        if checkpoint is not None or last or due:
            self.flush(checkpoint)

    def flush(self, checkpoint: Any = None) -> None:
        """Send what is pending, with ``checkpoint`` if given (nothing pending: no call)."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        result = dict(batch[-1])
        if len(batch) > 1:
            result[EVALUATIONS] = batch
        self.send(result, checkpoint)
        self.sent_at = self.clock()
