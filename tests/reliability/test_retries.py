"""What is retried (issue 14): a divergence fails once, a killed worker is retried.

One real sweep through the qsweep CLI on its embedded Ray, ``retries: 2``, one trial at a
time: nspsa at a learning rate of 1e30 diverges (``TrialDiverged``), ste trains long enough
for the test to SIGKILL its Ray worker process once, mid-run. Then ``qsweep resume
--retry-failed`` reruns the diverged trial, which fails again, once.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pyarrow.parquet as pq

from service.spec_loading import load_spec
from tests.reliability.helpers import poll_state, session_pids, wait_for
from tests.service.harness import explain, read_state, write_spec

NUM_EVALS = 4
STEPS = 4000  # ste: several seconds of training on one core, time to kill its worker mid-run
DIVERGED = re.compile(r"nspsa: training loss became (nan|inf|-inf) at step \d+")


def trial_worker(sid: int, planned_id: str) -> int | None:
    """The pid of the Ray worker of session ``sid`` running Tune's trainable for
    ``planned_id`` (Tune runs it in that trial's working directory, whose name holds its config)."""
    for pid in session_pids(sid):
        try:
            title = (
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            )
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if title.startswith("ray::ImplicitFunc") and planned_id in cwd:
            return pid
    return None


def tune_trials(sweep_dir: Path) -> dict[str, tuple[str, int]]:
    """planned id -> (Tune status, Tune's failure count) from Tune's newest experiment state."""
    newest = sorted((sweep_dir / "tune").glob("experiment_state-*.json"))[-1]
    found = {}
    for trial_json, metadata_json in json.loads(newest.read_text())["trial_data"]:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        found[trial["config"]["planned_id"]] = (trial["status"], metadata["num_failures"])
    return found


def test_a_divergence_fails_once_and_a_killed_worker_is_retried(qsweep, tmp_path):
    spec_file = write_spec(
        tmp_path,
        "once",
        grid={"estimators": ["ste", "nspsa"]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
        estimators={"nspsa": {"lr": 1e30}},
        retries=2,
        checkpoint_every=1,
        checkpoint_min_s=0,
        max_concurrent=1,
    )
    planned = {t.config["estimator"]: t.trial_id for t in load_spec(spec_file).trials}
    sweep_dir = tmp_path / "results" / "once"
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
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
        # Kill ste's worker once it has reported (and checkpointed) its first evaluation.
        wait_for(
            lambda: len(poll_state(sweep_dir)[1].get(planned["ste"], [])) >= 1,
            240,
            "ste's first evaluation",
            driver,
            log_path,
        )
        victim = wait_for(
            lambda: trial_worker(driver.pid, planned["ste"]),
            30,
            "ste's worker process",
            driver,
            log_path,
        )
        os.kill(victim, signal.SIGKILL)
        # While the retry runs, the row names the fault in one line.
        retried = wait_for(
            lambda: (
                (row := poll_state(sweep_dir)[0].get(planned["ste"]))
                and row["attempts"] == 2
                and row
            ),
            120,
            "ste's retry",
            driver,
            log_path,
        )
        # nspsa's divergence is a failed trial: exit 1 (after everything is written)
        assert driver.wait(timeout=300) == 1, log_path.read_text()[-4000:]
    assert retried["error"].startswith(f"worker died (pid {victim}"), retried["error"]
    assert "\n" not in retried["error"], retried["error"]
    assert retried["error_traceback"].startswith("The actor died unexpectedly"), retried[
        "error_traceback"
    ]
    assert f"pid: {victim}" in retried["error_traceback"]

    rows, curves = read_state(sweep_dir)
    ste, nspsa = rows[planned["ste"]], rows[planned["nspsa"]]
    # The infrastructure fault was retried from the checkpoint, and the trial completed.
    assert (ste["status"], ste["attempts"], ste["error"], ste["error_traceback"]) == (
        "completed",
        2,
        None,
        None,
    ), ste
    assert [r["step"] for r in curves[planned["ste"]]] == [
        i * STEPS // NUM_EVALS for i in range(NUM_EVALS + 1)
    ]
    # The divergence was not: one attempt, one line, the traceback beside it.
    assert (nspsa["status"], nspsa["attempts"]) == ("failed", 1), nspsa
    assert DIVERGED.fullmatch(nspsa["error"]), nspsa["error"]
    assert nspsa["error_traceback"].startswith("ray::ImplicitFunc.train()"), nspsa[
        "error_traceback"
    ][:500]
    assert (
        'trainers/trial.py", line' in nspsa["error_traceback"]
        and "in run_trial" in nspsa["error_traceback"]
    )
    assert (
        nspsa["error_traceback"]
        .rstrip()
        .endswith(f"contract.errors.TrialDiverged: {nspsa['error']}")
    )
    assert [r["step"] for r in curves[planned["nspsa"]]] == [
        0
    ]  # evaluated at step 0; the failure is no row
    assert len(pq.read_table(sweep_dir / "trials.parquet")) == 2
    # Tune's own state agrees: ERROR after one failure, no retry; ste recovered from one.
    assert tune_trials(sweep_dir) == {
        planned["ste"]: ("TERMINATED", 1),
        planned["nspsa"]: ("ERROR", 1),
    }

    status = qsweep("status", sweep_dir)
    assert status.returncode == 0, explain(status)
    assert "once: 1 completed, 0 running, 1 failed, 0 pending of 2" in status.stdout
    assert f"failed: {planned['nspsa']}: {nspsa['error']}" in status.stdout

    # --retry-failed reruns it (from its step-0 checkpoint): it diverges again, once.
    again = qsweep("resume", sweep_dir, "--retry-failed", "--no-dashboard", "--num-cpus", 2)
    assert again.returncode == 1, explain(again)  # it failed again
    rows, curves = read_state(sweep_dir)
    assert rows[planned["ste"]] == ste  # completed rows are final
    rerun = rows[planned["nspsa"]]
    assert (rerun["status"], rerun["attempts"], rerun["error"]) == ("failed", 2, nspsa["error"]), (
        rerun
    )
    assert [r["step"] for r in curves[planned["nspsa"]]] == [0]
    assert tune_trials(sweep_dir)[planned["nspsa"]] == ("ERROR", 2)
