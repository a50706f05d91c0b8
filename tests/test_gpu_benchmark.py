"""The GPU section of the benchmarks (``python -m benchmarks --gpu``), tested without a GPU.

The real run needs CUDA; here: the one-line refusal without it, that CPU runs keep the GPU
block and a GPU run keeps the others, and (slow) the whole path through ``--gpu --dry-run``,
which runs every part at tiny sizes on the CPU. No number is checked, only that every part
ran and wrote its tables and bars.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

import benchmarks.__main__ as bench_main
from benchmarks import SECTIONS, gpu
from benchmarks.__main__ import DATA, blocks, replace_block, section_block, with_summary
from benchmarks.common import Bar, Section, Table, bars_from_json
from benchmarks.gpu import KEY, NO_CUDA, max_overlap
from benchmarks.gpu_parts import CASES
from trainers.estimators import ESTIMATORS

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _section(key: str, bar: str) -> Section:
    return Section(key, key, [Table(key, ["x"], [[1]])], [Bar(bar, 1, 2)], {"x": 1})


def _file(path: Path, *keys: str) -> None:
    text = "# BENCHMARKS\n"
    for key in keys:
        text = replace_block(text, key, section_block(_section(key, f"{key} bar"), "old"), key)
    path.write_text(with_summary(text), encoding="utf-8")


def _bars(content: str) -> list[Bar]:
    line = next(ln for ln in content.splitlines() if ln.startswith(DATA))
    return bars_from_json(line[len(DATA) : -len(" -->")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_without_cuda_exits_1_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    proc = _run("--gpu", "--out", str(out), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [NO_CUDA]
    assert not out.exists()


def test_dry_run_goes_with_gpu(tmp_path: Path) -> None:
    proc = _run("--dry-run", "--out", str(tmp_path / "B.md"), timeout=60)
    assert proc.returncode == 2 and "--dry-run goes with --gpu" in proc.stderr


def test_cpu_runs_keep_the_gpu_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert KEY not in SECTIONS  # a plain run never runs it
    path = tmp_path / "B.md"
    _file(path, "memory", KEY)
    before = blocks(path.read_text(encoding="utf-8"))
    fake = types.ModuleType("benchmarks.fake")
    fake.TITLE = "fake"
    fake.run = lambda quick, workdir, log: _section("fake", "fake bar")
    monkeypatch.setitem(sys.modules, "benchmarks.fake", fake)
    monkeypatch.setattr(bench_main, "SECTIONS", ("memory", "fake"))
    assert bench_main.main(["--quick", "--only", "fake", "--out", str(path)]) == 0
    after = blocks(path.read_text(encoding="utf-8"))
    assert after[KEY] == before[KEY] and after["memory"] == before["memory"]
    summary = [b.name for b in _bars(after[KEY])] + ["fake bar"]
    assert all(f"| {name} |" in after["summary"] for name in summary)


def test_gpu_runs_keep_the_other_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "B.md"
    _file(path, "memory", KEY, "scale")
    before = blocks(path.read_text(encoding="utf-8"))
    ran = lambda workdir, log, dry_run: (_section(KEY, "§GPU new bar"), [])  # noqa: E731
    monkeypatch.setattr(gpu, "run", ran)
    assert bench_main.main(["--gpu", "--dry-run", "--out", str(path)]) == 0
    after = blocks(path.read_text(encoding="utf-8"))
    assert after["memory"] == before["memory"] and after["scale"] == before["scale"]
    assert "machine" not in after  # a GPU run leaves the machine block (the CPU host's) alone
    assert [b.name for b in _bars(after[KEY])] == ["§GPU new bar"]
    assert "| §GPU new bar |" in after["summary"] and "| memory bar |" in after["summary"]


def test_a_crashed_part_is_recorded_and_the_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_):
        raise ValueError("boom\nsecond line")

    part = lambda *_: ([Table("sweep ran", ["x"], [[1]])], [Bar("§GPU s", 1, 1)], {"s": 1})  # noqa: E731
    monkeypatch.setattr(gpu, "agreement", crash)
    monkeypatch.setattr(gpu, "step_cost", part)
    monkeypatch.setattr(gpu, "sweep", part)
    monkeypatch.setattr(
        torch, "set_num_threads", lambda n: None
    )  # the dry run's; not this process's
    section, crashed = gpu.run(tmp_path, lambda _: None, dry_run=True)
    assert crashed == ["agreement"]
    assert [(b.name, b.met) for b in section.bars] == [
        ("§GPU part 'agreement' ran", False),
        ("§GPU s", True),
        ("§GPU s", True),
    ]
    parts = section.tables[-1]
    assert parts.caption == "Parts" and [r[2] for r in parts.rows] == ["ValueError: boom", "", ""]


def test_max_overlap() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 2), (2, 4), (4, 6)]) == 1  # back to back: never two at once
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2
    assert max_overlap([(0, 10), (1, 2), (1.5, 3), (2.5, 4)]) == 3


def _rows(block: str, name: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in block.splitlines()
        if line.startswith(f"| {name} |")
    ]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_dry_run_writes_every_part_and_keeps_other_blocks(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    _file(out, "memory")
    memory = blocks(out.read_text(encoding="utf-8"))["memory"]
    proc = _run("--gpu", "--dry-run", "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    written = blocks(out.read_text(encoding="utf-8"))
    assert written["memory"] == memory  # kept byte for byte
    block = written[KEY]
    for label, *_ in CASES[True]:
        assert f"**{label}:" in block, label
    for name in ESTIMATORS:
        rows = _rows(block, f"`{name}`")
        assert len(rows) == 1 + len(CASES[True]), name  # agreement + one per model
        assert all(row[-1] == "" for row in rows), (name, rows)  # no error on the CPU
    for part in ("agreement", "step cost", "sweep"):
        assert [row[-1] for row in _rows(block, part)] == [""], part  # ran, did not crash
    quick = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text(encoding="utf-8"))
    planned = len(quick["grid"]["estimators"])  # the dry run's grid: 2 bits, seed 0
    assert f"| trials completed | {planned} of {planned} |" in block
    bars = _bars(block)
    assert len(bars) == 4 + 4 * len(CASES[True]) + 2
    assert all(b.name.startswith("§GPU") for b in bars)
    assert all(f"| {b.name} |" in written["summary"] for b in bars)
