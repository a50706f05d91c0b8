"""Ray nodes started with ``ray start``, as a user starts them on several machines, inside a
network namespace of the test's own that has only a loopback interface.

Nothing the nodes open is reachable from outside the namespace, so the tests may use Ray's
default ports and several nodes, exactly as docs/cluster.md and the manifests in docker/
write them. Each ``ray start`` and command runs in a session of its own, which
``LocalCluster.close`` ends (Ray's daemons included).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.service.harness import cli_env, explain, kill_session, short_tempdir


class Namespace:
    """A network namespace with only a loopback interface, held open by a sleeping process
    of ours; ``argv()`` prefixes a command so that it runs inside it."""

    def __init__(self) -> None:
        ip, unshare, nsenter = (
            shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin")
            for t in ("ip", "unshare", "nsenter")
        )
        if not (ip and unshare and nsenter):
            pytest.skip("needs ip, unshare and nsenter (util-linux, iproute2)")
        if os.geteuid() != 0:
            pytest.skip("needs root to make a network namespace (unshare --net)")
        self.holder = subprocess.Popen(
            [unshare, "--net", "sh", "-c", f"{ip} link set lo up && echo up && exec sleep 100000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        if self.holder.stdout.readline().strip() != "up":
            self.close()
            pytest.skip(f"cannot make a network namespace: {self.holder.stderr.read().strip()}")
        self.prefix = [nsenter, f"--net=/proc/{self.holder.pid}/ns/net", "--"]
        probe = subprocess.run(
            self.argv(
                [
                    sys.executable,
                    "-c",
                    "import socket; print(socket.gethostbyname(socket.gethostname()))",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if not probe.stdout.startswith("127."):
            self.close()
            pytest.skip(
                f"this host's name resolves to {probe.stdout.strip() or probe.stderr.strip()!r}, "
                "not to loopback: Ray would take that for the node address, which this namespace "
                "lacks"
            )

    def argv(self, argv: list[str]) -> list[str]:
        return [*self.prefix, *argv]

    def close(self) -> None:
        kill_session(self.holder.pid)
        self.holder.wait()


@dataclass
class LocalCluster:
    ns: Namespace
    token_file: Path
    client_env: dict[str, str]  # a user's shell on the head: the token as docs/cluster.md says
    sessions: list[int] = field(default_factory=list)
    tempdirs: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def node_env(self, extra: dict[str, str]) -> dict[str, str]:
        """Each node is a machine of its own: its own RAY_TMPDIR (session and runtime-env
        folders); clusters on (the default on Linux), in the namespace where only loopback
        exists."""
        tmp = short_tempdir("qsd-")
        self.tempdirs.append(tmp)
        return {
            **self.client_env,
            **extra,
            "RAY_TMPDIR": str(tmp),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        }

    def start(
        self, argv: list[str], env: dict[str, str], own_temp_dir: bool = True
    ) -> subprocess.Popen:
        """``ray start ...`` with ``--temp-dir`` of the node's own: a worker node otherwise
        takes the head's temp dir from the GCS, and nodes sharing one session folder on one
        machine share its runtime-env folder (separate machines never do). ``own_temp_dir=False``
        starts a worker as docs/cluster.md's command does on the head's machine: in the head's
        folder."""
        log = Path(env["RAY_TMPDIR"], "start.log")
        self.logs.append(log)
        if own_temp_dir:
            argv = [*argv, "--temp-dir", env["RAY_TMPDIR"]]
        proc = subprocess.Popen(
            self.ns.argv(argv),
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # `ray start` daemons stay in this session
        self.sessions.append(proc.pid)
        return proc

    def run(
        self, argv: list[str], timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(
            self.ns.argv(argv),
            env=env or self.client_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.sessions.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            out, err = proc.communicate()
            raise AssertionError(
                f"{shlex.join(argv)} ran over {timeout}s\n"
                f"{out[-3000:]}\n{err[-3000:]}\n{self.log_tail()}"
            ) from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {log}:\n{log.read_text()[-2000:]}" for log in self.logs if log.exists()
        )

    def close(self) -> None:
        for sid in self.sessions:
            kill_session(sid)
        for tmp in self.tempdirs:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with ExitStack() as stack:
        ns = Namespace()
        stack.callback(ns.close)
        token_file = tmp_path / "ray_auth_token"  # as docs/cluster.md makes it
        token_file.write_text(secrets.token_hex(32))
        client = cli_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
        client.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        cluster = LocalCluster(ns, token_file, client)
        stack.callback(cluster.close)
        yield cluster


WAIT_FOR_NODES = """
import json, sys, time, urllib.error, urllib.request
import ray
from ray.util.state import list_nodes
want, deadline = int(sys.argv[1]), time.monotonic() + 120
while True:  # the job server asks for the token (the manifests turn token auth on)
    try:
        urllib.request.urlopen("http://127.0.0.1:%s/api/jobs/" % sys.argv[2], timeout=10)
        unauthenticated = 200
        break
    except urllib.error.HTTPError as err:
        unauthenticated = err.code
        break
    except OSError:  # the head is still starting
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
while True:
    nodes = [n for n in list_nodes(address="http://127.0.0.1:%s" % sys.argv[2]) \
if n.state == "ALIVE"]
    if len(nodes) >= want or time.monotonic() > deadline:
        break
    time.sleep(1)
print(json.dumps({"unauthenticated": unauthenticated,
                  "nodes": [{"id": n.node_id, "head": n.is_head_node, "ip": n.node_ip,
                             "cpus": n.resources_total.get("CPU", 0)} for n in nodes]}))
"""


def wait_for_nodes(cluster: LocalCluster, count: int, dashboard_port: str) -> dict[str, Any]:
    result = cluster.run(
        [sys.executable, "-c", WAIT_FOR_NODES, str(count), dashboard_port], timeout=180
    )
    assert result.returncode == 0, explain(result) + cluster.log_tail()
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(info["nodes"]) == count, (info, cluster.log_tail())
    return info
