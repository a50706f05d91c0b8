"""Live progress of a sweep: trials done / running / failed and best-so-far per estimator x bits.

A Tune callback in the driver. On a terminal it redraws a rich table; otherwise (CI, a
Ray job's log) it prints one line per finished or failed trial. Holds only plain data
until the first event, because Tune pickles its callbacks when the sweep starts.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from typing import Any

from ray import tune
from rich.console import Console
from rich.live import Live
from rich.table import Table

from contract import metrics
from service.report_batch import rows
from service.trial_index import TrialIndex


class SweepProgress(tune.Callback):
    def __init__(
        self,
        planned: dict[str, dict[str, Any]],
        total: int,
        metric: str = "eval_metric",
        live: bool | None = None,
        index: TrialIndex | None = None,
    ):
        self.planned, self.total, self.metric = planned, total, metric
        self.index = index if index is not None else TrialIndex(planned)
        self.live = sys.stdout.isatty() if live is None else live
        self.status: dict[str, str] = {}
        self._counts: Counter[str] = Counter()  # of status.values(), kept as they change
        self.best: dict[tuple[str, int], float] = {}
        self._display: Live | None = None

    def _key(self, trial) -> tuple[str, dict[str, Any]]:
        """Our id and config of a Tune trial (``service.trial_index``: decoded once)."""
        return self.index.identify(trial)

    def _set(self, trial_id: str, status: str) -> None:
        old = self.status.get(trial_id)
        if old is not None:
            self._counts[old] -= 1
        self.status[trial_id] = status
        self._counts[status] += 1

    def on_trial_start(self, iteration, trials, trial, **info):
        self._set(self._key(trial)[0], "running")
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        trial_id, config = self._key(trial)
        for record in rows(result):  # a batch of evaluations (service.report_batch)
            value = record.get(self.metric)
            if isinstance(value, float) and math.isfinite(value):
                key = (config["estimator"], config["bits"])
                self.best[key] = metrics.best(
                    [self.best.get(key, value), value], self.metric, record.get("metric_name")
                )
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "completed")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "failed")

    def on_experiment_end(self, trials, **info):
        if self._display is not None:
            self._display.stop()
            self._display = None

    def _finish(self, trial, status: str) -> None:
        trial_id, config = self._key(trial)
        self._set(trial_id, status)
        if not self.live:
            counts = self.counts()
            print(
                f"[{counts['completed'] + counts['failed']}/{self.total}] {status:9s} {trial_id}",
                flush=True,
            )
        self._refresh()

    def counts(self) -> dict[str, int]:
        done = {s: self._counts[s] for s in ("running", "completed", "failed")}
        done["pending"] = max(self.total - len(self.status), 0)
        return done

    def table(self) -> Table:
        counts = self.counts()
        table = Table(
            title=(
                f"{counts['completed']} done, {counts['running']} running, "
                f"{counts['failed']} failed, {counts['pending']} pending of {self.total}"
            )
        )
        table.add_column("estimator")
        table.add_column("bits", justify="right")
        table.add_column(f"best {self.metric}", justify="right")
        for (estimator, bits), value in sorted(self.best.items()):
            table.add_row(estimator, str(bits), f"{value:.4f}")
        return table

    def _refresh(self) -> None:
        if not self.live:
            return
        if self._display is None:
            self._display = Live(
                self.table(), console=Console(), refresh_per_second=2, transient=False
            )
            self._display.start()
        self._display.update(self.table())
