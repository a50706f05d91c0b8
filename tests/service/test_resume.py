"""A driver killed mid-sweep, then ``qsweep resume``: every trial once, no lost or duplicate rows.

``qsweep run`` starts its own embedded Ray in a session of its own; the test SIGKILLs that
whole session (driver, GCS, raylet, workers) while one trial is done and others are running
or pending, checks nothing of it survives, and resumes with a fresh embedded Ray.
"""

from __future__ import annotations

import os
import signal
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from service.spec_loading import load_spec
from tests.service.harness import (
    explain,
    kill_session,
    read_state,
    session_pids,
    straight_through_costs,
    write_spec,
)
from trainers import run_trial

NUM_EVALS = 3
STEPS = 1500  # ~1 s of training per ste trial and ~3-4 s per fogzo trial on one core


def test_a_killed_sweep_resumes_with_every_trial_once_and_no_duplicate_rows(qsweep, tmp_path):
    spec_file = write_spec(
        tmp_path,
        "crash",
        grid={"estimators": ["ste", "fogzo"], "bits": [2, 4, 8]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
        retries=0,
        checkpoint_every=1,
        checkpoint_min_s=0,
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    sweep_dir = tmp_path / "results" / "crash"
    log = (tmp_path / "first-driver.log").open("w")
    driver = qsweep.start(
        "run",
        spec_file,
        "--results",
        tmp_path / "results",
        "--no-dashboard",
        "--num-cpus",
        2,
        stdout=log,
        stderr=log,
    )

    # Kill once one trial is complete and another has reported past step 0 (so it has a
    # checkpoint to resume from) but is not complete.
    deadline = time.monotonic() + 240
    while True:
        assert driver.poll() is None, (
            "the sweep ended before it could be killed:\n"
            f"{(tmp_path / 'first-driver.log').read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, "no trial completed in time"
        try:
            rows, curves = read_state(sweep_dir)
        except (OSError, pa.ArrowInvalid):  # a file is being replaced right now
            rows, curves = {}, {}
        done = {t for t, r in rows.items() if r["status"] == "completed"}
        # Past step 0 but not yet at its last evaluation: it cannot finish before the kill lands.
        midway = {
            t for t, curve in curves.items() if t not in done and 2 <= len(curve) <= NUM_EVALS
        }
        if done and midway:
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver's process group: the driver, GCS, raylet
    driver.wait()
    kill_session(driver.pid)  # Ray's workers have process groups of their own, in the same session
    assert session_pids(driver.pid) == []
    log.close()

    rows_before, curves_before = read_state(sweep_dir)
    done_before = {t: r for t, r in rows_before.items() if r["status"] == "completed"}
    assert done_before and len(done_before) < len(planned), rows_before
    interrupted = {
        t for t, curve in curves_before.items() if t not in done_before and len(curve) >= 2
    }
    assert interrupted

    resumed = qsweep("resume", sweep_dir, "--no-dashboard", "--num-cpus", 2)
    assert resumed.returncode == 0, explain(resumed)

    rows, curves = read_state(sweep_dir)
    assert rows.keys() == planned.keys() == curves.keys()  # every planned trial, exactly once
    assert pq.read_table(sweep_dir / "trials.parquet").num_rows == len(planned)
    assert {t: r["status"] for t, r in rows.items()} == dict.fromkeys(planned, "completed")
    for tid, row in done_before.items():
        assert rows[tid] == row  # finished before the crash: final, never rewritten
    for tid in interrupted:
        assert rows[tid]["attempts"] == 2  # started by the first driver, finished by the second

    for tid, curve in curves.items():
        steps = [r["step"] for r in curve]
        assert len(steps) == len(set(steps)) == NUM_EVALS + 1, (
            tid,
            steps,
        )  # no duplicate (trial_id, step)
        assert steps[0] == 0 and steps[-1] == STEPS and steps == sorted(steps)
        forwards = [r["forwards"] for r in curve]
        assert forwards == sorted(forwards) and forwards[-1] == rows[tid]["forwards"], tid
        assert (
            rows[tid]["steps"] == STEPS and rows[tid]["final_eval_loss"] == curve[-1]["eval_loss"]
        )
    # Costs are counted once: a resumed trial ends with the counts of one that ran straight through.
    for tid, config in planned.items():
        assert (rows[tid]["forwards"], rows[tid]["backwards"]) == straight_through_costs(
            config, STEPS
        ), tid

    # And with the same numbers: run_trial is deterministic, so an interrupted trial,
    # resumed from its checkpoint, ends where an uninterrupted run of its config ends.
    tid = sorted(interrupted)[0]
    threads = torch.get_num_threads()
    try:
        reference = run_trial({**planned[tid], "threads": 1}, lambda metrics: None)
    finally:
        torch.set_num_threads(threads)
    final = curves[tid][-1]
    assert (final["eval_loss"], final["eval_metric"]) == (
        reference["eval_loss"],
        reference["eval_metric"],
    )

    status = qsweep("status", sweep_dir)
    assert (
        f"crash: {len(planned)} completed, 0 running, 0 failed, 0 pending of {len(planned)}"
        in status.stdout
    )
