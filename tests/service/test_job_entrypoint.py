"""``qsweep submit --wait`` to a cluster whose head cannot start the job's ``qsweep run``.

A real head (``ray start --head``, in a network namespace of the test's own, see
``tests.nodes``) started from a shell whose PATH has no ``qsweep`` — as on a head where
qsweep was never installed; Ray itself is started by its full path. The job's entrypoint
then exits 127 in Ray's ``/bin/sh -c`` before qsweep runs, and ``submit`` must end with one
line saying so and what to install where, not blame the sweep.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ray.job_submission import JobDetails, JobStatus, JobType

from service.jobs import SWEEP_FAILED, ending_note
from tests.nodes import local_cluster, wait_for_nodes
from tests.service.harness import VENV_BIN, explain, qsweep_command, write_spec

CANNOT_START = (
    " ended: FAILED — its entrypoint `qsweep run …` could not start on the head node "
    "(exit 127: `qsweep` not found on the head's PATH): install qsweep (pip install qsweep, "
    "with the cluster's Ray and Python) in the Python environment that `ray start --head` "
    "runs in, on every node"
)


def _path_without_qsweep() -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != VENV_BIN]
    return os.pathsep.join(d for d in dirs if not Path(d, "qsweep").exists())


def test_submit_to_a_head_without_qsweep_ends_with_one_line_saying_what_to_install(tmp_path):
    with local_cluster(tmp_path) as nodes:
        head = nodes.node_env({"PATH": _path_without_qsweep()})
        nodes.start(
            [
                str(Path(VENV_BIN, "ray")),
                "start",
                "--head",
                "--port",
                "6379",
                "--dashboard-host",
                "127.0.0.1",
                "--num-cpus",
                "0",
                "--node-ip-address",
                "127.0.0.1",
                "--block",
            ],
            head,
        )
        wait_for_nodes(nodes, 1, "8265")
        spec_file = write_spec(tmp_path, "nohead")
        results = tmp_path / "results"
        submit = nodes.run(  # the user's shell: qsweep on its PATH
            [
                *qsweep_command(),
                "submit",
                str(spec_file),
                "--address",
                "http://127.0.0.1:8265",
                "--results",
                str(results),
                "--wait",
            ],
            timeout=300,
        )
        assert submit.returncode == 1, explain(submit) + nodes.log_tail()
        job_id = re.search(r"^job (\S+) submitted to ", submit.stdout, re.MULTILINE).group(1)
        lines = submit.stdout.strip().splitlines()
        assert lines[-1] == f"job {job_id}{CANNOT_START}", explain(submit)
        assert "qsweep: not found" in submit.stdout  # the job's log, echoed: the shell's words
        assert SWEEP_FAILED.strip() not in submit.stdout
        assert "Traceback" not in submit.stdout + submit.stderr
        assert not results.exists()


def _details(code: int | None, message: str) -> JobDetails:
    return JobDetails(
        type=JobType.SUBMISSION,
        job_id="02000000",
        submission_id="raysubmit_x",
        status=JobStatus.FAILED,
        entrypoint="qsweep run --spec-from-env QSWEEP_SPEC_YAML --results /r",
        message=message,
        driver_exit_code=code,
    )


def test_the_note_tells_an_entrypoint_that_could_not_start_from_a_sweep_that_failed():
    failed_trials = "Job entrypoint command failed with exit code 1, last available logs ..."
    missing = "Job entrypoint command failed with exit code 127, last available logs ..."
    assert ending_note("FAILED", _details(1, failed_trials)) == SWEEP_FAILED
    assert ending_note("FAILED", _details(None, failed_trials)) == SWEEP_FAILED
    assert ending_note("FAILED", _details(None, "Job supervisor actor died")) == SWEEP_FAILED
    for details in (_details(127, missing), _details(None, missing)):  # code, else the message
        assert " ended: FAILED" + ending_note("FAILED", details) == CANNOT_START
    assert "(exit 126: `qsweep` on the head's PATH is not executable)" in ending_note(
        "FAILED", _details(126, "Job entrypoint command failed with exit code 126. No logs.")
    )
    assert ending_note("SUCCEEDED", _details(0, "Job finished successfully.")) == ""
    assert ending_note("STOPPED", _details(None, "Job was intentionally stopped.")) == ""
