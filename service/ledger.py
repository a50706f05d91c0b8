"""The results of one sweep folder, and the rules that record every trial exactly once.

``<sweep_dir>/curves/<trial_id>.parquet`` holds one trial's curve and is rewritten whole at
every evaluation; ``<sweep_dir>/trials.parquet`` holds one row per trial. A status change
(start, end, retry) is one small event file holding the trial's row (``contract.journal``),
written at once at a cost that does not grow with the sweep; the events are folded into
trials.parquet on a timer that keeps the folds to a few percent of the driver's time (at
least ``flush_every_s`` apart), and at the end. All writes go through ``contract.storage``
and are atomic. A trial run with ``diagnostics`` also
gets ``<sweep_dir>/diagnostics/<trial_id>.parquet`` (one row per probe), kept like its curve.

Dedupe rule — the latest attempt wins, and a rewind truncates: when a trial reports a step
at or below the last one stored, it has restarted (from scratch after a failure, or from an
older checkpoint after a failure or a driver crash), so every stored row from that step on
is dropped before the new row goes in. Keeping the first row instead would splice two runs
into one curve: steps 0..k from a dead attempt, k+1.. from the live one, with cumulative
wall time jumping back and, where training is not bit-exact (GPU), a different trajectory.
Truncating keeps each curve one consistent history: the prefix the restored checkpoint
stands for, then what the live attempt reported. So ``(trial_id, step)`` is unique, and the
curve always ends at the run that produced the trial's final numbers.

A trial recorded as ``completed`` is final: later events for it (a resumed Tune re-reporting
it) are ignored, so resuming never rewrites finished results.

A failed trial's ``error`` is one line (``service.failure_text``: the exception's message, or
``worker died: ...`` for an infrastructure fault) and ``error_traceback`` the whole text
Tune recorded. The result a trainable reports just before a deterministic failure
(``FAILURE_KEY``) is no evaluation: it names the failure and adds no curve row.

No Ray here, directly or not: the ledger knows trials by our trial id and takes the text of
a failure as a string, and ``service.sink.ParquetSink`` turns Tune's callbacks into these
calls. So every rule above is tested in milliseconds (``tests/service/test_ledger.py``),
not only under a real Tune run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from contract import journal, metrics, schema, storage
from contract.curves import curve_rows_by_trial
from contract.record import COST_COLUMNS, CURVE_METRICS
from contract.schema import (
    CURVES_DIR,
    CURVES_SCHEMA,
    DIAGNOSTIC_FIGURES,
    DIAGNOSTICS_DIR,
    DIAGNOSTICS_SCHEMA,
    SCHEMA_VERSION,
    TRIALS_FILE,
)
from contract.storage import first_line, join
from service.errors import SweepError
from service.failure_text import FAILURE_KEY, TRACEBACK_KEY, summarize
from service.protocol import TUNED_CONFIG_KEY
from service.row_values import coerce, measured_settings

__all__ = ["ResultsLedger"]

FOLD_COST_FACTOR = 50  # seconds between folds >= this x the last fold's cost

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ResultsLedger:
    """Every trial's row, curve and probes of one sweep folder: in memory, written through.

    Trials are known by our trial id (``service.plan``'s, stable across drivers); a trial must
    be ``register``-ed before its other events. Each event method applies the module's rules
    and writes what changed; after a failed write nothing more is written (``write_error``).

    Args:
        sweep_dir: ``<results>/<sweep name>``, a local path or a pyarrow filesystem URI.
        sweep: the sweep name (a column of every table).
        versions: package versions, stored as JSON in every trial row.
        flush_every_s: least seconds between rewrites of trials.parquet caused by results
            alone (status changes always write at once).
        clean_stale_temp: delete the temp files a killed writer left in the folder; only for
            the one writer of the folder, as it starts (a live writer's temp file looks alike).
        journal_every_s: 0 writes each status event and curve at once; more keeps them in
            memory until ``write_journal`` (the durability point: ``ParquetSink`` calls it before
            every Tune experiment snapshot, and this often) writes them together.
    """

    def __init__(
        self,
        sweep_dir: str,
        sweep: str,
        versions: Mapping[str, str],
        flush_every_s: float = 2.0,
        clean_stale_temp: bool = True,
        journal_every_s: float = 0.0,
    ) -> None:
        self.sweep_dir = sweep_dir
        self.journal_every_s = journal_every_s
        self.sweep = sweep
        self.versions_json = json.dumps(versions, sort_keys=True)
        self.flush_every_s = flush_every_s
        self._fs, root = storage.resolve(sweep_dir)
        self._trials_path = join(root, TRIALS_FILE)
        self._curves_dir = join(root, CURVES_DIR)
        self._diagnostics_dir = join(root, DIAGNOSTICS_DIR)
        from service.rows import trials_schema  # the estimator registry (torch): built once

        self.trials_schema = trials_schema()  # the registered estimators' options included
        self.rows: dict[str, dict[str, Any]] = {}  # trial id -> trials_schema row
        self.curves: dict[str, dict[int, dict[str, Any]]] = {}  # trial id -> step -> CURVES row
        # trial id -> step -> DIAGNOSTICS row
        self.diagnostics: dict[str, dict[int, dict[str, Any]]] = {}
        self._progress: dict[str, float | None] = {}  # trial id -> last reported progress
        self._recovering: set[str] = set()  # retries already counted by recover()
        self._failing: dict[str, tuple[str, str | None]] = {}  # id -> (reason, traceback) reported
        self._dirty = False  # trials.parquet is behind the rows
        self._last_flush = 0.0
        self._fold_cost = 0.0  # seconds the last fold took
        self._events_dir = join(root, journal.EVENTS_DIR)
        self._next_event = 0  # the next event file's number
        self._unfolded: list[tuple[int, str]] = []  # event files trials.parquet does not hold
        self._pending: list[dict[str, Any]] = []  # status rows not in an event file yet
        self._stale_curves: set[str] = set()  # trials whose curve file is behind
        self._last_journal = time.monotonic()
        self.write_error: SweepError | None = None  # the first failed write; nothing after it
        if clean_stale_temp:
            self.remove_stale_temp_files()
        self._load()

    def __contains__(self, tid: str) -> bool:
        return tid in self.rows

    # --- the folder -----------------------------------------------------------------------

    def remove_stale_temp_files(self) -> None:
        """A driver killed mid-write leaves its hidden temp file (``storage._write_atomic``);
        no reader sees it, but nothing else would ever delete it. Nothing writes this sweep
        before its ledger exists, so every temp file here now is stale."""
        root = self._trials_path.rsplit("/", 1)[0]
        for directory in (root, self._curves_dir, self._diagnostics_dir, self._events_dir):
            for path in storage.remove_stale_temp_files(self._fs, directory):
                logger.info("removed %s, left by a writer that did not finish", path)

    def _load(self) -> None:
        """Pick up a previous driver's rows so a resumed sweep extends them, never duplicates."""
        trials = storage.read_parquet(self._fs, self._trials_path)
        self._unfolded = journal.pending_events(self._fs, self._events_dir, trials)
        events = journal.list_events(self._fs, self._events_dir)
        self._next_event = max([journal.folded_through(trials), *(s for s, _ in events)]) + 1
        if trials is not None:
            storage.check_schema_version(trials, self._trials_path)
            trials = schema.upgrade_trials(trials)
            trials = schema.conform_trials(trials)  # option columns kept as the file has them
        if self._unfolded:  # a previous driver's status changes since its last fold
            if trials is None:
                trials = self.trials_schema.empty_table()
            trials = journal.overlay(trials, journal.read_events(self._fs, self._unfolded))
            trials = schema.conform_trials(schema.upgrade_trials(trials))
            self._dirty = True
        if trials is not None:
            self.rows = {row["trial_id"]: row for row in trials.to_pylist()}
        # flat per-trial files and a compacted dataset alike (contract.curves)
        self.curves = curve_rows_by_trial(self._fs, self._curves_dir)
        for path in storage.list_files(self._fs, self._diagnostics_dir, ".parquet"):
            table = storage.read_parquet(self._fs, path)
            if table is None:
                continue
            storage.check_schema_version(table, path)
            for row in table.cast(DIAGNOSTICS_SCHEMA).to_pylist():
                self.diagnostics.setdefault(row["trial_id"], {})[row["step"]] = row | {
                    "schema_version": SCHEMA_VERSION
                }
        for tid in self.rows.keys() & self.curves.keys():  # curves are written first: they win
            self._summarize(tid)

    def _write(self, path: str, table: pa.Table) -> bool:
        """One atomic write; on a storage failure (disk full, read-only, gone) record it and
        write nothing more: the files keep their last complete version, and the caller stops
        the sweep with ``write_error`` (one line) when it can (``ParquetSink`` does so at its
        next ``on_step_end``: Tune would take an exception raised from a trial hook for that
        trial's failure, and retry or fail it)."""
        if self.write_error is not None:
            return False
        try:
            storage.write_parquet_atomic(self._fs, path, table)
        except OSError as err:  # pyarrow's IO errors are OSErrors too
            self.write_error = SweepError(
                f"cannot write results to {self.sweep_dir}: {err.strerror or first_line(err)} "
                f"({path}); the sweep stopped — what was written before stays readable, "
                f"`qsweep resume {self.sweep_dir}` continues once the location is writable"
            )
            return False
        return True

    def write_trials(self) -> None:
        """Fold: rewrite trials.parquet now with every row as it is (a resumed driver's first
        write also brings an older version's file to this one), marked as holding the events
        written so far, then delete those event files."""
        started = time.monotonic()
        self._write_curves()  # first: a reloading driver summarises rows from the curves
        table = pa.Table.from_pylist(
            [self.rows[t] for t in sorted(self.rows)], schema=self.trials_schema
        )
        table = journal.with_folded(table, self._next_event - 1)
        if not self._write(self._trials_path, table):
            return
        self._dirty, self._pending = False, []  # the table holds the pending status rows too
        folded, self._unfolded = self._unfolded, []
        for _seq, path in folded:
            try:
                self._fs.delete_file(path)
            except OSError:  # gone already, or storage trouble: readers skip it by its number
                pass
        self._last_flush = time.monotonic()
        self._fold_cost = self._last_flush - started

    def flush(self) -> None:
        """Fold if trials.parquet is behind the rows (the sweep's end)."""
        if self._dirty or self._unfolded or self._pending or self._stale_curves:
            self.write_trials()

    def maybe_flush(self) -> None:
        """``flush``, but not sooner than ``flush_every_s`` after the last fold, nor than 50
        times the last fold's cost after it: a fold rewrites the whole table (~0.3 s at
        10,000 trials), so folds stay near 2% of the driver's time at any sweep size."""
        wait = max(self.flush_every_s, FOLD_COST_FACTOR * self._fold_cost)
        if (self._dirty or self._unfolded) and time.monotonic() - self._last_flush >= wait:
            self.write_trials()

    def _record_status(self, tid: str) -> None:
        """A status change of ``tid``: its row goes into the journal (``contract.journal``),
        at once or with the next ``write_journal``; into trials.parquet at the next fold."""
        self._pending.append(dict(self.rows[tid]))
        self._dirty = True
        self.maybe_write_journal()

    def maybe_write_journal(self) -> None:
        """``write_journal`` when ``journal_every_s`` has passed; and the fold timer."""
        if time.monotonic() - self._last_journal >= self.journal_every_s:
            self.write_journal()
        self.maybe_flush()

    def write_journal(self) -> None:
        """Make every change so far durable: the curves behind, then the status rows waiting,
        as one event file (one write, whatever number of events)."""
        self._last_journal = time.monotonic()
        self._write_curves()
        if not self._pending:
            return
        seq = self._next_event
        path = journal.event_path(self._events_dir, seq)
        rows = pa.Table.from_pylist(self._pending, schema=self.trials_schema)
        if self._write(path, rows):
            self._next_event += 1
            self._unfolded.append((seq, path))
            self._pending = []

    def _write_curves(self) -> None:
        stale, self._stale_curves = self._stale_curves, set()
        for tid in sorted(stale):
            curve = self.curves[tid]
            self._write(
                join(self._curves_dir, f"{tid}.parquet"),
                pa.Table.from_pylist([curve[s] for s in sorted(curve)], schema=CURVES_SCHEMA),
            )

    # --- derived columns ------------------------------------------------------------------

    def _summarize(self, tid: str) -> None:
        """Final/best metrics and cumulative costs of a trial row, from its stored curve."""
        curve = self.curves.get(tid)
        if not curve:
            return
        rows = [curve[s] for s in sorted(curve)]
        last, row = rows[-1], self.rows[tid]
        row.update(
            {c: last[c] for c in COST_COLUMNS},
            steps=last["step"],
            final_train_loss=last["train_loss"],
            final_eval_loss=last["eval_loss"],
            final_eval_metric=last["eval_metric"],
        )
        row["best_eval_loss"] = metrics.best((r["eval_loss"] for r in rows), "eval_loss")
        row["best_eval_metric"] = metrics.best(
            (r["eval_metric"] for r in rows), "eval_metric", row.get("metric_name")
        )

    def _step_identity(self, tid: str, row: dict[str, Any], step: int) -> dict[str, Any]:
        """The columns a curve or probe row shares with its trial (denormalised: no join)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "sweep": self.sweep,
            "trial_id": tid,
            "step": step,
            "estimator": row["estimator"],
            "bits": row["bits"],
            "seed": row["seed"],
        }

    def _record_diagnostics(
        self, tid: str, row: dict[str, Any], step: int, result: Mapping[str, Any]
    ) -> None:
        """The gradient-quality probe of this result, if any (``result["diagnostics"]``, or
        Tune's flattened ``diagnostics/<figure>`` keys), under the curves' dedupe rule."""
        probe = result.get("diagnostics")
        if not isinstance(probe, Mapping):
            probe = {
                k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("diagnostics/")
            }
        stored = self.diagnostics.get(tid, {})
        stale = [s for s in stored if s >= step]  # a rewind: see the module docstring
        if not probe and not stale:
            return
        for s in stale:
            del stored[s]
        if probe:
            stored[step] = {
                name: coerce(probe.get(name), pa.float64()) for name in DIAGNOSTIC_FIGURES
            } | self._step_identity(tid, row, step)
        self.diagnostics[tid] = stored
        table = pa.Table.from_pylist([stored[s] for s in sorted(stored)], schema=DIAGNOSTICS_SCHEMA)
        self._write(join(self._diagnostics_dir, f"{tid}.parquet"), table)

    # --- a trial's events -----------------------------------------------------------------

    def register(
        self, tid: str, config: Mapping[str, Any], columns: Mapping[str, Any] | None = None
    ) -> None:
        """Give trial ``tid`` (with its trial config) a row, ``pending`` until it starts, unless
        it has one (a previous driver's, loaded from the folder). Either way trials.parquet is
        due for a rewrite at the next flush, so a trial the scheduler knows of shows up there
        before it starts."""
        if tid not in self.rows:
            row: dict[str, Any] = dict.fromkeys(self.trials_schema.names)
            if columns is None:  # not a planned trial as planned (Optuna's samples)
                from service.rows import config_columns

                columns = config_columns(config)
            row.update(columns)
            row.update(
                schema_version=SCHEMA_VERSION,
                sweep=self.sweep,
                trial_id=tid,
                status="pending",
                attempts=0,
                versions=self.versions_json,
                config=json.dumps(config, sort_keys=True, default=str),
            )
            self.rows[tid] = row
        self._dirty = True

    def start(self, tid: str) -> None:
        """An attempt of ``tid`` began: ``running``, and one more attempt, counting a first
        start and a restart by a resumed driver alike, except the start that follows
        ``recover`` (which counted that retry already, so the row shows it while it waits).
        Versions become this driver's: they are what runs from now on."""
        row = self.rows[tid]
        if row["status"] == "completed":
            return
        self._failing.pop(tid, None)
        if tid in self._recovering:
            self._recovering.discard(tid)
        else:
            row["attempts"] = (row["attempts"] or 0) + 1
        row.update(status="running", finished_at=None, versions=self.versions_json)
        row["started_at"] = row["started_at"] or _now()
        self._record_status(tid)

    def result(self, tid: str, record: Mapping[str, Any]) -> None:
        """One record ``tid`` reported (``contract.record.Evaluation``): a curve row under the
        dedupe rule (written at once, a rewind truncating), its probe, and the row's summary
        (trials.parquet follows within ``flush_every_s``). A record carrying ``FAILURE_KEY``
        is no evaluation: it only names the failure that follows (``error`` or ``complete``)."""
        row = self.rows[tid]
        if FAILURE_KEY in record and row["status"] != "completed":
            self._failing[tid] = (str(record[FAILURE_KEY]), record.get(TRACEBACK_KEY))
            row["error"], row["error_traceback"] = self._failing[tid]
            self._dirty = True
            return
        if TUNED_CONFIG_KEY in record and row["status"] != "completed":
            # a protocol re-run names the settings its arm's tuning chose (service.protocol)
            from service.rows import config_columns

            chosen = json.loads(record[TUNED_CONFIG_KEY])
            row.update(config_columns(chosen))
            row["config"] = json.dumps(chosen, sort_keys=True, default=str)
            self._dirty = True
        step = record.get("step", record.get("training_iteration"))
        if row["status"] == "completed" or step is None:
            return
        step = int(step)
        curve = self.curves.setdefault(tid, {})
        for stale in [s for s in curve if s >= step]:  # a rewind: see the module docstring
            del curve[stale]
        curve[step] = {
            name: coerce(record.get(name), CURVES_SCHEMA.field(name).type) for name in CURVE_METRICS
        } | self._step_identity(tid, row, step)
        self._stale_curves.add(tid)  # written with the journal (``write_journal``)
        self._record_diagnostics(tid, row, step, record)
        self._progress[tid] = record.get("progress")
        row.update(measured_settings(row, record))
        row.update(
            status="running",
            host=record.get("host") or record.get("hostname") or row["host"],
            metric_name=record.get("metric_name") or row.get("metric_name"),
            node_id=record.get("node_id") or row["node_id"],
            num_params=coerce(record.get("num_params", row["num_params"]), pa.int64()),
        )
        self._summarize(tid)
        self._dirty = True
        self.maybe_write_journal()

    def complete(self, tid: str) -> None:
        """``tid`` ended without an error: ``completed`` if it reached its budget, ``stopped``
        if a scheduler (ASHA) ended it early, ``failed`` if it had reported its failure.

        Tune sets ``done`` on the result of a trial it stops, so ``done`` cannot tell the two
        apart; run_trial's ``progress`` (1.0 at the budget) can. A trainable that does not
        report progress counts as completed. A trial stopped (by ASHA) on the very result that
        reported its failure still failed.
        """
        row = self.rows[tid]
        if row["status"] == "completed":
            return
        if tid in self._failing:
            reason, text = self._failing[tid]
            row.update(status="failed", error=reason, error_traceback=text, finished_at=_now())
            self._record_status(tid)
            return
        progress = self._progress.get(tid)
        row.update(
            status="completed" if progress is None or progress >= 1.0 - 1e-9 else "stopped",
            error=None,
            error_traceback=None,
            finished_at=_now(),
        )
        self._record_status(tid)

    def recover(self, tid: str, error_text: str | None) -> None:
        """A failure of ``tid`` that will be retried (``error_text``: what Tune recorded, None
        if nothing): one more attempt, counted now, and the error stays visible while the
        retry waits and runs."""
        row = self.rows[tid]
        if row["status"] == "completed":
            return
        row["attempts"] = (row["attempts"] or 0) + 1
        row["error"] = summarize(error_text) or row["error"]
        row["error_traceback"] = error_text or row["error_traceback"]
        self._recovering.add(tid)
        self._record_status(tid)

    def error(self, tid: str, error_text: str | None) -> None:
        """``tid`` failed for good (``error_text``: what Tune recorded, None if nothing). Its
        reason: the one it reported (``FAILURE_KEY``, made from the exception itself), else
        the one ``summarize`` reads from the text, else the last one recorded; its traceback:
        the text, else the reported one."""
        row = self.rows[tid]
        if row["status"] == "completed":
            return
        reason, reported = self._failing.pop(tid, (None, None))
        error = (
            reason
            or summarize(error_text)
            or row["error"]
            or "trial failed; Ray Tune recorded no error"
        )
        row.update(
            status="failed",
            error=error,
            error_traceback=error_text or reported or row["error_traceback"],
            finished_at=_now(),
        )
        self._record_status(tid)
