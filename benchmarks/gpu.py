"""The GPU section (``python -m benchmarks --gpu``, needs CUDA; ``--dry-run``: tiny sizes on
the CPU): CPU-vs-GPU agreement and estimator step cost (``gpu_parts``), and the quick
sweep's trials sharing one GPU through the real service in a subprocess (here; ``python -m
benchmarks.gpu SPEC CPUS GPUS`` is its worker). A part that crashes is a row and a bar."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import Bar, Section, Table, fmt_bytes, machine_info, run_json_worker
from benchmarks.gpu_parts import Part, agreement, first_line, step_cost

KEY = "gpu"
TITLE = "GPU: step cost, CUDA peak memory, fractional-GPU trials, CPU-vs-GPU agreement"
NO_CUDA = (
    "no CUDA device: torch.cuda.is_available() is False; run this on a GPU machine or use --dry-run"
)
STEPS_S = {False: 150.0, True: 120.0}  # part 2's time limit (full, dry run)
SWEEP_S = {False: 270.0, True: 240.0}  # part 3's subprocess timeout
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
SHARE = {False: 0.25, True: 0.5}  # a trial's GPU (dry run: CPU) fraction


def device_table(device: torch.device) -> Table:
    info = machine_info()
    rows = [[k, info[k]] for k in ("date (UTC)", "CPU", "cores", "python", "torch", "ray")]
    if device.type == "cpu":
        return Table("This host", ["", ""], [*rows, ["device", "cpu (dry run: tiny sizes)"]])
    props = torch.cuda.get_device_properties(device)
    cuda = f"{torch.version.cuda}, {torch.backends.cudnn.version()}"
    tf32 = f"{torch.backends.cuda.matmul.allow_tf32}, {torch.backends.cudnn.allow_tf32}"
    rows += [
        ["GPU", f"{props.name} ({fmt_bytes(props.total_memory)})"],
        ["CUDA (torch build), cuDNN", cuda],
        ["TF32 in parts 2-3 (matmul, cuDNN)", tf32],
    ]
    return Table("This host", ["", ""], rows)


def sweep_spec(workdir: Path, dry_run: bool) -> Path:
    """examples/quick.yaml, seed 0, on the device with a fractional GPU (dry run: CPU)."""
    data = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    data |= {"name": "gpu-quick", "results": str(workdir / "results")}
    data["grid"]["seeds"] = [0]
    data["time_limit_s"] = 120 if dry_run else 150
    data["trial"]["device"] = "cpu" if dry_run else "cuda"
    data["resources"] = {"cpus": SHARE[True]} if dry_run else {"cpus": 1, "gpus": SHARE[False]}
    if dry_run:
        data |= {"budget": {"steps": 20}}
        data["grid"]["bits"] = [2]
        data["pretrain"]["steps"] = 20
    workdir.mkdir(parents=True, exist_ok=True)
    (path := workdir / "gpu-quick.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _worker(spec_path: str, num_cpus: int, num_gpus: int) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import ray

    from service.runner import connect, prepare, run_sweep
    from service.spec_loading import load_spec

    plan = load_spec(spec_path)
    run = prepare(plan, None, overwrite=True)
    started = time.perf_counter()
    # Ray started with the GPU count given: one it failed to detect would leave trials pending.
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)
    connect(None, dashboard=False)
    resources = {k: ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")}
    ray_up = time.perf_counter()
    run_sweep(run, live=False)
    swept = time.perf_counter()
    ray.shutdown()
    rows = pq.read_table(os.path.join(run.sweep_dir, "trials.parquet")).to_pylist()
    keys, ends = ("status", "error", "wall_s", "peak_memory_bytes"), ("started_at", "finished_at")
    span = lambda r: [r[k].timestamp() if r[k] else None for k in ends]  # noqa: E731
    trials = {r["trial_id"]: {k: r[k] for k in keys} | {"span": span(r)} for r in rows}
    return {
        "ray_start_s": ray_up - started,
        "sweep_s": swept - ray_up,
        "resources": resources,
        "planned": [t.trial_id for t in plan.trials],
        "pretrain": [t.trial_id for t in plan.pretrain],
        "trials": trials,
    }


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def sweep(workdir: Path, dry_run: bool, log) -> Part:
    spec = sweep_spec(workdir, dry_run)
    cpus, gpus = (2, 0) if dry_run else (os.cpu_count() or 1, torch.cuda.device_count())
    args = ["benchmarks.gpu", str(spec), str(cpus), str(gpus)]
    out, _ = run_json_worker(args, MARK, "the sweep worker", SWEEP_S[dry_run], cwd=REPO)
    log(f"  sweep: {out['sweep_s']:.0f} s, {len(out['trials'])} trial rows")
    missing = {"status": "no row in trials.parquet", "error": None}
    main = [out["trials"].get(tid, missing) for tid in out["planned"]]
    done = sum(t["status"] == "completed" for t in main)
    at_once = max_overlap([t["span"] for t in main if None not in t.get("span", [None])])
    have, share = out["resources"], SHARE[dry_run]
    slots = int(have["CPU"] // share) if dry_run else int(min(have["CPU"], have["GPU"] / share))
    walls = sorted(t["wall_s"] for t in main if t.get("wall_s") is not None) or [float("nan")]
    peak = max((t.get("peak_memory_bytes") or 0 for t in main), default=0)
    pre = ", ".join(out["trials"].get(tid, {}).get("status", "missing") for tid in out["pretrain"])
    ray_s, sweep_s, mid = out["ray_start_s"], out["sweep_s"], walls[len(walls) // 2]
    rows = [
        ["trials completed", f"{done} of {len(main)}"],
        ["most trials at once", f"{at_once} (room for {slots})"],
        ["pre-training stage", pre or "none"],
        ["Ray start; sweep wall (pre-training + grid)", f"{ray_s:.1f} s; {sweep_s:.1f} s"],
        ["trial training wall, median (min-max)", f"{mid:.2f} s ({walls[0]:.2f}-{walls[-1]:.2f})"],
        ["trial peak memory, max", fmt_bytes(peak)],
    ]
    rows += [
        [f"not completed: `{tid}`", t["error"] or t["status"]]
        for tid, t in zip(out["planned"], main)
        if t["status"] != "completed"
    ]
    dev, kind = ("cpu", "cpus") if dry_run else ("cuda", "gpus")
    caption = f"The quick sweep's trials sharing one {dev}: examples/quick.yaml, seed 0, "
    caption += f"{kind}: {share:g} a trial, on {have['CPU']:g} CPUs and {have['GPU']:g} GPUs"
    bars = [
        Bar(f"§GPU quick-sweep trials completed on {dev} (of {len(main)})", done, len(main), ">="),
        Bar(f"§GPU most quick-sweep trials at once ({kind}: {share:g})", at_once, slots, ">="),
    ]
    return [Table(caption, ["", ""], rows)], bars, {"sweep": out}


def run(workdir: Path, log, dry_run: bool = False) -> tuple[Section, list[str]]:
    """The section and the names of the parts that crashed."""
    if not dry_run and not torch.cuda.is_available():
        raise RuntimeError(NO_CUDA)
    device = torch.device("cpu" if dry_run else "cuda")
    if dry_run:  # tiny CPU steps: a second thread only spins on a shared machine (20x slower)
        torch.set_num_threads(1)
    parts = {
        "agreement": lambda: agreement(device, dry_run, log),
        "step cost": lambda: step_cost(device, dry_run, STEPS_S[dry_run], log),
        "sweep": lambda: sweep(workdir / "sweep", dry_run, log),
    }
    section = Section(KEY, TITLE, [device_table(device)])
    crashed, ran = [], []
    for name, part in parts.items():
        log(f"[benchmarks] gpu: {name}")
        started = time.perf_counter()
        try:
            tables, bars, measured = part()
            error = ""
        except Exception as err:  # recorded; the command exits 1 after writing the file
            crashed.append(name)
            error, tables, measured = first_line(err), [], {}
            bars = [Bar(f"§GPU part '{name}' ran", 0, 1, ">=")]
            log(f"[benchmarks] gpu: {name} CRASHED: {err}")
        ran.append([name, f"{time.perf_counter() - started:.0f}", error])
        section.tables += tables
        section.bars += bars
        section.measurements |= measured
    section.tables.append(Table("Parts", ["part", "seconds", "crashed"], ran))
    return section, crashed


if __name__ == "__main__":
    result = _worker(sys.argv[1], int(sys.argv[2]), int(float(sys.argv[3])))
    print(MARK + json.dumps(result), flush=True)
