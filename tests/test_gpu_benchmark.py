"""The GPU section of the benchmarks (``python -m benchmarks --gpu``), tested without a GPU.

The real run needs CUDA; here: the one-line refusal without it, that CPU runs keep the GPU
block, and (slow) the whole path through ``--gpu --dry-run``, which runs every part at tiny
sizes on the CPU. No number is checked, only that every part ran and wrote its tables.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.__main__ import (
    BEGIN,
    END,
    existing_blocks,
    kept_blocks,
    previous_machine_info,
    render,
)
from benchmarks.common import parse_bars
from benchmarks.gpu import KEY, NO_CUDA
from benchmarks.gpu_steps import cases
from benchmarks.gpu_sweep import max_overlap
from trainers.estimators import ESTIMATORS

REPO = Path(__file__).resolve().parents[1]
BARS = '<!-- bars: [{"name": "x", "value": 1, "limit": 2, "op": "<=", "note": ""}] -->'


def _block(key: str, body: str) -> str:
    return "\n".join([BEGIN.format(key), f"## {key}", "", body, "", BARS, END.format(key)])


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def test_cpu_runs_keep_the_gpu_block(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    gpu, memory = _block(KEY, "gpu numbers"), _block("memory", "memory numbers")
    path.write_text(f"# BENCHMARKS\n\n{memory}\n\n{gpu}\n", encoding="utf-8")
    assert kept_blocks(path, only=False) == {KEY: gpu}  # a full CPU run: only the GPU block
    assert kept_blocks(path, only=True) == {"memory": memory, KEY: gpu}
    rendered = tmp_path / "rendered.md"
    rendered.write_text(
        render(kept_blocks(path, only=False), {"cores": "2"}, [], 1.0, ["memory"]),
        encoding="utf-8",
    )
    assert existing_blocks(rendered) == {KEY: gpu}
    assert previous_machine_info(rendered) == {"cores": "2"}  # what a --gpu run keeps
    assert "| x | 1 | <= 2 | yes |" in rendered.read_text(encoding="utf-8")  # its bar, summarised


def test_max_overlap() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 2), (2, 4), (4, 6)]) == 1  # back to back: never two at once
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2
    assert max_overlap([(0, 10), (1, 2), (1.5, 3), (2.5, 4)]) == 3


def _rows(block: str, name: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in block.splitlines()
        if line.startswith(f"| `{name}` |")
    ]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_dry_run_writes_every_part_and_keeps_other_blocks(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    memory = _block("memory", "memory numbers")
    out.write_text(f"# BENCHMARKS\n\n{memory}\n", encoding="utf-8")
    proc = _run("--gpu", "--dry-run", "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    blocks = existing_blocks(out)
    assert blocks["memory"] == memory  # kept byte for byte
    block = blocks[KEY]
    for heading in (
        "### CPU vs cpu: the same trial's first",
        "### Step cost and peak memory of every registered estimator",
        "### The quick sweep's trials sharing one GPU",
    ):
        assert heading in block, heading
    assert "crashed" not in block
    for case in cases(dry_run=True):
        assert f"**{case.label}**" in block, case.label
    for name in ESTIMATORS:
        rows = _rows(block, name)
        assert len(rows) == 1 + len(cases(dry_run=True)), name  # agreement + one per model
        assert all(row[-1] == "" for row in rows), (name, rows)  # no error on the CPU
    quick = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text(encoding="utf-8"))
    planned = len(quick["grid"]["estimators"])  # the dry run's grid: 2 bits, seed 0
    assert f"| trials completed | {planned} of {planned} |" in block
    bars = parse_bars(block)
    assert bars and all(b.name.startswith("§GPU") for b in bars)
    assert "§GPU quick-sweep trials completed on cpu" in text  # in the summary too
