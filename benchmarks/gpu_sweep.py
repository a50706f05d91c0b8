"""GPU section, part 3: the quick sweep's trials sharing one GPU through the real service.

``examples/quick.yaml`` (its pre-training stage included) with one seed, ``trial: device:
cuda`` and ``resources: {cpus: 1, gpus: 0.25}``, run by ``service.runner`` (prepare,
connect, run_sweep) as ``qsweep run`` does, in a fresh subprocess with a timeout. From
``trials.parquet``: every trial's status, and how many ran at once on the GPU (the most
overlapping ``started_at``–``finished_at`` intervals). A trial that completes ran on CUDA:
``run_trial`` raises when ``device: cuda`` is asked for and the worker sees no GPU.

The dry run (no GPU) runs the same path on the CPU with ``device: cpu``, fractional
``cpus: 0.5`` in place of the fractional GPU, fewer trials and steps.

Run as ``python -m benchmarks.gpu_sweep SPEC NUM_CPUS NUM_GPUS`` it is the worker; it
prints one ``BENCH_JSON: {...}`` line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Bar, fmt_bytes, run_json_worker, table

REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
GPU_FRACTION = 0.25
DRY_CPU_FRACTION = 0.5


def sweep_spec(workdir: Path, dry_run: bool) -> tuple[Path, dict[str, Any]]:
    data = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    data["name"] = "gpu-quick"
    data["results"] = str(workdir / "results")
    data["grid"]["seeds"] = [0]
    data["time_limit_s"] = 120 if dry_run else 150
    if dry_run:
        data["trial"]["device"] = "cpu"
        data["resources"] = {"cpus": DRY_CPU_FRACTION}
        data["grid"]["bits"] = [2]
        data["budget"] = {"steps": 20}
        data["pretrain"]["steps"] = 20
    else:
        data["trial"]["device"] = "cuda"
        data["resources"] = {"cpus": 1, "gpus": GPU_FRACTION}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "gpu-quick.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data


# ------------------------------------------------------------------------------------- worker


def _worker(spec_path: str, num_cpus: int, num_gpus: int) -> dict[str, Any]:
    started = time.perf_counter()
    import pyarrow.parquet as pq
    import ray

    from service.runner import connect, prepare, run_sweep
    from service.spec import load_spec

    plan = load_spec(spec_path)
    run = prepare(plan, None, overwrite=True)
    imported = time.perf_counter()
    # Ray is started here with the GPU count given (connect() then joins it as `qsweep run`
    # would start it): a GPU that Ray failed to detect would leave the trials pending forever.
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)
    connect(None, dashboard=False)
    resources = ray.cluster_resources()
    ray_up = time.perf_counter()
    run_sweep(run, live=False)
    swept = time.perf_counter()
    ray.shutdown()
    rows = pq.read_table(os.path.join(run.sweep_dir, "trials.parquet")).to_pylist()
    return {
        "import_s": imported - started,
        "ray_start_s": ray_up - imported,
        "sweep_s": swept - ray_up,
        "resources": {k: resources.get(k, 0) for k in ("CPU", "GPU")},
        "planned": [t.trial_id for t in plan.trials],
        "pretrain": [t.trial_id for t in plan.pretrain],
        "trials": {
            r["trial_id"]: {
                "status": r["status"],
                "error": r["error"],
                "attempts": r["attempts"],
                "started": r["started_at"].timestamp() if r["started_at"] else None,
                "finished": r["finished_at"].timestamp() if r["finished_at"] else None,
                "wall_s": r["wall_s"],
                "peak": r["peak_memory_bytes"],
            }
            for r in rows
        },
    }


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


# ------------------------------------------------------------------------------------- driver


def run(workdir: Path, dry_run: bool, timeout: float, log) -> tuple[list[str], list[Bar]]:
    spec_path, data = sweep_spec(workdir, dry_run)
    num_cpus = 2 if dry_run else (os.cpu_count() or 1)
    num_gpus = 0 if dry_run else _gpu_count()
    out, process_s = run_json_worker(
        ["benchmarks.gpu_sweep", str(spec_path), str(num_cpus), str(num_gpus)],
        MARK,
        "the sweep worker",
        timeout,
        cwd=REPO,
    )
    out["process_s"] = process_s
    log(f"  sweep: {out['sweep_s']:.0f} s, {len(out['trials'])} trial rows")
    return render(out, data, dry_run)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def render(out: dict[str, Any], data: dict[str, Any], dry_run: bool):
    trials = out["trials"]
    planned = out["planned"]
    main = {tid: trials.get(tid) for tid in planned}
    done = [tid for tid, t in main.items() if t and t["status"] == "completed"]
    spans = [
        (t["started"], t["finished"])
        for t in main.values()
        if t and t["started"] is not None and t["finished"] is not None
    ]
    concurrent = max_overlap(spans)
    resources = data["resources"]
    share = DRY_CPU_FRACTION if dry_run else GPU_FRACTION
    # Trials Ray can place at once: the scarcer of the CPUs and GPUs for the per-trial ask.
    have = out["resources"]
    slots = int(have["CPU"] // resources["cpus"])
    if resources.get("gpus"):
        slots = min(slots, int(have["GPU"] // resources["gpus"]))
    errors: dict[str, list[str]] = {}
    for tid, t in main.items():
        if t is None:
            errors.setdefault("no row in trials.parquet", []).append(tid)
        elif t["status"] != "completed":
            errors.setdefault(t["error"] or t["status"], []).append(tid)
    pre = [trials.get(tid) for tid in out["pretrain"]]
    pre_status = ", ".join((t or {}).get("status", "missing") for t in pre) or "none"
    walls = sorted(t["wall_s"] for t in main.values() if t and t["wall_s"] is not None)
    peaks = [t["peak"] for t in main.values() if t and t["peak"]]
    where = (
        f"`device: cpu`, `resources: {{cpus: {DRY_CPU_FRACTION}}}` on {out['resources']['CPU']:g} "
        "CPUs (dry run: fractional CPUs stand in for the fractional GPU)"
        if dry_run
        else f"`device: cuda`, `resources: {resources}` on {out['resources']['GPU']:g} GPU(s) and "
        f"{out['resources']['CPU']:g} CPUs"
    )
    grid = data["grid"]
    lines = [
        "### The quick sweep's trials sharing one GPU",
        "",
        f"`examples/quick.yaml` through `service.runner` (prepare, connect, run_sweep) with "
        f"{where}: grid {len(grid['estimators'])} estimators × bits {grid['bits']} × seeds "
        f"{grid['seeds']} = {len(planned)} trials after the pre-training stage "
        f"({pre_status}); budget {data['budget']}. Concurrency = the most trials whose "
        "`started_at`–`finished_at` intervals in `trials.parquet` overlap.",
        "",
        table(
            ["", ""],
            [
                ["trials completed", f"{len(done)} of {len(planned)}"],
                ["most trials at once", f"{concurrent} (room for {slots})"],
                ["sweep wall (pre-training + grid)", f"{out['sweep_s']:.1f} s"],
                ["Ray start", f"{out['ray_start_s']:.1f} s"],
                [
                    "trial training wall, median (min–max)",
                    f"{walls[len(walls) // 2]:.2f} s ({walls[0]:.2f}–{walls[-1]:.2f})"
                    if walls
                    else "—",
                ],
                ["trial peak memory, max", fmt_bytes(max(peaks)) if peaks else "—"],
            ],
        ),
        "",
    ]
    if errors:
        lines += [
            "Trials that did not complete (error → trials):",
            "",
            *[f"- `{err}`: {', '.join(sorted(tids))}" for err, tids in errors.items()],
            "",
        ]
    device = "cpu" if dry_run else "cuda"
    bars = [
        Bar(
            f"§GPU quick-sweep trials completed on {device} (of {len(planned)})",
            len(done),
            len(planned),
            ">=",
        ),
        Bar(
            f"§GPU most quick-sweep trials at once ({'cpus' if dry_run else 'gpus'}: {share:g})",
            concurrent,
            slots,
            ">=",
        ),
    ]
    return lines, bars


if __name__ == "__main__":
    result = _worker(sys.argv[1], int(sys.argv[2]), int(float(sys.argv[3])))
    print(MARK + json.dumps(result), flush=True)
