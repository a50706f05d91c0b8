"""Storage faults: a results location that fills up mid-sweep, two sweeps sharing one results
root, and a sweep name that exists already.

Tests run as root here, where a read-only ``chmod`` blocks nothing; the full disk is real
instead: a 300 KB tmpfs mounted as the results root (``mount -t tmpfs -o size=300k``),
skipped only where mounting is not permitted. Once it is full the sweep stops with one
line, what it wrote stays readable, and after the tmpfs is grown (``remount,size=``)
``qsweep resume`` finishes the sweep with nothing lost or duplicated.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.load import combine, load_results
from service.spec_loading import load_spec
from service.tuner import tune_state_exists
from tests.reliability.helpers import (
    check_every_trial_once,
    kill_driver,
    poll_state,
    read_state,
    temp_files,
    wait_for,
)
from tests.service.conftest import local_qsweep
from tests.service.harness import explain, short_tempdir, user_error, write_spec

NUM_EVALS, STEPS = 3, 40


@pytest.fixture
def tiny_filesystem():
    mount_point = short_tempdir("qsfull-")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        shutil.rmtree(mount_point, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {(mounted.stderr or mounted.stdout).strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        shutil.rmtree(mount_point, ignore_errors=True)


def test_a_full_disk_stops_the_sweep_with_one_line_and_what_was_written_stays_valid(
    qsweep, tmp_path, tiny_filesystem
):
    seeds = list(range(24))  # Tune's files and the Parquet of 24 trials need well over 300 KB
    spec_file = write_spec(
        tmp_path,
        "full",
        grid={"estimators": ["ste"], "seeds": seeds},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
        retries=0,
        checkpoint_every=0,
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    sweep_dir = tiny_filesystem / "full"
    run = qsweep(
        "run",
        spec_file,
        "--results",
        tiny_filesystem,
        "--no-dashboard",
        "--num-cpus",
        2,
        timeout=400,
    )
    error = user_error(run)
    assert error.startswith(
        f"error: cannot write results to {sweep_dir}: No space left on device ("
    ), error
    assert f"`qsweep resume {sweep_dir}` continues" in error

    # What was written is complete and consistent: analysis reads it, completed trials have
    # their whole curve, and the interrupted sweep did not get to the end.
    results = load_results(str(sweep_dir))
    statuses = results.trials["status"].value_counts().to_dict()
    completed = set(results.trials.loc[results.trials["status"] == "completed", "trial_id"])
    assert 0 < len(completed) < len(planned), statuses
    assert not results.curves.duplicated(["trial_id", "step"]).any()
    rows, curves = read_state(sweep_dir)
    for tid in completed:
        assert [r["step"] for r in curves[tid]][-1] == STEPS and rows[tid]["steps"] == STEPS
    assert temp_files(sweep_dir) == []  # a failed write removes its temp file
    status = qsweep("status", sweep_dir)
    assert status.returncode == 0 and f"{len(completed)} completed" in status.stdout, explain(
        status
    )

    # Room again: resume finishes the sweep, nothing lost, nothing twice, finished rows untouched.
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_filesystem)], check=True)
    resumed = qsweep("resume", sweep_dir, "--no-dashboard", "--num-cpus", 2, timeout=400)
    assert resumed.returncode == 0, explain(resumed)
    final = check_every_trial_once(sweep_dir, planned, NUM_EVALS, STEPS)
    for tid in completed:
        assert final[tid] == rows[tid]
    print(
        f"\nfull disk: stopped with {len(completed)}/{len(planned)} completed ({statuses}); "
        f"resume completed {len(final)}/{len(planned)}"
    )


def test_resume_without_a_readable_tune_snapshot_starts_the_rest_afresh(qsweep, tmp_path):
    """The disk filled (or the driver died) after Tune wrote ``tuner.pkl`` but before a whole
    experiment snapshot: Tune cannot restore that (``tuner.pkl`` does not hold the search
    space; restoring it used to run one trial with an empty config and crash the driver with
    KeyError 'planned_id'). ``resume`` -- given a relative path, as users type it -- runs the
    trials the Parquet does not record as finished, each once."""
    spec_file = write_spec(
        tmp_path,
        "torn",
        grid={"estimators": ["ste", "fogzo"], "seeds": [0, 1, 2]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": 1500},
        retries=0,
        checkpoint_every=1,
        checkpoint_min_s=0,
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    sweep_dir = tmp_path / "results" / "torn"
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = qsweep.start(
            "run",
            spec_file,
            "--results",
            tmp_path / "results",
            "--no-dashboard",
            "--num-cpus",
            2,
            stdout=out,
            stderr=out,
        )
        done = wait_for(
            lambda: {t for t, r in poll_state(sweep_dir)[0].items() if r["status"] == "completed"},
            240,
            "a completed trial",
            driver,
            log,
        )
        kill_driver(driver)
    rows_before, _ = read_state(sweep_dir)
    assert len(done) < len(planned), "the sweep finished before the kill"
    assert tune_state_exists(str(sweep_dir))
    for snapshot in (sweep_dir / "tune").glob("experiment_state-*.json"):  # torn mid-write
        snapshot.write_bytes(snapshot.read_bytes()[:100])
    assert not tune_state_exists(str(sweep_dir))

    resumed = qsweep(
        "resume", "results/torn", "--no-dashboard", "--num-cpus", 2, timeout=400, cwd=tmp_path
    )
    assert resumed.returncode == 0, explain(resumed)
    assert "Traceback" not in resumed.stderr, explain(resumed)
    rows = check_every_trial_once(sweep_dir, planned, NUM_EVALS, 1500)
    for tid in done:
        assert rows[tid] == rows_before[tid]  # finished before the kill: not run again


@pytest.mark.slow  # two whole sweeps at once: keeps the default suite near 15 min
def test_two_sweeps_sharing_a_results_root_run_at_once_without_mixing(qsweep, tmp_path):
    """Same grid (so the same trial ids), two names, two drivers with their own Ray, at once."""
    root = tmp_path / "shared"
    specs = {
        name: write_spec(
            tmp_path,
            name,
            grid={"estimators": ["ste", "fogzo"], "seeds": [0, 1]},
            trial={"num_evals": NUM_EVALS},
            budget={"steps": STEPS},
        )
        for name in ("left", "right")
    }
    planned = {t.trial_id: t.config for t in load_spec(specs["left"]).trials}
    assert planned.keys() == {t.trial_id for t in load_spec(specs["right"]).trials}
    with local_qsweep() as other:
        drivers = {
            "left": qsweep.start(
                "run", specs["left"], "--results", root, "--no-dashboard", "--num-cpus", 1
            ),
            "right": other.start(
                "run", specs["right"], "--results", root, "--no-dashboard", "--num-cpus", 1
            ),
        }
        for driver in drivers.values():
            out, err = driver.communicate(timeout=400)
            assert driver.returncode == 0, explain(
                subprocess.CompletedProcess(driver.args, driver.returncode, out, err)
            )

    assert sorted(p.name for p in root.iterdir()) == ["left", "right"]
    for name in ("left", "right"):
        rows = check_every_trial_once(root / name, planned, NUM_EVALS, STEPS)
        assert {r["sweep"] for r in rows.values()} == {name}
        curves = pq.read_table(root / name / "curves")
        assert set(curves.column("sweep").to_pylist()) == {name} and curves.num_rows == len(
            planned
        ) * (NUM_EVALS + 1)
        trial_dirs = list((root / name / "tune").glob("train_one_*"))
        assert len(trial_dirs) == len(planned)
        assert (
            list((root / name / "tune").glob("*/checkpoint_*")) == []
        )  # finished trials keep none
    both = combine([load_results(str(root / "left")), load_results(str(root / "right"))])
    assert len(both.trials) == 2 * len(planned) and both.trials.groupby(
        "sweep"
    ).size().to_dict() == {"left": len(planned), "right": len(planned)}

    # A name that exists already: refused in one line, nothing touched (not even the other
    # sweep) ...
    snapshot = {p: p.read_bytes() for p in root.rglob("*.parquet")}
    again = qsweep("run", specs["left"], "--results", root, "--no-dashboard", "--num-cpus", 2)
    assert user_error(again) == (
        f"error: {root / 'left'} already holds a sweep: `qsweep resume {root / 'left'}` "
        f"continues it, --overwrite starts over"
    )
    assert {p: p.read_bytes() for p in root.rglob("*.parquet")} == snapshot
    # ... unless --overwrite: that sweep starts over, its neighbour stays as it was.
    started = time.time()
    over = qsweep(
        "run", specs["left"], "--results", root, "--overwrite", "--no-dashboard", "--num-cpus", 2
    )
    assert over.returncode == 0, explain(over)
    rows = check_every_trial_once(root / "left", planned, NUM_EVALS, STEPS)
    assert all(
        r["started_at"].timestamp() >= started - 1 and r["attempts"] == 1 for r in rows.values()
    )
    assert {p: p.read_bytes() for p in (root / "right").rglob("*.parquet")} == {
        p: b for p, b in snapshot.items() if Path(p).is_relative_to(root / "right")
    }
