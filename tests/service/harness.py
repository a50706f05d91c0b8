"""Ray confined to the test, both in-process and under the ``qsweep`` CLI.

``loopback_ray`` sets up Ray started from the test process: loopback only, its own
RAY_TMPDIR, auth settings restored afterwards. ``Qsweep`` runs the console script in
subprocesses, each in a new session (``setsid``), so the test can end it and every Ray
process it started — GCS, raylet, workers (Ray gives workers process groups of their own,
but not sessions) — without touching anything else on the machine. Its environment
(``cli_env``) has a RAY_TMPDIR of the test's, so an embedded ``ray.init()`` never finds and
joins a cluster that something else started on this machine, and keeps Ray on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.curves import read_curves
from contract.storage import read_trials

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
VENV_BIN = str(Path(sys.executable).parent)  # where pip put the qsweep script


def short_tempdir(prefix: str) -> Path:
    """A fresh directory with a short path: Ray's Unix sockets live under RAY_TMPDIR, and a
    socket path longer than 107 bytes fails (pytest's tmp_path can be that long)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def cli_env(ray_tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no Ray address or auth settings leaked from this
    process (an in-process ``ray.init()`` sets RAY_AUTH_MODE here), Ray on loopback only."""
    env = {k: v for k, v in os.environ.items() if k not in (*AUTH_VARS, "RAY_ADDRESS")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_TMPDIR=str(ray_tmp),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([VENV_BIN, env.get("PATH", "")]),
    )
    env.update(extra)
    return env


def qsweep_command() -> list[str]:
    script = Path(VENV_BIN, "qsweep")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from service.cli import app; app()"]


def write_spec(directory: Path, name: str, **fields: Any) -> Path:
    """A tiny sweep spec (MLP on digits, 40 steps, 3 evaluations); ``fields`` replace sections."""
    spec = {
        "name": name,
        "grid": {"estimators": ["ste"]},
        "trial": {"num_evals": 3},
        "budget": {"steps": 40},
        "resources": {"cpus": 1},
        "retries": 0,
        "checkpoint_every": 1,
        "checkpoint_min_s": 0,
        **fields,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def straight_through_costs(config: dict[str, Any], steps: int) -> tuple[int, int]:
    """(forwards, backwards) a trial of ``write_spec``'s STE or FOGZO (n = 1) ends with when
    it runs straight through: a resumed trial must end with exactly these. FOGZO's ZO mix
    covers weights of at most 4 bits; at 8 bits nothing is covered and a step is plain STE."""
    mixed = config["estimator"] == "fogzo" and config["bits"] <= 4
    return (3 if mixed else 1) * steps, steps


def refresh_ray_auth_config() -> None:
    """Make this process's Ray re-read RAY_AUTH_MODE and the token (it caches both)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def loopback_ray(mp: pytest.MonkeyPatch) -> Iterator[str]:
    """Ray started from this process binds to 127.0.0.1 and keeps its files in a fresh
    RAY_TMPDIR (so ``ray.init()`` never joins a cluster started by something else here).

    Ray 2.60 replaces a 127.0.0.1 node address by the machine's address unless clusters are
    switched off; with the node address at 127.0.0.1 its servers bind to loopback only.
    The auth settings are restored afterwards: a local ``ray.init()`` writes
    RAY_AUTH_MODE=token into ``os.environ``, which would leak into every later subprocess.
    """
    ray_tmp = short_tempdir("qsr-")
    saved = {var: os.environ.get(var) for var in AUTH_VARS}
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # for the processes Ray starts
    mp.setattr("ray._private.ray_constants.ENABLE_RAY_CLUSTER", False)  # for this one
    mp.setenv("RAY_TMPDIR", str(ray_tmp))
    try:
        yield str(ray_tmp)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        refresh_ray_auth_config()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _session_of(pid: int) -> tuple[int, str] | None:
    """(session id, state) of a process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
    return int(fields[3]), fields[0]


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``; empty where there is no /proc."""
    if not os.path.isdir("/proc"):
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            info = _session_of(int(entry))
            if info is not None and info[0] == sid and info[1] != "Z":
                found.append(int(entry))
    return found


def kill_session(sid: int, timeout: float = 30.0) -> None:
    """SIGKILL every process of session ``sid`` (one we created) and wait until none is left."""
    deadline = time.monotonic() + timeout
    while pids := session_pids(sid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {pids} of session {sid} survive SIGKILL")
        time.sleep(0.1)


def _is_ray_log(line: str) -> bool:
    """Ray's own log lines start with a timestamp: ``2026-...`` (Python) or ``[2026-...`` (C++)."""
    return line.lstrip("[")[:4].isdigit()


def user_error(result: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line of a command that failed on a user mistake (exit 2): no
    traceback, nothing else on stderr but Ray's own log lines."""
    assert result.returncode == 2, explain(result)
    assert "Traceback" not in result.stdout + result.stderr, explain(result)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not _is_ray_log(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), explain(result)
    return lines[0]


class Qsweep:
    """``qsweep ...`` in subprocesses, each in a session of its own, against one RAY_TMPDIR."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._sessions: list[int] = []

    def start(
        self, *args: Any, env: dict[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen:
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            [*qsweep_command(), *map(str, args)],
            env=env or self.env,
            text=True,
            start_new_session=True,
            **popen,
        )
        self._sessions.append(proc.pid)
        return proc

    def __call__(
        self,
        *args: Any,
        timeout: float = 300,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Run to the end; returns the CompletedProcess (the test checks the exit code)."""
        proc = self.start(*args, env=env, cwd=cwd)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            out, err = proc.communicate()
            raise AssertionError(
                f"qsweep {args} ran over {timeout}s\nstdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
            ) from None
        finally:
            kill_session(proc.pid)  # nothing of a finished command may linger
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self) -> None:
        """End whatever a command left running (the fixture that made ray_tmp removes it)."""
        for sid in self._sessions:
            kill_session(sid)


def explain(result: subprocess.CompletedProcess) -> str:
    """Assertion message: the tail of what a command printed."""
    return (
        f"exit {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\n"
        f"stderr:\n{result.stderr[-4000:]}"
    )


def read_state(sweep_dir: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """(trial rows by id, curve rows by trial id) as the files are now; missing files read empty.
    Raises OSError / ArrowInvalid while a file is being replaced (callers polling retry)."""
    # the trials table with its event journal's changes (contract.journal)
    rows = {r["trial_id"]: r for r in read_trials(str(sweep_dir)).to_pylist()}
    curves: dict[str, list[dict]] = {}
    for row in read_curves(str(sweep_dir)).to_pylist():  # flat files and compacted alike
        curves.setdefault(row["trial_id"], []).append(row)
    return rows, curves
