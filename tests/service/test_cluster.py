"""Several Ray nodes on one machine: ``qsweep run --address`` and ``qsweep submit`` (Ray Jobs).

The cluster (``ray.cluster_utils.Cluster``: a head with the dashboard and no CPUs, two
worker nodes with one CPU each) listens on loopback only and has Ray's token
authentication on, as a real cluster has: its token is in a file named by
RAY_AUTH_TOKEN_PATH. A client on the same machine — ``qsweep run --address``, the job
client of ``qsweep submit``, the job's own driver — sends the token only where
RAY_AUTH_MODE=token; Ray then reads it from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
``~/.ray/auth_token``. Only an embedded ``ray.init()`` (and ``ray.init()`` finding a
local cluster by itself) switches token mode on unasked; an explicit address never does.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray.cluster_utils import Cluster

from tests.nodes import local_cluster, wait_for_nodes
from tests.service.harness import (
    AUTH_VARS,
    VENV_BIN,
    Qsweep,
    cli_env,
    explain,
    loopback_ray,
    qsweep_command,
    refresh_ray_auth_config,
    user_error,
    write_spec,
)

NUM_EVALS, STEPS = 3, 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60) -> None:
    """Until the server answers at all (401 included: the job server wants its token)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


@dataclass
class LocalCluster:
    address: str  # GCS, for ray.init / qsweep run --address
    dashboard: str  # job server, for qsweep submit --address
    worker_ids: set[str]
    qsweep: Qsweep  # the CLI with the cluster's token in its environment


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as mp, loopback_ray(mp) as ray_tmp:
        token_file = Path(ray_tmp, "auth_token")
        token_file.write_text(secrets.token_hex(32))
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
        mp.delenv("RAY_AUTH_TOKEN", raising=False)
        mp.setenv(
            "PATH", os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")])
        )  # a job runs `qsweep`
        refresh_ray_auth_config()
        dashboard_port = free_port()
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": dashboard_port,
                "dashboard_agent_listen_port": free_port(),
            },
        )
        cli = None
        try:
            # One session directory serves every node here, runtime-env folder included, as when
            # docs/cluster.md's `ray start` commands run on one machine: a submitted job must not
            # depend on a package in it (Ray deletes one when the node's last worker using it
            # exits).
            workers = [cluster.add_node(num_cpus=1) for _ in (1, 2)]
            cluster.wait_for_nodes()
            dashboard = f"http://127.0.0.1:{dashboard_port}"
            wait_for_http(f"{dashboard}/api/version")
            cli = Qsweep(
                cli_env(Path(ray_tmp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
            )
            yield LocalCluster(cluster.address, dashboard, {node.node_id for node in workers}, cli)
        finally:
            if cli is not None:
                cli.close()
            cluster.shutdown()


def test_submit_with_a_relative_results_path_exits_2_with_one_line(qsweep, tmp_path):
    spec_file = write_spec(tmp_path, "rel")  # results: the default, "results"
    for extra in ([], ["--results", "sweeps/here"]):
        result = qsweep("submit", spec_file, "--address", "http://127.0.0.1:1", *extra, timeout=120)
        location = extra[-1] if extra else "results"
        assert user_error(result) == (
            f"error: results: {location!r} is relative, but a submitted sweep runs on the cluster "
            "— give an absolute path on shared storage or a URI (--results s3://bucket/sweeps)"
        )


def test_submit_to_an_unreachable_job_server_exits_2_with_one_line(qsweep, tmp_path):
    spec_file = write_spec(tmp_path, "nowhere")
    result = qsweep(
        "submit",
        spec_file,
        "--address",
        "http://127.0.0.1:1",
        "--results",
        tmp_path / "results",
        timeout=120,
    )
    assert user_error(result).startswith(
        "error: cannot reach the Ray job server at http://127.0.0.1:1: "
    )


def test_a_sweep_joining_the_cluster_runs_its_trials_on_several_nodes(cluster, tmp_path):
    spec_file = write_spec(
        tmp_path,
        "spread",
        grid={"estimators": ["ste", "fogzo"], "bits": [2, 4]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
    )
    run = cluster.qsweep(
        "run", spec_file, "--results", tmp_path / "results", "--address", cluster.address
    )
    assert run.returncode == 0, explain(run)
    rows = pq.read_table(tmp_path / "results" / "spread" / "trials.parquet").to_pylist()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    nodes = {r["node_id"] for r in rows}
    assert len(nodes) > 1 and nodes <= cluster.worker_ids, (
        nodes,
        cluster.worker_ids,
    )  # the head has no CPU
    assert {r["host"] for r in rows} == {socket.gethostname()}
    assert pq.read_table(tmp_path / "results" / "spread" / "curves").num_rows == 4 * (NUM_EVALS + 1)


def test_submit_runs_the_sweep_as_a_ray_job_and_writes_the_parquet(cluster, tmp_path):
    from ray.job_submission import JobSubmissionClient

    spec_file = write_spec(
        tmp_path,
        "job",
        grid={"estimators": ["ste"], "bits": [2, 4]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
    )
    results = tmp_path / "job results"  # a space: the job's entrypoint must quote the path
    submit = cluster.qsweep(
        "submit", spec_file, "--address", cluster.dashboard, "--results", results, "--wait"
    )
    assert submit.returncode == 0, explain(submit)
    job_id = re.search(r"^job (\S+) submitted to ", submit.stdout, re.MULTILINE).group(1)
    assert f"job {job_id} ended: SUCCEEDED" in submit.stdout
    assert (
        f"sweep job: 2 planned trials -> {results / 'job'}" in submit.stdout
    )  # the job's log, echoed

    info = JobSubmissionClient(cluster.dashboard).get_job_info(
        job_id
    )  # this process has the token too
    assert info.metadata == {"qsweep_sweep": "job"} and info.status.value == "SUCCEEDED"

    rows = pq.read_table(results / "job" / "trials.parquet").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert {r["node_id"] for r in rows} <= cluster.worker_ids
    assert pq.read_table(results / "job" / "curves").num_rows == 2 * (NUM_EVALS + 1)


def test_submit_without_the_clusters_token_exits_2_with_one_line_saying_what_to_set(
    cluster, tmp_path
):
    spec_file = write_spec(tmp_path, "noauth")
    no_auth = {k: v for k, v in cluster.qsweep.env.items() if k not in AUTH_VARS}
    wrong = {**no_auth, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}
    for env, reason in ((no_auth, "Authentication required"), (wrong, "Authentication failed")):
        result = cluster.qsweep(
            "submit",
            spec_file,
            "--address",
            cluster.dashboard,
            "--results",
            tmp_path / "results",
            env=env,
            timeout=120,
        )
        error = user_error(result)
        assert error.startswith(
            f"error: the Ray job server at {cluster.dashboard} wants its token: {reason}"
        )
        assert "export RAY_AUTH_MODE=token" in error
    assert not (tmp_path / "results").exists()


def test_submit_on_a_cluster_started_by_hand_as_the_readme_says_succeeds_exactly_once(tmp_path):
    """docs/cluster.md's "By hand" commands on one machine (a network namespace of the test's
    own): a head with ``--num-cpus 0`` and token auth, one worker started as the docs write it
    (on one host it joins the head's temp folder) and one with a folder of its own, each node a
    ``ray start --block`` with distinct agent ports. Trial workers come and go for 12 trials;
    the job must end SUCCEEDED with every row exactly once (it ended FAILED with a bare
    ``[Errno 2]`` when the driver ran inside a working_dir package that Ray deleted)."""
    with local_cluster(tmp_path) as nodes:
        head = nodes.node_env({})
        nodes.start(
            [
                "ray",
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
        wait_for_nodes(nodes, 1, "8265")  # the head is up before the workers join
        for i, own in ((1, False), (2, True)):
            nodes.start(
                [
                    "ray",
                    "start",
                    "--address",
                    "127.0.0.1:6379",
                    "--num-cpus",
                    "1",
                    "--block",
                    "--node-ip-address",
                    "127.0.0.1",
                    "--dashboard-agent-listen-port",
                    str(52400 + i),
                    "--metrics-export-port",
                    str(8090 + i),
                    "--runtime-env-agent-port",
                    str(52410 + i),
                ],
                nodes.node_env({}),
                own_temp_dir=own,
            )
        info = wait_for_nodes(nodes, 3, "8265")
        workers = {n["id"] for n in info["nodes"] if not n["head"]}
        assert info["unauthenticated"] == 401 and len(workers) == 2

        spec_file = write_spec(
            tmp_path,
            "byhand",
            grid={"estimators": ["ste", "nspsa"], "bits": [2, 4, 8], "seeds": [0, 1]},
            trial={"num_evals": 2},
            budget={"steps": 40},
        )
        results = tmp_path / "results"
        submit = nodes.run(
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
            timeout=600,
        )
        assert submit.returncode == 0, explain(submit) + nodes.log_tail()
        assert re.search(r"^job \S+ ended: SUCCEEDED$", submit.stdout, re.MULTILINE), submit.stdout[
            -3000:
        ]
        assert "[Errno" not in submit.stdout + submit.stderr

        rows = pq.read_table(results / "byhand" / "trials.parquet").to_pylist()
        assert len(rows) == 12 and len({r["trial_id"] for r in rows}) == 12
        assert {r["status"] for r in rows} == {"completed"} and {r["attempts"] for r in rows} == {1}
        assert {r["node_id"] for r in rows} <= workers  # the head has no CPU
        curves = (
            pq.read_table(results / "byhand" / "curves").select(["trial_id", "step"]).to_pylist()
        )
        assert len(curves) == 12 * 3 == len({(c["trial_id"], c["step"]) for c in curves})


def test_submit_when_the_heads_job_agent_is_missing_exits_2_with_one_line_saying_what_to_check(
    tmp_path,
):
    """The head's dashboard agent cannot bind its port (taken, as by a second node on one
    host with the default port): the job server answers 500 "No available agent". After a
    short bounded retry, one line and exit 2 — not a 40-line traceback."""
    with local_cluster(tmp_path) as nodes:
        taken = nodes.start(
            [sys.executable, "-c", PORT_HOLDER, "52365"], nodes.node_env({}), own_temp_dir=False
        )
        nodes.start(
            [
                "ray",
                "start",
                "--head",
                "--port",
                "6379",
                "--dashboard-host",
                "127.0.0.1",
                "--num-cpus",
                "1",
                "--node-ip-address",
                "127.0.0.1",
                "--block",
            ],
            nodes.node_env({}),
        )
        wait_for_nodes(nodes, 1, "8265")
        spec_file = write_spec(tmp_path, "noagent")
        env = {**nodes.client_env, "QSWEEP_SUBMIT_AGENT_WAIT_S": "3"}
        started = time.monotonic()
        submit = nodes.run(
            [
                *qsweep_command(),
                "submit",
                str(spec_file),
                "--address",
                "http://127.0.0.1:8265",
                "--results",
                str(tmp_path / "results"),
            ],
            timeout=300,
            env=env,
        )
        assert taken.poll() is None  # the port stayed taken throughout
        error = user_error(submit)
        assert error.startswith(
            "error: the Ray job server at http://127.0.0.1:8265 has no job agent available "
            "to run the job (retried for 3 s): "
        ), error
        assert "dashboard_agent.log" in error and "--dashboard-agent-listen-port" in error
        assert time.monotonic() - started < 120


PORT_HOLDER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(100000)
"""
