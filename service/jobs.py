"""Submit a sweep to a running Ray cluster as a Ray Job.

The job carries no files: the validated spec travels in the job's environment
(``QSWEEP_SPEC_YAML``) and its entrypoint is ``qsweep run --spec-from-env`` against the
cluster the job runs on (the cluster has qsweep installed, see docker/). A ``working_dir``
package would be the driver's current directory, and Ray deletes a package on a node as
soon as that node's last *worker* using it exits — the driver does not count — so a
driver sharing a node's runtime-env directory lost its cwd mid-sweep and the job ended
FAILED after every trial had completed.

A submitted sweep runs on the cluster, so its results must be somewhere the cluster and
the user can both reach: an absolute path on shared storage or a URI (``s3://...``).

Ray runs the entrypoint with ``/bin/sh -c`` on the head node, in the environment of the
head's ``ray start``. Where ``qsweep`` is not installed there, the shell exits 127 (126:
found but not executable) before qsweep runs; ``ending_note`` reads that exit code from
the job's info (``driver_exit_code``, else the "failed with exit code N" of its message)
and says what to install where, instead of blaming the sweep.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from service.errors import SweepError
from service.spec import SweepSpec

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
SPEC_ENV = "QSWEEP_SPEC_YAML"
NO_AGENT = "No available agent to submit job"
# The job server itself waits 10 s for an agent per request; a fresh cluster's agent may
# still be registering, so try again for a little while, then say what to check.
AGENT_WAIT_S = float(os.environ.get("QSWEEP_SUBMIT_AGENT_WAIT_S", "25"))
# POSIX shells: 127 = command not found (or its #! interpreter missing), 126 = not executable.
CANNOT_START = {
    127: "`qsweep` not found on the head's PATH",
    126: "`qsweep` on the head's PATH is not executable",
}
INSTALL_HINT = (
    "install qsweep (pip install qsweep, with the cluster's Ray and Python) in the Python "
    "environment that `ray start --head` runs in, on every node"
)
SWEEP_FAILED = " (the sweep exited non-zero: failed trials, or an error; see its log above)"


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def connect_job_server(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as err:  # Ray sends the token only where RAY_AUTH_MODE=token
        raise SweepError(
            f"the Ray job server at {address} wants its token: {_first_line(err)} "
            f"(export RAY_AUTH_MODE=token and give the cluster's token as RAY_AUTH_TOKEN, "
            f"RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
        ) from None
    except Exception as err:  # connection refused, bad URL: one line for the user
        raise SweepError(
            f"cannot reach the Ray job server at {address}: {_first_line(err)}"
        ) from None


def _submit(client, address: str, **job) -> str:
    """``client.submit_job`` with a bounded retry while the head has no job agent."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(**job)
        except (
            Exception
        ) as err:  # the SDK raises RuntimeError("Request failed with status code ...")
            if NO_AGENT not in str(err):
                raise SweepError(
                    f"submitting the job to the Ray job server at {address} failed: "
                    f"{_first_line(err)}"
                ) from None
            if time.monotonic() >= deadline:
                raise SweepError(
                    f"the Ray job server at {address} has no job agent available to run the job "
                    f"(retried for {AGENT_WAIT_S:.0f} s): check that the head's dashboard agent "
                    "is running — its log is dashboard_agent.log in the head's session logs (e.g. "
                    "/tmp/ray/session_latest/logs/); two Ray nodes on one host need distinct "
                    "--dashboard-agent-listen-port, --metrics-export-port and "
                    "--runtime-env-agent-port"
                ) from None
            time.sleep(2.0)


def _poll(address: str, what: str, call: Callable):
    try:
        return call()
    except Exception as err:
        raise SweepError(
            f"{what} from the Ray job server at {address} failed: {_first_line(err)}"
        ) from None


def exit_code(info) -> int | None:
    """The entrypoint's exit code from a job's ``JobDetails``/``JobInfo``; None if unknown."""
    code = getattr(info, "driver_exit_code", None)
    if code is None:  # older job servers: only the message has it
        found = re.search(r"failed with exit code (-?\d+)", getattr(info, "message", None) or "")
        code = int(found.group(1)) if found else None
    return code


def ending_note(status: str, info) -> str:
    """What to print after ``job X ended: STATUS``: nothing for a success; for a failure, an
    entrypoint that could not start (what to install where), or the sweep's own failure."""
    if status != "FAILED":
        return ""
    code = exit_code(info)
    if code in CANNOT_START:
        return (
            f" — its entrypoint `qsweep run …` could not start on the head node "
            f"(exit {code}: {CANNOT_START[code]}): {INSTALL_HINT}"
        )
    return SWEEP_FAILED


def submit_sweep(
    spec: SweepSpec,
    address: str,
    results: str | None,
    wait: bool,
    echo: Callable[[str], None] = print,
    allow_failures: bool = False,
) -> tuple[str, str, str]:
    """Submit ``qsweep run`` as a job; (job id, its status — terminal with ``wait`` —, and
    with ``wait`` the note ``ending_note`` gives for it). The job ends FAILED when its sweep
    had failed trials (``qsweep run`` exits 1), SUCCEEDED despite them with
    ``allow_failures``, FAILED too when the cluster cannot start ``qsweep``."""
    location = results or spec.results
    if "://" not in location and not Path(location).is_absolute():
        raise SweepError(
            f"results: {location!r} is relative, but a submitted sweep runs on the cluster — "
            f"give an absolute path on shared storage or a URI (--results s3://bucket/sweeps)"
        )
    client = connect_job_server(address)
    # The validated spec with its scale applied: the job runs exactly what was checked here.
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    job_id = _submit(
        client,
        address,
        entrypoint=f"qsweep run --spec-from-env {SPEC_ENV} --results {shlex.quote(location)}"
        + (" --allow-failures" if allow_failures else ""),
        runtime_env={"env_vars": {SPEC_ENV: spec_yaml}},
        metadata={"qsweep_sweep": spec.name},
    )
    status = _poll(
        address, f"reading job {job_id}'s status", lambda: client.get_job_status(job_id).value
    )
    if not wait:
        return job_id, status, ""
    while status not in TERMINAL:
        time.sleep(1.0)
        status = _poll(
            address, f"reading job {job_id}'s status", lambda: client.get_job_status(job_id).value
        )
    echo(_poll(address, f"reading job {job_id}'s logs", lambda: client.get_job_logs(job_id)))
    note = ""
    if status == "FAILED":
        info = _poll(address, f"reading job {job_id}'s info", lambda: client.get_job_info(job_id))
        note = ending_note(status, info)
    return job_id, status, note
