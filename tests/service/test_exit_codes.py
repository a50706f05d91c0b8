"""Exit codes a script can trust, through the ``qsweep`` CLI with real (embedded) Ray:
0 when every planned trial completed, 1 when some failed (after the Parquet and the report
are written; 0 with ``--allow-failures``), 2 on bad input. ``resume`` counts the trials of
earlier drivers from trials.parquet. Plus ``submit --wait`` against a stub job server."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service import cli, jobs
from service.spec_loading import load_spec
from tests.service.harness import explain, user_error, write_spec

RUN = ("--no-dashboard", "--num-cpus", 2)
DIVERGED = re.compile(r"nspsa: training loss became (nan|inf) at step \d+")


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def final(row: dict) -> tuple:
    """What resuming a finished sweep must leave as it was (a failed row's NaN loss != NaN)."""
    return row["status"], row["error"], row["attempts"], row["started_at"], row["finished_at"]


def test_a_sweep_whose_trials_all_complete_exits_0(qsweep, tmp_path):
    spec_file = write_spec(tmp_path, "fine", grid={"estimators": ["ste"], "seeds": [0, 1]})
    run = qsweep("run", spec_file, "--results", tmp_path / "results", *RUN)
    assert run.returncode == 0, explain(run)
    assert last_line(run.stdout) == "all 2 trials completed; exit 0", explain(run)
    rows = pq.read_table(tmp_path / "results" / "fine" / "trials.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == ["completed", "completed"]


def test_failed_trials_exit_1_after_everything_is_written_and_allow_failures_exits_0(
    qsweep, tmp_path
):
    """nspsa at lr 1e30 diverges at once (TrialDiverged: deterministic, never retried)."""
    spec_file = write_spec(
        tmp_path,
        "bad",
        grid={"estimators": ["ste", "nspsa"]},
        estimators={"nspsa": {"lr": 1e30}},
    )
    planned = {t.config["estimator"]: t.trial_id for t in load_spec(spec_file).trials}
    sweep_dir = tmp_path / "results" / "bad"

    run = qsweep("run", spec_file, "--results", tmp_path / "results", *RUN)
    assert run.returncode == 1, explain(run)
    assert "failed unexpectedly" not in run.stderr, explain(run)  # no crash line
    rows = {r["trial_id"]: r for r in pq.read_table(sweep_dir / "trials.parquet").to_pylist()}
    assert rows.keys() == set(planned.values())  # every row written before the exit
    assert rows[planned["ste"]]["status"] == "completed"
    failed = rows[planned["nspsa"]]
    assert failed["status"] == "failed" and DIVERGED.fullmatch(failed["error"]), failed
    assert f"failed: {planned['nspsa']}: {failed['error']}" in run.stdout, explain(run)
    assert (sweep_dir / "report.html").is_file(), explain(run)
    assert last_line(run.stdout) == "1 of 2 trials failed; exit 1 (--allow-failures exits 0)", (
        explain(run)
    )

    # resume counts the earlier driver's failed trial: still 1, or 0 when failures are allowed
    resumed = qsweep("resume", sweep_dir, *RUN)
    assert resumed.returncode == 1, explain(resumed)
    assert last_line(resumed.stdout) == "1 of 2 trials failed; exit 1 (--allow-failures exits 0)"
    allowed = qsweep("resume", sweep_dir, "--allow-failures", *RUN)
    assert allowed.returncode == 0, explain(allowed)
    assert last_line(allowed.stdout) == "1 of 2 trials failed; exit 0 (--allow-failures)"
    after = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert {r["trial_id"]: final(r) for r in after} == {t: final(r) for t, r in rows.items()}

    # run --allow-failures: the same sweep again (over the old one), exit 0
    again = qsweep(
        "run", spec_file, "--results", tmp_path / "results", "--overwrite", "--allow-failures", *RUN
    )
    assert again.returncode == 0, explain(again)
    assert f"failed: {planned['nspsa']}: " in again.stdout, explain(again)
    assert last_line(again.stdout) == "1 of 2 trials failed; exit 0 (--allow-failures)"
    statuses = {
        r["trial_id"]: r["status"] for r in pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    }
    assert statuses == {planned["ste"]: "completed", planned["nspsa"]: "failed"}


@pytest.mark.parametrize("command", ["run", "resume"])
def test_bad_input_exits_2_in_one_line(qsweep, tmp_path, command):
    if command == "run":
        spec_file = write_spec(tmp_path, "typo", grid={"estimators": ["no_such_estimator"]})
        error = user_error(qsweep("run", spec_file, "--allow-failures", *RUN))
        assert "no_such_estimator" in error
        assert not (tmp_path / "results").exists()
    else:
        error = user_error(qsweep("resume", tmp_path, "--allow-failures", *RUN))
        assert "no sweep.yaml here" in error


class StubJobServer:
    """What ``submit --wait`` reads of a job server: the job ends ``status``."""

    def __init__(self, status: str) -> None:
        self.status, self.jobs = status, []

    def submit_job(self, **job):
        self.jobs.append(job)
        return "raysubmit_1"

    def get_job_status(self, job_id):
        return type("Status", (), {"value": self.status})()

    def get_job_logs(self, job_id):
        return "1 of 2 trials failed; exit 1 (--allow-failures exits 0)"

    def get_job_info(self, job_id):  # a sweep that ran and exited 1: failed trials
        return type("Info", (), {"driver_exit_code": 1, "message": "exit code 1"})()


@pytest.mark.parametrize(
    ("status", "flags", "code"),
    [("FAILED", [], 1), ("SUCCEEDED", ["--allow-failures"], 0)],
)
def test_submit_wait_reports_a_job_whose_sweep_had_failed_trials_as_failed(
    monkeypatch, tmp_path, status, flags, code
):
    """The job's entrypoint is ``qsweep run``: its exit 1 on failed trials makes Ray's job
    FAILED, and ``--wait`` exits 1; ``--allow-failures`` travels to the job's command."""
    server = StubJobServer(status)
    monkeypatch.setattr(jobs, "connect_job_server", lambda address: server)
    spec_file = write_spec(tmp_path, "job", grid={"estimators": ["ste"]})
    result = CliRunner().invoke(
        cli.app,
        ["submit", str(spec_file), "--address", "http://h:8265", "--results", "/r", "--wait"]
        + flags,
    )
    assert result.exit_code == code, result.output
    (job,) = server.jobs
    assert job["entrypoint"].endswith(" --allow-failures") == bool(flags), job["entrypoint"]
    if status == "FAILED":
        assert "job raysubmit_1 ended: FAILED (the sweep exited non-zero" in result.output
