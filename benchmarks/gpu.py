"""The GPU section of BENCHMARKS.md: ``python -m benchmarks --gpu`` on a machine with CUDA.

Three parts, each with its own time limit so the whole runs in well under 8 minutes on one
GPU (an H200 with 16 CPU cores: about 4 minutes expected):

1. ``gpu_agree``  CPU vs GPU: the same trial's first steps, and one n-SPSA estimate with the
   same directions, fp32 with TF32 off (~20 s);
2. ``gpu_steps``  step wall time of every registered estimator relative to an STE step, and
   its CUDA peak memory, on ResNet-18 (CIFAR-shaped random images) and the in-repo LLaMA
   "small" (byte-level text bundled with the repo; nothing is downloaded) (≤ 150 s);
3. ``gpu_sweep``  ``examples/quick.yaml``'s trials (one seed) through the real service with
   ``resources: {cpus: 1, gpus: 0.25}``: how many share the GPU at once, the sweep's wall
   time, and whether every trial completed (≤ 270 s).

A part that crashes is reported in the section (its error, and a missed bar) and makes the
command exit 1 after the file is written; the other parts still run.

On a GPU host (no internet needed once installed)::

    python3 -m venv .venv && . .venv/bin/activate
    pip install torch --index-url https://download.pytorch.org/whl/cu126   # a CUDA build
    pip install -e ".[test]"
    python -m benchmarks --gpu            # rewrites the GPU block of BENCHMARKS.md only

Without a GPU it exits 1 with one line. ``python -m benchmarks --gpu --dry-run --out
/tmp/B.md`` runs every part on the CPU at tiny sizes (fractional CPUs stand in for the
fractional GPU), to test the path; its numbers say nothing about a GPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks import gpu_agree, gpu_steps, gpu_sweep
from benchmarks.common import Bar, Section, fmt_bytes, machine_info, table
from benchmarks.gpu_steps import first_line

KEY = "gpu"
TITLE = "GPU: step cost, CUDA peak memory, fractional-GPU trials, CPU-vs-GPU agreement"
NO_CUDA = (
    "no CUDA device: torch.cuda.is_available() is False; run this on a GPU machine or use --dry-run"
)
STEPS_S = {False: 150.0, True: 120.0}  # part 2's time limit (full, dry run)
SWEEP_S = {False: 270.0, True: 240.0}  # part 3's subprocess timeout


def device_info(device: torch.device) -> list[list[str]]:
    """This host (the file's header describes the machine of the CPU sections)."""
    info = machine_info()
    rows = [[k, info[k]] for k in ("date (UTC)", "CPU", "cores", "python", "torch", "ray")]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows += [
            ["GPU", f"{props.name} ({fmt_bytes(props.total_memory)})"],
            ["CUDA (torch build)", str(torch.version.cuda)],
            ["cuDNN", str(torch.backends.cudnn.version())],
            [
                "TF32 in parts 2–3 (torch defaults)",
                f"matmul {torch.backends.cuda.matmul.allow_tf32}, "
                f"cuDNN {torch.backends.cudnn.allow_tf32}",
            ],
        ]
    else:
        rows.append(["device", "cpu (dry run: tiny sizes, no GPU numbers)"])
    return rows


def run(workdir: Path, log, dry_run: bool = False) -> tuple[Section, list[str]]:
    """The section and the parts that crashed (their names)."""
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError(NO_CUDA)
    device = torch.device("cpu" if dry_run else "cuda")
    lines = [
        "Run on its own with `python -m benchmarks --gpu` on a machine with CUDA (module "
        "`benchmarks.gpu`); a plain `python -m benchmarks` keeps this block as it is.",
        "",
    ]
    if dry_run:
        lines += [
            "**Dry run on the CPU** (`--gpu --dry-run`): tiny sizes, `device: cpu`, fractional "
            "CPUs in place of the fractional GPU, CPU compared with itself. It tests the "
            "benchmark's path; none of its numbers is a GPU measurement.",
            "",
        ]
    lines += [table(["", ""], device_info(device)), ""]
    bars: list[Bar] = []
    crashed: list[str] = []
    parts = [
        ("agreement", lambda: gpu_agree.run(device, dry_run, log)),
        ("step cost", lambda: gpu_steps.run(device, dry_run, STEPS_S[dry_run], log)),
        ("sweep", lambda: gpu_sweep.run(workdir / "sweep", dry_run, SWEEP_S[dry_run], log)),
    ]
    for name, part in parts:
        started = time.perf_counter()
        log(f"[benchmarks] gpu: {name}")
        try:
            part_lines, part_bars = part()
        except Exception as err:  # reported, and the command exits 1 after writing the file
            crashed.append(name)
            part_lines = [f"### {name}", "", f"**This part crashed:** `{first_line(err)}`", ""]
            part_bars = [Bar(f"§GPU part '{name}' ran", 0, 1, ">=")]
            log(f"[benchmarks] gpu: {name} CRASHED: {err}")
        took = time.perf_counter() - started
        lines += part_lines + [f"_({name}: {took:.0f} s)_", ""]
        bars += part_bars
        log(f"[benchmarks] gpu: {name} done in {took:.0f} s")
    return Section(KEY, TITLE, "\n".join(lines), bars), crashed
