"""What every section shares: the measurement types it returns and interleaved ratio timing.

A section measures; it does not interpret. It returns ``Section``: tables of numbers and the
bars it checked. The interpretation is written by hand in BENCHMARKS.md next to the
generated tables, so it is reread (and rewritten) when the numbers change.

Every wall-clock number is a *ratio* of two things timed side by side, repeated with the
order alternating (A B, B A, ...) so a load change on the shared machine hits both, and
reported as the median with the min-max over the repetitions.
"""

from __future__ import annotations

import cProfile
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class Bar:
    """One pass/fail line of the summary: ``value`` compared with ``limit`` (``<=`` or ``>=``)."""

    name: str
    value: float
    limit: float
    op: str = "<="

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit


@dataclass
class Table:
    caption: str
    header: Sequence[str]
    rows: list[Sequence[Any]]

    def markdown(self) -> str:
        lines = [f"**{self.caption}**", "", "| " + " | ".join(self.header) + " |"]
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """What a section's ``run`` returns: its tables, the bars it checked, and its raw
    measurements (numbers by name, kept as JSON in the block for the hand-written text)."""

    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Ratio:
    """Per-repetition ratios ``a / b`` (and the raw seconds of each side)."""

    ratios: list[float]
    a: list[float]
    b: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else math.nan

    def fmt(self, digits: int = 2) -> str:
        """``1.23 (1.20–1.31)``: median, then min–max over the repetitions."""
        if not self.ratios:
            return "—"
        lo, hi = min(self.ratios), max(self.ratios)
        return f"{self.median:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ratio(
    a: Callable[[], Any],
    b: Callable[[], Any],
    reps: int,
    warmup: int = 1,
    b_scale: float = 1.0,
    min_time: float = 0.2,
) -> Ratio:
    """Time ``a`` and ``b`` ``reps`` times each, interleaved with alternating order.

    Each timing repeats its callable until it lasts about ``min_time`` (calibrated on the
    warm-up), so sub-millisecond steps are not at the mercy of one scheduler tick.
    ``b_scale`` multiplies b's per-call time (b = one forward, scale = 2n forwards).
    """
    inner_a = inner_b = 1
    for _ in range(warmup):
        inner_a = max(1, math.ceil(min_time / max(timed(a), 1e-9)))
        inner_b = max(1, math.ceil(min_time / max(timed(b), 1e-9)))

    def per_call(fn: Callable[[], Any], inner: int) -> float:
        started = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - started) / inner

    ra, rb = [], []
    for rep in range(reps):
        if rep % 2 == 0:
            ta, tb = per_call(a, inner_a), per_call(b, inner_b)
        else:
            tb, ta = per_call(b, inner_b), per_call(a, inner_a)
        ra.append(ta)
        rb.append(tb * b_scale)
    return Ratio([x / y for x, y in zip(ra, rb)], ra, rb)


def run_json_worker(
    args: Sequence[str], mark: str, what: str, timeout: float = 1200, **popen: Any
) -> tuple[dict[str, Any], float]:
    """Run ``python -m <args>`` in a fresh process; (the JSON of its last ``mark`` line, its
    wall seconds). A worker that fails or prints no such line raises, naming it."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, **popen
    )
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith(mark)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(mark) :]), wall


def fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def profile_table(caption: str, fn: Callable[[], Any], top: int = 10) -> Table:
    """Where ``fn``'s wall time goes: its ``top`` functions by cumulative time (cProfile)."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats
    total = max((v[3] for v in stats.values()), default=1.0) or 1.0
    rows = [
        [f"`{name}` ({_short_path(path)}:{line})", ncalls, f"{own * 1e3:.1f}", f"{cum / total:.0%}"]
        for (path, line, name), (_, ncalls, own, cum, _) in sorted(
            stats.items(), key=lambda kv: kv[1][3], reverse=True
        )[:top]
    ]
    return Table(caption, ["function", "calls", "own ms", "share of wall"], rows)


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.relpath(path, here) if path.startswith(here) else os.path.basename(path)


def machine_info() -> dict[str, str]:
    import pyarrow
    import ray
    import torch

    cpu = platform.processor() or "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "load average at start (1/5/15 min)": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
    }


def to_json(section: Section) -> str:
    """The section's bars and measurements as one line of JSON (kept hidden in its block)."""
    return json.dumps(
        {"bars": [asdict(b) for b in section.bars], "measurements": section.measurements},
        default=float,
        ensure_ascii=False,
    )


def bars_from_json(text: str) -> list[Bar]:
    return [Bar(**bar) for bar in json.loads(text)["bars"]]
