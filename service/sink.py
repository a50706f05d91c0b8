"""The Ray Tune callback that writes every trial to the Parquet contract of ``contract.schema``.

``<sweep_dir>/curves/<trial_id>.parquet`` holds one trial's curve and is rewritten whole at
every evaluation; ``<sweep_dir>/trials.parquet`` holds one row per trial and is rewritten on
every status change (and, while results stream in, at most every ``flush_every_s``). All
writes go through ``contract.storage`` and are atomic. A trial run with ``diagnostics`` also
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

A failed trial's ``error`` is one line (``service.failures``: the exception's message, or
``worker died: ...`` for an infrastructure fault) and ``error_traceback`` the whole text
Tune recorded. The result a trainable reports just before a deterministic failure
(``failures.FAILURE_KEY``) is no evaluation: it names the failure and adds no curve row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.tune import Callback
from ray.tune.experiment import Trial

from contract import metrics, schema, storage
from contract.record import COST_COLUMNS, CURVE_METRICS
from contract.schema import (
    CURVES_DIR,
    CURVES_SCHEMA,
    DIAGNOSTIC_FIGURES,
    DIAGNOSTICS_DIR,
    DIAGNOSTICS_SCHEMA,
    SCHEMA_VERSION,
    TRIALS_FILE,
    TRIALS_SCHEMA,
)
from contract.storage import join, read_results
from service import failures
from service.errors import SweepError
from service.spec import resolve_trial
from trainers.config import ConfigError, TrialConfig
from trainers.estimators import estimator_config

__all__ = ["ParquetSink", "read_results", "trial_error_text"]

logger = logging.getLogger(__name__)

_CURVE_METRICS = CURVE_METRICS
_COST_COLUMNS = COST_COLUMNS
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_ERROR_CHARS = 20_000  # a Ray traceback can be long; the message is at its end


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _coerce(value: Any, type_: pa.DataType) -> Any:
    """A reported number as its column's Python type (numpy scalars and 3.0-for-3 included)."""
    if value is None:
        return None
    return (
        int(value)
        if pa.types.is_integer(type_)
        else float(value)
        if pa.types.is_floating(type_)
        else value
    )


def config_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    """The grid and hyper-parameter columns of ``TRIALS_SCHEMA`` for one trial config.

    Values are the effective ones (a key missing from the config gets the TrialConfig or
    estimator default), so trials can be compared without knowing the defaults; an option
    the trial's estimator does not have is null. An invalid config keeps only what it says:
    its trial fails with the reason, and the row must still be written.
    """
    cols: dict[str, Any] = {
        k: config.get(k) for k in ("estimator", "bits", "quantizer", "model", "dataset", "seed")
    }
    try:
        cfg = TrialConfig.from_dict(config)
        options = dataclasses.asdict(estimator_config(cfg.estimator, dict(cfg.estimator_options)))
        surrogate = None if cfg.quantizer == "none" else cfg.quant_spec().surrogate
    except (ConfigError, ValueError, TypeError):
        return cols
    quant = cfg.quant_spec()
    cols.update(
        estimator=cfg.estimator,
        bits=quant.bits,
        quantizer=cfg.quantizer,
        model=cfg.model,
        dataset=cfg.dataset,
        seed=cfg.seed,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        surrogate=surrogate,
        budget_steps=cfg.steps,
        budget_flops=cfg.flops,
        lr_schedule=getattr(cfg, "lr_schedule", None),
        warmup=getattr(cfg, "warmup", None),
        scale=None if cfg.quantizer == "none" else getattr(quant, "scale", None),
        first_last=None if cfg.quantizer == "none" else quant.first_last,
    )
    for f in schema.HYPERPARAMETER_FIELDS:
        if (
            f.name in options
        ):  # a symbolic value (beta_min: auto) waits for the trial's measured one
            cols[f.name] = options[f.name] if _fits(options[f.name], f.type) else None
    return cols


def _fits(value: Any, type_: pa.DataType) -> bool:
    """Whether ``value`` can go in a column of ``type_`` as it is."""
    if value is None or pa.types.is_string(type_):
        return value is None or isinstance(value, str)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Settings a trial measures once its model exists, and the row column each one fills; the
# effective beta_min replaces a symbolic ``auto`` (a number given in the spec stays as it is).
_MEASURED = {f.name: f.type for f in schema.MEASURED_SETTING_FIELDS} | {"beta_min": pa.float64()}


def measured_settings(row: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """The measured-settings columns a result carries (``d_zo``, ``noise_to_guide``, ...)."""
    found = {
        name: _coerce(result[name], type_)
        for name, type_ in _MEASURED.items()
        if result.get(name) is not None
    }
    if "beta_min" in found and row.get("beta_min") is not None:
        del found["beta_min"]  # the spec's own number
    return found


def trial_error_text(trial: Trial) -> str | None:
    """The latest failure of ``trial`` as Tune recorded it (traceback and exception message).

    In Ray 2.60 ``Trial.handle_error`` appends ``Failure # k (occurred at ...)`` and
    ``str(exc)`` to ``trial.error_file`` on the driver just before ``on_trial_error`` /
    ``on_trial_recover`` run, so that local file is read first; ``get_error`` (the synced
    copy in storage) is the fallback. Never ``get_pickled_error``: it unpickles a file from
    the results location. None if Tune has nothing.
    """
    readers = (lambda: Path(trial.error_file).read_text(errors="replace"), trial.get_error)
    text = None
    for read in readers:
        try:
            found = read()
        except Exception:  # noqa: BLE001 - no file, no storage context, storage unreachable: next
            found = None
        if found:
            text = str(found)
            break
    if not text:
        return None
    text = _ANSI.sub("", text)  # Ray colours the actor name in tracebacks
    last = text.rsplit("Failure # ", 1)[-1]
    header, _, body = last.partition("\n")
    if header[:1].isdigit():
        last = body  # drop the "Failure # k (occurred at ...)" header
    return (last.strip() or text.strip())[-_MAX_ERROR_CHARS:]


class ParquetSink(Callback):
    """Ray Tune callback: every trial's status and curve, in Parquet, as they happen.

    Args:
        sweep_dir: ``<results>/<sweep name>``, a local path or a pyarrow filesystem URI.
        sweep: the sweep name (a column of both tables).
        planned: planned trial id -> trial config (``service.spec.resolve_trial`` input).
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
    ) -> None:
        self.sweep_dir = sweep_dir
        self.sweep = sweep
        self.planned = planned
        self.versions_json = json.dumps(versions, sort_keys=True)
        self.flush_every_s = flush_every_s
        self._fs, root = storage.resolve(sweep_dir)
        self._trials_path = join(root, TRIALS_FILE)
        self._curves_dir = join(root, CURVES_DIR)
        self._diagnostics_dir = join(root, DIAGNOSTICS_DIR)
        self._rows: dict[str, dict[str, Any]] = {}  # our trial id -> TRIALS_SCHEMA row
        self._curves: dict[
            str, dict[int, dict[str, Any]]
        ] = {}  # our trial id -> step -> CURVES row
        self._diagnostics: dict[
            str, dict[int, dict[str, Any]]
        ] = {}  # our trial id -> step -> DIAGNOSTICS row
        self._ids: dict[str, tuple[str, dict[str, Any]]] = {}  # Tune trial id -> (our id, config)
        self._progress: dict[str, float | None] = {}  # our trial id -> last reported progress
        self._recovering: set[str] = set()  # retries already counted by on_trial_recover
        self._failing: dict[
            str, tuple[str, str | None]
        ] = {}  # our trial id -> (reason, traceback) reported
        self._dirty = False
        self._last_flush = 0.0
        self.write_error: SweepError | None = (
            None  # the first failed write; nothing is written after it
        )
        if clean_stale_temp:
            self._remove_stale_temp_files()
        self._load()

    def __getstate__(self) -> dict[str, Any]:
        """Only the arguments: Tune pickles its callbacks into ``tuner.pkl`` at the start, and
        ``Tuner.restore`` must get a sink that reads the files as they are then, not a snapshot."""
        return {
            "sweep_dir": self.sweep_dir,
            "sweep": self.sweep,
            "planned": self.planned,
            "versions": json.loads(self.versions_json),
            "flush_every_s": self.flush_every_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state, clean_stale_temp=False)  # a copy: the live sink may be writing

    def _remove_stale_temp_files(self) -> None:
        """A driver killed mid-write leaves its hidden temp file (``storage._write_atomic``);
        no reader sees it, but nothing else would ever delete it. Nothing writes this sweep
        before its sink exists, so every temp file here now is stale."""
        root = self._trials_path.rsplit("/", 1)[0]
        for directory in (root, self._curves_dir, self._diagnostics_dir):
            for path in storage.remove_stale_temp_files(self._fs, directory):
                logger.info("removed %s, left by a writer that did not finish", path)

    def _load(self) -> None:
        """Pick up a previous driver's rows so a resumed sweep extends them, never duplicates."""
        trials = storage.read_parquet(self._fs, self._trials_path)
        if trials is not None:
            storage.check_schema_version(trials, self._trials_path)
            trials = schema.upgrade_trials(trials)
            self._rows = {row["trial_id"]: row for row in trials.cast(TRIALS_SCHEMA).to_pylist()}
        for path in storage.list_files(self._fs, self._curves_dir, ".parquet"):
            table = storage.read_parquet(self._fs, path)
            if table is None:
                continue
            storage.check_schema_version(table, path)
            for row in table.cast(CURVES_SCHEMA).to_pylist():
                self._curves.setdefault(row["trial_id"], {})[row["step"]] = row
        for path in storage.list_files(self._fs, self._diagnostics_dir, ".parquet"):
            table = storage.read_parquet(self._fs, path)
            if table is None:
                continue
            storage.check_schema_version(table, path)
            for row in table.cast(DIAGNOSTICS_SCHEMA).to_pylist():
                self._diagnostics.setdefault(row["trial_id"], {})[row["step"]] = row | {
                    "schema_version": SCHEMA_VERSION
                }
        for tid in self._rows.keys() & self._curves.keys():  # curves are written first: they win
            self._summarize(tid)

    def _identify(self, trial: Trial) -> tuple[str, dict[str, Any]]:
        if trial.trial_id not in self._ids:
            try:
                self._ids[trial.trial_id] = resolve_trial(
                    self.planned, trial.config, trial.trial_id
                )
            except (KeyError, TypeError, ValueError) as err:
                # Not one of our planned trials: record it under Tune's id rather than crash the sweep.
                logger.warning(
                    "trial %s: config %r is not a planned trial (%s)",
                    trial.trial_id,
                    trial.config,
                    err,
                )
                self._ids[trial.trial_id] = (trial.trial_id, dict(trial.config))
        return self._ids[trial.trial_id]

    def _row(self, trial: Trial) -> tuple[str, dict[str, Any]]:
        tid, config = self._identify(trial)
        if tid not in self._rows:
            row: dict[str, Any] = dict.fromkeys(TRIALS_SCHEMA.names)
            row.update(config_columns(config))
            row.update(
                schema_version=SCHEMA_VERSION,
                sweep=self.sweep,
                trial_id=tid,
                status="pending",
                attempts=0,
                versions=self.versions_json,
                config=json.dumps(config, sort_keys=True, default=str),
            )
            self._rows[tid] = row
        return tid, self._rows[tid]

    def _summarize(self, tid: str) -> None:
        """Final/best metrics and cumulative costs of a trial row, from its stored curve."""
        curve = self._curves.get(tid)
        if not curve:
            return
        rows = [curve[s] for s in sorted(curve)]
        last, row = rows[-1], self._rows[tid]
        row.update(
            {c: last[c] for c in _COST_COLUMNS},
            steps=last["step"],
            final_train_loss=last["train_loss"],
            final_eval_loss=last["eval_loss"],
            final_eval_metric=last["eval_metric"],
        )
        row["best_eval_loss"] = metrics.best((r["eval_loss"] for r in rows), "eval_loss")
        row["best_eval_metric"] = metrics.best(
            (r["eval_metric"] for r in rows), "eval_metric", row.get("metric_name")
        )

    def _write(self, path: str, table: pa.Table) -> bool:
        """One atomic write; on a storage failure (disk full, read-only, gone) record it and
        write nothing more: the files keep their last complete version, and the next
        ``on_step_end`` stops the sweep with one line (Tune would take an exception raised
        from a trial hook for that trial's failure, and retry or fail it)."""
        if self.write_error is not None:
            return False
        try:
            storage.write_parquet_atomic(self._fs, path, table)
        except OSError as err:  # pyarrow's IO errors are OSErrors too
            self.write_error = SweepError(
                f"cannot write results to {self.sweep_dir}: {err.strerror or _first_line(err)} "
                f"({path}); the sweep stopped — what was written before stays readable, "
                f"`qsweep resume {self.sweep_dir}` continues once the location is writable"
            )
            return False
        return True

    def _write_curve(self, tid: str) -> None:
        curve = self._curves[tid]
        table = pa.Table.from_pylist([curve[s] for s in sorted(curve)], schema=CURVES_SCHEMA)
        self._write(join(self._curves_dir, f"{tid}.parquet"), table)

    def _record_diagnostics(self, tid: str, row: dict[str, Any], step: int, result: dict) -> None:
        """The gradient-quality probe of this result, if any (``result["diagnostics"]``, or
        Tune's flattened ``diagnostics/<figure>`` keys), under the curves' dedupe rule."""
        probe = result.get("diagnostics")
        if not isinstance(probe, Mapping):
            probe = {
                k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("diagnostics/")
            }
        stored = self._diagnostics.get(tid, {})
        stale = [s for s in stored if s >= step]  # a rewind: see the module docstring
        if not probe and not stale:
            return
        for s in stale:
            del stored[s]
        if probe:
            stored[step] = {
                name: _coerce(probe.get(name), pa.float64()) for name in DIAGNOSTIC_FIGURES
            } | {
                "schema_version": SCHEMA_VERSION,
                "sweep": self.sweep,
                "trial_id": tid,
                "step": step,
                "estimator": row["estimator"],
                "bits": row["bits"],
                "seed": row["seed"],
            }
        self._diagnostics[tid] = stored
        table = pa.Table.from_pylist([stored[s] for s in sorted(stored)], schema=DIAGNOSTICS_SCHEMA)
        self._write(join(self._diagnostics_dir, f"{tid}.parquet"), table)

    def _write_trials(self) -> None:
        table = pa.Table.from_pylist(
            [self._rows[t] for t in sorted(self._rows)], schema=TRIALS_SCHEMA
        )
        if self._write(self._trials_path, table):
            self._dirty = False
            self._last_flush = time.monotonic()

    def _maybe_flush(self) -> None:
        if self._dirty and time.monotonic() - self._last_flush >= self.flush_every_s:
            self._write_trials()

    # --- Tune hooks (signatures as in ray/tune/callback.py, Ray 2.60) ------------------------

    def _register(self, trials: list[Trial]) -> None:
        """Give every trial Tune knows of a row (``pending`` until it starts)."""
        if len(self._ids) < len(trials):
            for trial in trials:
                if trial.trial_id not in self._ids:
                    self._row(trial)
                    self._dirty = True

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.write_error is not None:
            raise self.write_error  # out of tuner.fit(): the CLI prints it and exits 2
        self._register(trials)
        self._maybe_flush()

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._register(trials)
        tid, row = self._row(trial)
        if row["status"] == "completed":
            return
        self._failing.pop(tid, None)
        if tid in self._recovering:
            self._recovering.discard(tid)
        else:  # a first start, or a restart by a resumed driver: one more attempt
            row["attempts"] = (row["attempts"] or 0) + 1
        row.update(status="running", finished_at=None, versions=self.versions_json)
        row["started_at"] = row["started_at"] or _now()
        self._write_trials()

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        tid, row = self._row(trial)
        if failures.FAILURE_KEY in result and row["status"] != "completed":
            self._failing[tid] = (
                str(result[failures.FAILURE_KEY]),
                result.get(failures.TRACEBACK_KEY),
            )
            row["error"], row["error_traceback"] = self._failing[tid]
            self._dirty = True
            return  # the exception follows (on_trial_error); nothing to add to the curve
        step = result.get("step", result.get("training_iteration"))
        if row["status"] == "completed" or step is None:
            return
        step = int(step)
        curve = self._curves.setdefault(tid, {})
        for stale in [s for s in curve if s >= step]:  # a rewind: see the module docstring
            del curve[stale]
        curve[step] = {
            name: _coerce(result.get(name), CURVES_SCHEMA.field(name).type)
            for name in _CURVE_METRICS
        } | {
            "schema_version": SCHEMA_VERSION,
            "sweep": self.sweep,
            "trial_id": tid,
            "step": step,
            "estimator": row["estimator"],
            "bits": row["bits"],
            "seed": row["seed"],
        }
        self._write_curve(tid)
        self._record_diagnostics(tid, row, step, result)
        self._progress[tid] = result.get("progress")
        row.update(measured_settings(row, result))
        row.update(
            status="running",
            host=result.get("host") or result.get("hostname") or row["host"],
            metric_name=result.get("metric_name") or row.get("metric_name"),
            node_id=result.get("node_id") or row["node_id"],
            num_params=_coerce(result.get("num_params", row["num_params"]), pa.int64()),
        )
        self._summarize(tid)
        self._dirty = True
        self._maybe_flush()

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Completed if it reached its budget, ``stopped`` if a scheduler (ASHA) ended it early.

        Tune sets ``done`` on the result of a trial it stops, so ``done`` cannot tell the two
        apart; run_trial's ``progress`` (1.0 at the budget) can. A trainable that does not
        report progress counts as completed.
        """
        tid, row = self._row(trial)
        if row["status"] == "completed":
            return
        if tid in self._failing:  # stopped (by ASHA) on the result that reported its failure
            reason, text = self._failing[tid]
            row.update(status="failed", error=reason, error_traceback=text, finished_at=_now())
            self._write_trials()
            return
        progress = self._progress.get(tid)
        row.update(
            status="completed" if progress is None or progress >= 1.0 - 1e-9 else "stopped",
            error=None,
            error_traceback=None,
            finished_at=_now(),
        )
        self._write_trials()

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A failure Tune will retry: one more attempt; the error stays visible while it runs."""
        tid, row = self._row(trial)
        if row["status"] == "completed":
            return
        row["attempts"] = (row["attempts"] or 0) + 1
        text = trial_error_text(trial)
        row["error"] = failures.summarize(text) or row["error"]
        row["error_traceback"] = text or row["error_traceback"]
        self._recovering.add(tid)
        self._write_trials()

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        tid, row = self._row(trial)
        if row["status"] == "completed":
            return
        text = trial_error_text(trial)
        reason, reported = self._failing.pop(tid, (None, None))
        error = (
            reason
            or failures.summarize(text)
            or row["error"]
            or "trial failed; Ray Tune recorded no error"
        )
        row.update(
            status="failed",
            error=error,
            error_traceback=text or reported or row["error_traceback"],
            finished_at=_now(),
        )
        self._write_trials()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._register(trials)
        if self._dirty:
            self._write_trials()
        if self.write_error is not None:
            raise self.write_error
