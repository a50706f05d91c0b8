"""The driver SIGKILLed three times — while starting, mid-sweep, and in the middle of a Parquet
write — and ``qsweep resume`` after each: every trial once, every curve row once, no temp file.

1. Start-up: ``qsweep run`` is killed (its whole session: driver, GCS, raylet, workers) once
   the spec is stored and Ray is starting, before Tune wrote ``tune/tuner.pkl``; ``resume``
   then starts the sweep afresh from the stored spec.
2. Mid-sweep: that resumed driver is killed once a trial is complete and another is
   half-way (it has checkpoints to resume from).
3. Mid-write: the next resumed driver is killed the moment inotify reports a new temp file
   of ``contract.storage``'s atomic writer (``.<name>.<random>.tmp``, created in the results
   folder before the bytes are written, fsynced and renamed over the target) — so the kill
   lands while a Parquet file is being written. A kill that still came after the rename
   (no temp file left) is retried with the next resumed driver, up to 3 times.
The last resume must remove the temp file that kill left and finish the sweep.
"""

from __future__ import annotations

import time

from service.spec_loading import load_spec
from tests.reliability.helpers import (
    TEMP_NAME,
    CreateWatch,
    check_every_trial_once,
    kill_driver,
    poll_state,
    temp_files,
    wait_for,
)
from tests.service.harness import explain, session_pids, straight_through_costs, write_spec

NUM_EVALS = 3
STEPS = 1500  # ~1 s of training per ste trial and ~3-4 s per fogzo trial on one core


def test_three_driver_kills_and_resumes_lose_and_duplicate_nothing(qsweep, tmp_path):
    spec_file = write_spec(
        tmp_path,
        "crashes",
        grid={"estimators": ["ste", "fogzo"], "bits": [2, 4, 8]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
        retries=0,
        checkpoint_every=1,
        checkpoint_min_s=0,
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    sweep_dir = tmp_path / "results" / "crashes"
    logs = iter(tmp_path / f"driver-{i}.log" for i in range(10))

    def start(*args):
        log_path = next(logs)
        log = log_path.open("w")
        return qsweep.start(
            *args, "--no-dashboard", "--num-cpus", 2, stdout=log, stderr=log
        ), log_path

    # 1. During start-up: the spec is stored and Ray is coming up (GCS or raylet started),
    #    no trial has started, and Tune has not written its state.
    driver, log = start("run", spec_file, "--results", tmp_path / "results")
    wait_for(
        lambda: (sweep_dir / "sweep.yaml").exists() and len(session_pids(driver.pid)) > 1,
        60,
        "Ray to start",
        driver,
        log,
        every=0.01,
    )
    kill_driver(driver)
    assert not (sweep_dir / "tune" / "tuner.pkl").exists()
    assert not (sweep_dir / "trials.parquet").exists() and not (sweep_dir / "curves").exists()

    # 2. Mid-sweep, in the resumed driver (which had no Tune state: it started afresh).
    driver, log = start("resume", sweep_dir)

    def one_done_one_midway():
        rows, curves = poll_state(sweep_dir)
        done = {t for t, r in rows.items() if r["status"] == "completed"}
        midway = {t for t, c in curves.items() if t not in done and 2 <= len(c) <= NUM_EVALS}
        return (done, midway) if done and midway else None

    done, midway = wait_for(
        one_done_one_midway, 240, "a trial done and another half-way", driver, log
    )
    kill_driver(driver)
    rows_before, curves_before = poll_state(sweep_dir)
    assert rows_before and len(
        [r for r in rows_before.values() if r["status"] == "completed"]
    ) < len(planned)

    # 3. Mid-write: kill on the creation of the atomic writer's temp file.
    leftover, tries = [], 0
    while not leftover:
        tries += 1
        assert tries <= 3, "three kills in a row landed after the rename; no write was interrupted"
        (sweep_dir / "curves").mkdir(exist_ok=True)
        watch = CreateWatch(sweep_dir, sweep_dir / "curves")
        try:
            driver, log = start("resume", sweep_dir)
            created = watch.wait(
                TEMP_NAME.fullmatch, 240, alive=lambda proc=driver: proc.poll() is None
            )
            assert created is not None, f"no write seen:\n{log.read_text()[-3000:]}"
            kill_driver(driver)
        finally:
            watch.close()
        leftover = temp_files(sweep_dir)
        assert all(path == created for path in leftover), (
            created,
            leftover,
        )  # at most the one being written
    rows_mid, _ = poll_state(
        sweep_dir
    )  # every file it names still reads: the old or the new version
    assert rows_mid.keys() >= rows_before.keys()

    # The last resume tidies the temp file up and finishes the sweep.
    started = time.monotonic()
    final = qsweep("resume", sweep_dir, "--no-dashboard", "--num-cpus", 2, timeout=400)
    assert final.returncode == 0, explain(final)
    print(
        f"\nfaults: 3 driver kills (+{tries - 1} mid-write retries), leftover temp file "
        f"{leftover[0].name}; final resume {time.monotonic() - started:.0f}s"
    )

    assert temp_files(sweep_dir) == [] and not leftover[0].exists()
    rows = check_every_trial_once(sweep_dir, planned, NUM_EVALS, STEPS)
    for tid, row in rows_before.items():
        if row["status"] == "completed":
            assert rows[tid] == row  # finished before a crash: final, never rewritten
    for tid in midway:
        assert rows[tid]["attempts"] >= 2  # started by one driver, finished by another
    for (
        tid,
        config,
    ) in planned.items():  # costs counted once: resumed trials end like uninterrupted ones
        assert (rows[tid]["forwards"], rows[tid]["backwards"]) == straight_through_costs(
            config, STEPS
        ), tid

    status = qsweep("status", sweep_dir)
    assert (
        f"crashes: {len(planned)} completed, 0 running, 0 failed, 0 pending of {len(planned)}; "
        f"{len(planned) * (NUM_EVALS + 1)} curve rows" in status.stdout
    ), explain(status)
