"""The trial event journal (``contract.journal``) under the results ledger, without Ray:
a status change costs one small file whatever the sweep's size, readers see it before the
fold, a fold that died half way is harmless, and a writer killed mid-event loses nothing it
had finished."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from contract import journal
from contract.storage import read_trials
from service.ledger import ResultsLedger
from tests.service.test_ledger import CONFIG, VERSIONS, evaluation

REPO = Path(__file__).resolve().parents[2]


def _ledger(folder, n: int, **kwargs) -> ResultsLedger:
    ledger = ResultsLedger(str(folder), "s", VERSIONS, **kwargs)
    for i in range(n):
        ledger.register(f"t{i:05d}", {**CONFIG, "seed": i})
    return ledger


def _statuses(folder) -> dict[str, str]:
    return {r["trial_id"]: r["status"] for r in read_trials(str(folder)).to_pylist()}


def test_a_status_change_is_one_event_file_and_readers_see_it_before_the_fold(tmp_path):
    ledger = _ledger(tmp_path, 3, flush_every_s=3600)
    ledger.write_trials()  # the registered rows, folded once
    table_before = (tmp_path / "trials.parquet").stat().st_mtime_ns
    ledger.start("t00001")
    ledger.result("t00001", evaluation(40))
    ledger.complete("t00001")
    events = sorted(p.name for p in (tmp_path / journal.EVENTS_DIR).iterdir())
    assert events == ["000000000000.parquet", "000000000001.parquet"]  # start, complete
    assert (tmp_path / "trials.parquet").stat().st_mtime_ns == table_before  # not rewritten
    assert _statuses(tmp_path) == {"t00000": "pending", "t00001": "completed", "t00002": "pending"}
    ledger.flush()  # the fold: the table holds them, the files go
    assert not list((tmp_path / journal.EVENTS_DIR).iterdir())
    table = pq.read_table(tmp_path / "trials.parquet")
    assert journal.folded_through(table) == 1
    assert dict(zip(table["trial_id"].to_pylist(), table["status"].to_pylist())) == _statuses(
        tmp_path
    )


def test_events_a_dead_fold_left_behind_are_skipped_by_their_number(tmp_path):
    """The fold wrote the table, then died before deleting the event files: an old event
    ("running") must not be laid over the newer table row ("completed")."""
    ledger = _ledger(tmp_path, 1, flush_every_s=3600)
    ledger.start("t00000")
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / journal.EVENTS_DIR, saved)
    ledger.complete("t00000")
    ledger.flush()
    for path in saved.iterdir():  # the start event reappears, as if never deleted
        shutil.copy(path, tmp_path / journal.EVENTS_DIR / path.name)
    assert _statuses(tmp_path) == {"t00000": "completed"}
    again = ResultsLedger(str(tmp_path), "s", VERSIONS)
    assert again.rows["t00000"]["status"] == "completed"


def test_a_new_writer_replays_the_journal_and_numbers_on_after_it(tmp_path):
    first = _ledger(tmp_path, 2, flush_every_s=3600)
    first.start("t00000")
    first.start("t00001")
    first.complete("t00000")  # the driver dies here: three events, no fold since
    second = ResultsLedger(str(tmp_path), "s", VERSIONS, flush_every_s=3600)
    assert {t: r["status"] for t, r in second.rows.items()} == {
        "t00000": "completed",
        "t00001": "running",
    }
    second.complete("t00001")  # event 3, after the earlier driver's 0..2; the first fold
    second.flush()
    assert journal.folded_through(pq.read_table(tmp_path / "trials.parquet")) == 3
    assert _statuses(tmp_path) == {"t00000": "completed", "t00001": "completed"}
    assert not list((tmp_path / journal.EVENTS_DIR).iterdir())


def test_the_cost_of_a_status_event_does_not_grow_with_the_sweep(tmp_path):
    """Write cost of a start/complete at 100 vs 5,000 registered trials (median of many):
    with a whole-table rewrite per event the large sweep costs ~30x more. The two ledgers
    take turns, event by event, so a machine whose load changes meanwhile slows both alike
    (measured one after the other, a busier second half read as growth)."""
    ledgers = {n: _ledger(tmp_path / str(n), n, flush_every_s=3600) for n in (100, 5000)}
    times: dict[int, list[float]] = {n: [] for n in ledgers}
    for ledger in ledgers.values():
        ledger.write_trials()
    for i in range(0, 60, 2):
        tid = f"t{i:05d}"
        for n, ledger in ledgers.items():
            started = time.perf_counter()
            ledger.start(tid)
            ledger.complete(tid)
            times[n].append(time.perf_counter() - started)
    small, large = (statistics.median(times[n]) for n in ledgers)
    assert large < 3 * small, (small, large)


WRITER = """
import sys
from service.ledger import ResultsLedger
ledger = ResultsLedger(sys.argv[1], "s", {"qsweep": "test"}, flush_every_s=0.05)
config = {"estimator": "ste", "quantizer": "int", "bits": 2, "model": "mlp",
          "dataset": "digits", "seed": 0, "steps": 40, "estimator_options": {}}
for i in range(400):
    tid = f"t{i:05d}"
    ledger.register(tid, config)
    ledger.start(tid)
    print("started", tid, flush=True)
    ledger.complete(tid)
    print("completed", tid, flush=True)
"""


@pytest.mark.slow
def test_a_writer_killed_mid_journal_loses_no_finished_event(tmp_path):
    """SIGKILL the writer at several moments (while it writes events and folds: it folds
    every 50 ms); every event it had finished is read back, each trial exactly once."""
    for attempt, after in enumerate((1, 37, 120, 251, 399)):
        folder = tmp_path / f"run{attempt}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        finished: dict[str, str] = {}
        for line in proc.stdout:  # kill it just after its ``after``-th event returned
            status, tid = line.split()
            finished[tid] = status
            if len(finished) >= after and status == "started":
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        rows = read_trials(str(folder)).to_pylist()
        ids = [r["trial_id"] for r in rows]
        assert len(ids) == len(set(ids))
        found = {r["trial_id"]: r["status"] for r in rows}
        for tid, status in finished.items():
            expected = ("completed",) if status == "completed" else ("running", "completed")
            assert found.get(tid) in expected, (after, tid, status, found.get(tid))
        reloaded = ResultsLedger(str(folder), "s", VERSIONS)  # the next driver
        assert {t: r["status"] for t, r in reloaded.rows.items()} == found
