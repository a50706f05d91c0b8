"""Shared pieces of the benchmark sections: interleaved ratio timing, profiles, Markdown.

Every wall-clock number in BENCHMARKS.md is a *ratio* of two things timed side by side in
the same process, repeated with the order alternating (A B, B A, A B, ...) so that a load
change on the shared machine hits both, and reported as the median with the min-max over
the repetitions. Absolute seconds are printed only for orientation.
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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class Bar:
    """One pass/fail line of the summary: ``value`` compared with ``limit`` (``<=`` or ``>=``)."""

    name: str
    value: float
    limit: float
    op: str = "<="
    note: str = ""

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "op": self.op,
            "note": self.note,
        }


@dataclass
class Section:
    """What a section module returns: its Markdown body and the bars it checked."""

    key: str
    title: str
    body: str
    bars: list[Bar] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Ratio:
    """Median and range of per-repetition ratios ``a / b`` (plus the raw times, seconds)."""

    ratios: list[float]
    a: list[float]
    b: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else math.nan

    @property
    def lo(self) -> float:
        return min(self.ratios) if self.ratios else math.nan

    @property
    def hi(self) -> float:
        return max(self.ratios) if self.ratios else math.nan

    def fmt(self, digits: int = 2) -> str:
        """``1.23 (1.20-1.31)``: median, then min-max over the repetitions."""
        if not self.ratios:
            return "—"
        return f"{self.median:.{digits}f} ({self.lo:.{digits}f}–{self.hi:.{digits}f})"


def run_json_worker(
    args: Sequence[str], mark: str, what: str, timeout: float = 1200, **popen: Any
) -> tuple[dict[str, Any], float]:
    """Run ``python -m <args>`` in a fresh process; (the JSON of its last ``mark`` line, the
    process's wall seconds). A worker that fails or prints no such line raises, naming it."""
    import subprocess
    import sys

    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, **popen
    )
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith(mark)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(mark) :]), wall


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

    Each timing runs its callable enough times back to back to last about ``min_time``
    seconds (calibrated on the warm-up) and records the time per call, so sub-millisecond
    steps are not at the mercy of one scheduler tick. ``b_scale`` multiplies b's per-call
    time (e.g. b = one forward, scale = 2n forwards). Each repetition gives one ratio
    a / (b_scale * b) from two adjacent timings.
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

    ra, rb, rs = [], [], []
    for rep in range(reps):
        if rep % 2 == 0:
            ta, tb = per_call(a, inner_a), per_call(b, inner_b)
        else:
            tb, ta = per_call(b, inner_b), per_call(a, inner_a)
        tb *= b_scale
        ra.append(ta)
        rb.append(tb)
        rs.append(ta / tb)
    return Ratio(rs, ra, rb)


def mean_time(fn: Callable[[], Any], calls: int) -> Callable[[], None]:
    """A callable that runs ``fn`` ``calls`` times; pair it with ``b_scale=1/calls``."""

    def run() -> None:
        for _ in range(calls):
            fn()

    return run


def fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def cprofile_stats(fn: Callable[[], Any]) -> pstats.Stats:
    """Run ``fn`` under cProfile (wall clock) and return its statistics."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO())


def stats_table(stats: pstats.Stats, top: int = 12, sort: str = "tottime") -> str:
    """The ``top`` functions by own time (``sort="tottime"``) or by cumulative time
    (``"cumulative"``, which shows where a call tree spends it) as Markdown."""
    total = sum(v[2] for v in stats.stats.values()) or 1.0
    column = 2 if sort == "tottime" else 3
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in sorted(
        stats.stats.items(), key=lambda kv: kv[1][column], reverse=True
    )[:top]:
        rows.append(
            [
                f"`{name}` ({_short_path(filename)}:{line})",
                ncalls,
                f"{tottime * 1e3:.1f}",
                f"{cumtime * 1e3:.1f}",
                f"{100 * cumtime / total:.0f}%",
            ]
        )
    return table(["function", "calls", "own ms", "cumulative ms", "cumulative share"], rows)


def cprofile_summary(fn: Callable[[], Any], top: int = 12, sort: str = "tottime") -> str:
    """Run ``fn`` under cProfile; its top functions as a Markdown table (see ``stats_table``)."""
    return stats_table(cprofile_stats(fn), top, sort)


def cumulative_share(stats: pstats.Stats, name: str, path_suffix: str) -> float:
    """Share of the profiled wall time spent inside ``name`` defined in a file ending
    ``path_suffix``."""
    total = sum(v[2] for v in stats.stats.values()) or 1.0
    return (
        sum(v[3] for (f, _, n), v in stats.stats.items() if n == name and f.endswith(path_suffix))
        / total
    )


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.basename(filename)


def op_profile_summary(fn: Callable[[], Any], top: int = 8) -> tuple[str, dict[str, float]]:
    """Run ``fn`` under the torch profiler; the ``top`` aten ops by self CPU time.

    Returns the Markdown table and {op: share of self CPU time}.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    shares = {e.key: e.self_cpu_time_total / total for e in events}
    rows = [
        [
            f"`{e.key}`",
            e.count,
            f"{e.self_cpu_time_total / 1e3:.1f}",
            f"{100 * e.self_cpu_time_total / total:.0f}%",
        ]
        for e in events[:top]
    ]
    return table(["op", "calls", "self ms", "share"], rows), shares


def machine_info() -> dict[str, str]:
    import pyarrow
    import ray
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "load average at start (1/5/15 min)": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
    }


BARS_MARKER = "<!-- bars: "


def bars_comment(bars: list[Bar]) -> str:
    """The section's bars as a hidden JSON comment, so ``--only`` can rebuild the summary."""
    return BARS_MARKER + json.dumps([b.to_json() for b in bars]) + " -->"


def parse_bars(block: str) -> list[Bar]:
    for line in block.splitlines():
        if line.startswith(BARS_MARKER):
            return [Bar(**d) for d in json.loads(line[len(BARS_MARKER) : -len(" -->")])]
    return []
