"""The Ray Tune callback that writes every trial to the Parquet contract of ``contract.schema``.

A thin adapter: it maps Tune's trials onto our planned trial ids (``service.trial_index``),
reads the failure text Tune recorded (``trial_error_text``), and hands each event to a
``service.ledger.ResultsLedger``, which holds the rules (the dedupe rule of a rewind, completed
rows being final, attempts, failure reasons, reload, write failures) and the files. The only
rule kept here is where a write failure surfaces: from ``on_step_end``, out of ``tuner.fit()``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from contract.storage import read_results
from service.errors import SweepError
from service.ledger import ResultsLedger
from service.ray_compat import trial_error_text
from service.report_batch import rows

# Re-exported: tests/reliability/test_bad_input.py and tests/service/test_spec_defaults.py
# import it from here.
from service.rows import config_columns  # noqa: F401
from service.trial_index import TrialIndex

__all__ = ["ParquetSink", "read_results", "trial_error_text"]

# Longest a result or status change waits in memory before its file is written, unless Tune
# saves an experiment snapshot first (``ParquetSink.get_state``).
JOURNAL_EVERY_S = 0.5

logger = logging.getLogger(__name__)


class ParquetSink(Callback):
    """Ray Tune callback: every trial's status and curve, in Parquet, as they happen.

    Args:
        sweep_dir: ``<results>/<sweep name>``, a local path or a pyarrow filesystem URI.
        sweep: the sweep name (a column of both tables).
        planned: planned trial id -> trial config (``service.tune_config.decode`` input).
        versions: package versions, stored as JSON in every trial row.
        flush_every_s: least seconds between rewrites of trials.parquet caused by results
            alone (status changes always write at once).
    """

    def __init__(
        self,
        sweep_dir: str,
        sweep: str,
        planned: dict[str, dict[str, Any]],
        versions: dict[str, str],
        flush_every_s: float = 2.0,
        clean_stale_temp: bool = True,
        journal_every_s: float = JOURNAL_EVERY_S,
        index: TrialIndex | None = None,
    ) -> None:
        self.sweep_dir = sweep_dir
        self.sweep = sweep
        self.planned = planned
        self.flush_every_s = flush_every_s
        self.journal_every_s = journal_every_s
        self.index = index if index is not None else TrialIndex(planned)
        self._seen: set[str] = set()  # Tune trial ids registered in the ledger
        self._registered = 0  # how many of Tune's trials (a list it only appends to) are known
        self.ledger = ResultsLedger(
            sweep_dir, sweep, versions, flush_every_s, clean_stale_temp, journal_every_s
        )

    @property
    def write_error(self) -> SweepError | None:
        """The first failed write (``ResultsLedger.write_error``); nothing is written after it."""
        return self.ledger.write_error

    def __getstate__(self) -> dict[str, Any]:
        """Only the arguments: Tune pickles its callbacks into ``tuner.pkl`` at the start, and
        ``Tuner.restore`` must get a sink that reads the files as they are then, not a snapshot."""
        return {
            "sweep_dir": self.sweep_dir,
            "sweep": self.sweep,
            "planned": self.planned,
            "versions": json.loads(self.ledger.versions_json),
            "flush_every_s": self.flush_every_s,
            "journal_every_s": self.journal_every_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state, clean_stale_temp=False)  # a copy: the live sink may be writing

    def _identify(self, trial: Trial) -> tuple[str, dict[str, Any]]:
        return self.index.identify(trial)

    def _register_one(self, trial: Trial) -> str:
        tid, config = self.index.identify(trial)
        self.ledger.register(tid, config, self.index.columns_of(tid))
        self._seen.add(trial.trial_id)
        return tid

    def _tid(self, trial: Trial) -> str:
        """Our id of ``trial``, registered in the ledger."""
        tid, _ = self._identify(trial)
        if tid not in self.ledger:
            self._register_one(trial)
        return tid

    def _register(self, trials: list[Trial]) -> None:
        """Give every trial Tune knows of a row (``pending`` until it starts). Tune appends new
        trials to its list, so only the tail past the last call is new: a scan of the whole
        list at every step would cost the square of the sweep's size."""
        if self._registered > len(trials):  # not the list it was: look at all of it
            self._registered = 0
        for trial in trials[self._registered :]:
            if trial.trial_id not in self._seen:
                self._register_one(trial)
        self._registered = len(trials)

    # --- Tune hooks (signatures as in ray/tune/callback.py, Ray 2.60) ------------------------

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.ledger.write_error is not None:
            raise self.ledger.write_error  # out of tuner.fit(): the CLI prints it and exits 2
        self._register(trials)
        self.ledger.maybe_write_journal()

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._register(trials)
        self.ledger.start(self._tid(trial))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        tid = self._tid(trial)
        for record in rows(result):  # a batch of evaluations (service.report_batch), in order
            self.ledger.result(tid, record)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.ledger.complete(self._tid(trial))

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A failure Tune will retry: one more attempt; the error stays visible while it runs."""
        self.ledger.recover(self._tid(trial), trial_error_text(trial))

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.ledger.error(self._tid(trial), trial_error_text(trial))

    def get_state(self) -> None:
        """Tune asks just before it saves an experiment snapshot (``save_to_dir``): make every
        result and status change so far durable first, so a snapshot never knows of a trial
        state, or a checkpoint, whose rows a driver crash could still lose. No state to save."""
        self.ledger.write_journal()
        return None

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._register(trials)
        self.ledger.flush()
        if self.ledger.write_error is not None:
            raise self.ledger.write_error
