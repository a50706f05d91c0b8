"""Helpers of the fault, bad-input and load tests: reading a sweep while it runs, killing its
driver, watching for writes (inotify), sampling a process's memory, listening sockets.

Built on ``tests.service.harness`` (per-test RAY_TMPDIR, ``qsweep`` in sessions of its own,
``kill_session``); nothing here mocks qsweep, Ray or the filesystem.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.service.harness import kill_session, read_state, session_pids  # noqa: F401 (re-exported)

TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # contract.storage._write_atomic's temp files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_state(sweep_dir: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    try:
        return read_state(sweep_dir)
    except (OSError, pa.ArrowInvalid):  # a file is being replaced right now
        return {}, {}


def temp_files(sweep_dir: Path) -> list[Path]:
    """The writer's hidden temp files in the sweep folder and its curves and diagnostics folders."""
    found = []
    for directory in (sweep_dir, sweep_dir / "curves", sweep_dir / "diagnostics"):
        if directory.is_dir():
            found += [p for p in directory.iterdir() if TEMP_NAME.fullmatch(p.name)]
    return sorted(found)


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    driver: subprocess.Popen | None = None,
    log: Path | None = None,
    every: float = 0.05,
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail if ``driver`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(
                f"the driver ended (exit {driver.returncode}) before {what}:\n{tail}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def kill_driver(driver: subprocess.Popen) -> None:
    """SIGKILL a ``qsweep`` started by ``Qsweep.start``: its process group (driver, GCS,
    raylet) at once, then whatever else of its session remains (Ray's workers)."""
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    kill_session(driver.pid)
    assert session_pids(driver.pid) == []


def check_every_trial_once(
    sweep_dir: Path, planned: dict[str, dict], num_evals: int, steps: int
) -> dict[str, dict]:
    """Every planned trial completed, exactly one row each, and every curve exactly
    ``num_evals + 1`` rows with unique, increasing steps ending at ``steps``. Returns the rows."""
    table = pq.read_table(sweep_dir / "trials.parquet")
    rows, curves = read_state(sweep_dir)
    assert table.num_rows == len(rows) == len(planned), (
        table.num_rows,
        sorted(rows),
        sorted(planned),
    )
    assert rows.keys() == planned.keys() == curves.keys()
    assert {t: r["status"] for t, r in rows.items()} == dict.fromkeys(planned, "completed"), {
        t: (r["status"], (r["error"] or "")[-300:])
        for t, r in rows.items()
        if r["status"] != "completed"
    }
    for tid, curve in curves.items():
        got = [r["step"] for r in curve]
        assert len(got) == len(set(got)) == num_evals + 1, (
            tid,
            got,
        )  # no lost and no duplicate row
        assert got == sorted(got) and got[0] == 0 and got[-1] == steps, (tid, got)
        assert rows[tid]["steps"] == steps and rows[tid]["forwards"] == curve[-1]["forwards"], tid
    return rows


# --- inotify (Linux): see a write the moment its temp file is created ------------------------

IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")


class CreateWatch:
    """inotify on some directories for created files: ``wait(match, timeout)`` returns the
    first created path whose name matches, as soon as the kernel reports it."""

    def __init__(self, *directories: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(self._libc, "inotify_init1"):
            raise OSError("no inotify here")
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._dirs: dict[int, Path] = {}
        for directory in directories:
            wd = self._libc.inotify_add_watch(self.fd, str(directory).encode(), IN_CREATE)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
            self._dirs[wd] = directory

    def wait(
        self, match: Callable[[str], bool], timeout: float, alive: Callable[[], bool]
    ) -> Path | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = (
                    data[offset + _EVENT.size : offset + _EVENT.size + length]
                    .rstrip(b"\0")
                    .decode()
                )
                offset += _EVENT.size + length
                if mask & IN_CREATE and match(name):
                    return self._dirs[wd] / name
        return None

    def close(self) -> None:
        os.close(self.fd)


# --- memory of a process -----------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Samples ``VmRSS`` (and the kernel's peak, ``VmHWM``) of one process in a thread."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []  # (monotonic time, VmRSS kB)
        self.hwm_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, hwm = _status_kb(self.pid, "VmRSS"), _status_kb(self.pid, "VmHWM")
            if rss is None:
                return  # the process is gone
            self.samples.append((time.monotonic(), rss))
            self.hwm_kb = max(self.hwm_kb, hwm or 0)
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kb(self) -> int:
        return max([self.hwm_kb, *(rss for _, rss in self.samples)])


# --- listening sockets -------------------------------------------------------------------------


def _ipv4(hex_addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hex_addr, 16)))


def _ipv6(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    return socket.inet_ntop(
        socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    )


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table, decode in (("/proc/net/tcp", _ipv4), ("/proc/net/tcp6", _ipv6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.add(decode(address))
    return found
