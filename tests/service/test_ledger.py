"""The results ledger's exactly-once rules, without Ray: each test drives a ``ResultsLedger``
over a fresh folder and reads back what the files hold."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import contract.storage
from contract.journal import without_fold_mark
from contract.storage import read_diagnostics, read_results
from service.failure_text import FAILURE_KEY, TRACEBACK_KEY
from service.ledger import ResultsLedger
from service.rows import trials_schema

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

TID = "fogzo-int2-mlp-digits-s0"
CONFIG = {
    "estimator": "fogzo",
    "quantizer": "int",
    "bits": 2,
    "model": "mlp",
    "dataset": "digits",
    "seed": 0,
    "steps": 40,
    "estimator_options": {"n": 2},
}
VERSIONS = {"qsweep": "test"}
# What Tune records for an exception the trainable raised (``sink.trial_error_text``).
RAISED = (
    "ray::ImplicitFunc.train() (pid=7, ip=127.0.0.1)\n"
    "Traceback (most recent call last):\n"
    '  File "trainers/trial.py", line 9, in run\n'
    "    raise OSError('disk gone')\n"
    "OSError: [Errno 5] disk gone"
)


def evaluation(step: int, wall_s: float = 1.0, **extra) -> dict:
    return {
        "step": step,
        "forwards": 3 * step,
        "backwards": step,
        "flops": 1e3 * step,
        "wall_s": wall_s,
        "train_loss": 2.0,
        "eval_loss": 1.0 / (1 + step),
        "eval_metric": step / 40,
        "peak_memory_bytes": 4096,
        "progress": step / 40,
        **extra,
    }


def new_ledger(folder, **kwargs) -> ResultsLedger:
    ledger = ResultsLedger(str(folder), "s", VERSIONS, **kwargs)
    ledger.register(TID, CONFIG)
    return ledger


def stored(folder) -> tuple[dict, list[dict]]:
    """The trial row and the curve rows the folder holds now."""
    trials, curves = read_results(str(folder))
    (row,) = trials.to_pylist()
    return row, curves.to_pylist()


def test_a_rewind_truncates_the_later_rows_so_each_step_is_stored_once(tmp_path):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    for step in (0, 10, 20, 30):
        probe = {"diagnostics": {"est_cosine": step / 100}} if step in (10, 30) else {}
        ledger.result(TID, evaluation(step, wall_s=1, **probe))
    ledger.result(TID, evaluation(10, wall_s=2))  # restarted from an older checkpoint
    ledger.result(TID, evaluation(20, wall_s=2))
    ledger.flush()
    row, curve = stored(tmp_path)
    assert [(r["step"], r["wall_s"]) for r in curve] == [(0, 1), (10, 2), (20, 2)]
    assert (row["steps"], row["wall_s"], row["final_eval_loss"]) == (20, 2, 1 / 21)
    assert read_diagnostics(str(tmp_path)).to_pylist() == []  # both probes were at or after 10


def test_a_completed_row_ignores_every_later_event(tmp_path):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    ledger.result(TID, evaluation(0))
    ledger.result(TID, evaluation(40))
    ledger.complete(TID)
    before = read_results(str(tmp_path))
    assert before[0]["status"].to_pylist() == ["completed"]
    ledger.start(TID)  # a resumed Tune re-reporting it
    ledger.result(TID, evaluation(10, wall_s=9))
    ledger.result(TID, {FAILURE_KEY: "nope", "training_iteration": 2})
    ledger.recover(TID, RAISED)
    ledger.error(TID, RAISED)
    ledger.complete(TID)
    ledger.write_trials()
    after = read_results(str(tmp_path))
    assert after[0].equals(before[0]) and after[1].equals(before[1])
    assert ledger.rows[TID]["attempts"] == 1 and sorted(ledger.curves[TID]) == [0, 40]


def test_attempts_count_the_first_start_a_recover_and_a_resumed_drivers_restart(tmp_path):
    ledger = new_ledger(tmp_path)
    assert ledger.rows[TID]["attempts"] == 0
    ledger.start(TID)
    assert stored(tmp_path)[0]["attempts"] == 1
    ledger.recover(TID, RAISED)  # Tune retries: counted now, the error shown while it waits
    row = stored(tmp_path)[0]
    assert (row["attempts"], row["error"], row["error_traceback"]) == (
        2,
        "OSError: [Errno 5] disk gone",
        RAISED,
    )
    ledger.start(TID)  # the retry itself: already counted
    assert stored(tmp_path)[0]["attempts"] == 2
    resumed = ResultsLedger(str(tmp_path), "s", VERSIONS)  # a new driver restarts it
    resumed.register(TID, CONFIG)
    resumed.start(TID)
    assert stored(tmp_path)[0]["attempts"] == 3


def test_a_reported_failure_adds_no_curve_row_and_is_the_error_when_the_trial_fails(tmp_path):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    ledger.result(TID, evaluation(0))
    ledger.result(
        TID,
        {
            FAILURE_KEY: "fogzo: training loss became inf at step 7",
            TRACEBACK_KEY: "Traceback ...\nTrialDiverged: ...",
            "eval_loss": float("nan"),
            "training_iteration": 2,
        },
    )
    ledger.error(TID, RAISED)  # the reported reason beats the one read from Tune's text
    row, curve = stored(tmp_path)
    assert (row["status"], row["attempts"], row["error"], row["error_traceback"]) == (
        "failed",
        1,
        "fogzo: training loss became inf at step 7",
        RAISED,
    )
    assert [r["step"] for r in curve] == [0] and row["steps"] == 0


def test_a_failure_tune_recorded_no_text_for_keeps_the_reported_traceback(tmp_path):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    ledger.result(TID, {FAILURE_KEY: "ConfigError: lr < 0", TRACEBACK_KEY: "TB", "step": 0})
    ledger.complete(TID)  # ASHA stopped it on the failure's result: still failed
    row, curve = stored(tmp_path)
    assert (row["status"], row["error"], row["error_traceback"]) == (
        "failed",
        "ConfigError: lr < 0",
        "TB",
    )
    assert curve == []
    other = "fogzo-int2-mlp-digits-s1"
    ledger.register(other, CONFIG | {"seed": 1})
    ledger.start(other)
    ledger.error(other, None)
    assert ledger.rows[other]["error"] == "trial failed; Ray Tune recorded no error"


@pytest.mark.parametrize(
    ("last", "status"),
    [({"progress": 0.25}, "stopped"), ({"progress": 1.0}, "completed"), ({}, "completed")],
)
def test_complete_before_the_budget_is_stopped(tmp_path, last, status):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    record = evaluation(10)
    del record["progress"]
    ledger.result(TID, record | last)
    ledger.complete(TID)
    row = stored(tmp_path)[0]
    assert (row["status"], row["error"], row["steps"]) == (status, None, 10)
    assert row["finished_at"] is not None and row["started_at"] <= row["finished_at"]


def test_a_new_ledger_over_the_folder_reloads_it_and_continues_without_duplicates(tmp_path):
    first = new_ledger(tmp_path, flush_every_s=3600)
    first.start(TID)
    for step in (0, 10, 20):
        first.result(TID, evaluation(step, wall_s=1, diagnostics={"est_cosine": 0.1}))
    # The driver dies before trials.parquet caught up with the curve; the curve wins.
    assert stored(tmp_path)[0]["steps"] is None
    second = ResultsLedger(str(tmp_path), "s", VERSIONS)
    assert sorted(second.curves[TID]) == [0, 10, 20] and second.rows[TID]["steps"] == 20
    assert sorted(second.diagnostics[TID]) == [0, 10, 20]
    second.register(TID, CONFIG)  # Tune resumes the trial from its step-10 checkpoint
    second.start(TID)
    for step in (20, 30, 40):
        second.result(TID, evaluation(step, wall_s=2))
    second.complete(TID)
    row, curve = stored(tmp_path)
    assert [(r["step"], r["wall_s"]) for r in curve] == [(0, 1), (10, 1), (20, 2), (30, 2), (40, 2)]
    assert (row["status"], row["attempts"], row["steps"], row["wall_s"]) == ("completed", 2, 40, 2)
    assert [r["step"] for r in read_diagnostics(str(tmp_path)).to_pylist()] == [0, 10]
    third = ResultsLedger(str(tmp_path), "s", VERSIONS)
    assert third.rows == second.rows and third.curves == second.curves


def test_results_rewrite_the_trials_table_at_most_every_flush_every_s(tmp_path):
    ledger = new_ledger(tmp_path, flush_every_s=3600)
    ledger.start(TID)  # a status change: written at once
    ledger.result(TID, evaluation(0))
    ledger.result(TID, evaluation(10))
    row, curve = stored(tmp_path)
    assert len(curve) == 2  # curves are written at every evaluation
    assert (row["status"], row["steps"]) == ("running", None)  # the table waits
    ledger.maybe_flush()
    assert stored(tmp_path)[0]["steps"] is None
    ledger.flush()
    assert stored(tmp_path)[0]["steps"] == 10


def test_a_failed_write_is_recorded_and_nothing_is_written_after_it(tmp_path, monkeypatch):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    ledger.result(TID, evaluation(0))
    ledger.flush()
    before = read_results(str(tmp_path))

    def disk_full(table, out, **kwargs):
        out.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(contract.storage.pq, "write_table", disk_full)
    ledger.result(TID, evaluation(10))
    monkeypatch.undo()  # the disk has room again, but the sweep has stopped writing
    assert ledger.write_error is not None
    assert str(ledger.write_error).startswith(
        f"cannot write results to {tmp_path}: No space left on device ("
    )
    ledger.result(TID, evaluation(20))
    ledger.complete(TID)
    ledger.flush()
    after = read_results(str(tmp_path))  # the last complete files, still readable
    assert after[0].equals(before[0]) and after[1].equals(before[1])
    assert after[1]["step"].to_pylist() == [0]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("metric_name", "values", "best"),
    [("perplexity", [50.0, 20.0, 30.0], 20.0), ("accuracy", [0.5, 0.9, 0.7], 0.9)],
)
def test_best_eval_metric_follows_the_metrics_direction(tmp_path, metric_name, values, best):
    ledger = new_ledger(tmp_path)
    ledger.start(TID)
    for step, value in zip((0, 10, 20), values, strict=True):
        ledger.result(TID, evaluation(step, eval_metric=value, metric_name=metric_name))
    ledger.complete(TID)
    row = stored(tmp_path)[0]
    assert (row["metric_name"], row["best_eval_metric"], row["final_eval_metric"]) == (
        metric_name,
        best,
        values[-1],
    )
    assert row["best_eval_loss"] == 1 / 21  # losses: lower is better either way


def test_a_killed_writers_temp_files_are_removed_by_the_next_writer_only(tmp_path):
    new_ledger(tmp_path).write_trials()
    (tmp_path / "curves").mkdir()
    stale = [
        tmp_path / ".trials.parquet.ab12cd34.tmp",
        tmp_path / "curves" / ".x.parquet.zz99yy88.tmp",
    ]
    for path in stale:
        path.write_bytes(b"PAR1 half")
    ResultsLedger(str(tmp_path), "s", VERSIONS, clean_stale_temp=False)  # a copy: leaves them
    assert all(path.exists() for path in stale)
    ResultsLedger(str(tmp_path), "s", VERSIONS)
    assert not any(path.exists() for path in stale)
    written = without_fold_mark(pq.read_schema(tmp_path / "trials.parquet"))
    assert written.equals(TRIALS_SCHEMA, check_metadata=True)
