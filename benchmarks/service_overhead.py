"""Section 4: what the sweep service costs on top of the trials it runs.

Three ways to run the same planned trials, each in a fresh subprocess:

- ``sequential``: one process calling ``trainers.run_trial`` for every trial in turn (1
  torch thread, as the tuner gives a 1-CPU trial) — the pure compute;
- ``ray N``: ``service.runner`` exactly as ``qsweep run SPEC --no-dashboard --num-cpus N``
  does it (embedded Ray, the Parquet sink, checkpoints every ``checkpoint_every``
  evaluations), with Ray's start-up timed apart from the sweep.

Ray runs its workers at nice 15 (its ``worker_niceness`` default), so the sequential
baseline runs at nice 15 as well: on a machine shared with other jobs both then compete
for the CPU on equal terms.

Run as ``python -m benchmarks.service_overhead sequential|ray SPEC [RESULTS NUM_CPUS]`` it
is the worker; it prints one ``BENCH_JSON: {...}`` line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Bar, Section, table

KEY = "service_overhead"
TITLE = "4. Service overhead: Ray Tune sweep vs the same trials in one process"
EFFICIENCY_BAR = 0.80
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
NICE = 15


# ------------------------------------------------------------------------------------- workers

def _sequential(spec_path: str) -> dict[str, Any]:
    started = time.perf_counter()
    from service.spec import load_spec
    from trainers import run_trial

    spec = load_spec(spec_path)
    imported = time.perf_counter()
    trials = {}
    for planned in spec.trials():
        config = dict(planned.config)
        config.setdefault("threads", 1)  # what service.tuner.train_one gives a 1-CPU trial
        t0 = time.perf_counter()
        run_trial(config, lambda metrics, **_: None)
        trials[planned.trial_id] = time.perf_counter() - t0
    return {"import_s": imported - started, "trials": trials, "total_s": sum(trials.values())}


def _ray(spec_path: str, results: str, num_cpus: int) -> dict[str, Any]:
    started = time.perf_counter()
    import ray

    from service.runner import connect, prepare, run_sweep
    from service.spec import load_spec

    spec = load_spec(spec_path)
    run = prepare(spec, results, overwrite=True)
    imported = time.perf_counter()
    connect(None, dashboard=False, num_cpus=num_cpus)
    ray_up = time.perf_counter()
    run_sweep(run, live=False)
    swept = time.perf_counter()
    ray.shutdown()
    down = time.perf_counter()
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(run.sweep_dir, "trials.parquet")).to_pylist()
    trials = {r["trial_id"]: {"status": r["status"], "started": r["started_at"].timestamp(),
                              "finished": r["finished_at"].timestamp() if r["finished_at"] else None,
                              "wall_s": r["wall_s"]} for r in rows}
    return {"import_s": imported - started, "ray_start_s": ray_up - imported, "sweep_s": swept - ray_up,
            "shutdown_s": down - swept, "trials": trials}


def _worker(argv: list[str]) -> None:
    mode, spec_path = argv[0], argv[1]
    out = _sequential(spec_path) if mode == "sequential" else _ray(spec_path, argv[2], int(argv[3]))
    print(MARK + json.dumps(out), flush=True)


def _spawn(args: list[str], log, timeout: float = 1200) -> dict[str, Any]:
    """Run one worker subprocess (at Ray's worker niceness); its JSON plus the process wall time."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.service_overhead", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=lambda: os.nice(NICE) if args[0] == "sequential" else None)
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {args} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len(MARK):])
    out["process_s"] = wall
    return out


# ------------------------------------------------------------------------------------- specs

def quick_sweep_spec(workdir: Path, quick: bool) -> Path:
    """examples/quick.yaml (30 trials), or in quick mode 4 of its trials."""
    data = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    data["results"] = str(workdir / "results")
    if quick:
        data["grid"].update(estimators=["ste", "fogzo"], bits=[2], seeds=[0, 1])
        data["estimators"] = {k: v for k, v in data["estimators"].items() if k in ("ste", "fogzo")}
        data["budget"] = {"steps": 100}
    path = workdir / "quick.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


LONG_TRIAL = {"estimator": "ste", "model": "cnn", "dataset": "digits", "batch_size": 64, "lr": 0.05,
              "num_evals": 10, "threads": 1}


def calibrate_long_steps(target_s: float, log) -> tuple[int, float]:
    """Steps of a CNN-on-digits STE trial that take about ``target_s`` seconds in one process."""
    from trainers import run_trial

    probe = 400
    t0 = time.perf_counter()
    run_trial({**LONG_TRIAL, "bits": 2, "steps": probe}, lambda metrics, **_: None)
    per_step = (time.perf_counter() - t0) / probe
    steps = max(probe, int(target_s / per_step))
    log(f"  long trials: {per_step * 1e3:.2f} ms/step -> {steps} steps for ~{target_s:.0f} s")
    return steps, per_step


def long_sweep_spec(workdir: Path, steps: int) -> Path:
    """4 equal trials (STE, CNN on digits, bits 2/4 x seeds 0/1) of ``steps`` steps."""
    trial = {k: v for k, v in LONG_TRIAL.items() if k not in ("estimator", "model", "dataset", "lr", "threads")}
    data = {"name": "long", "results": str(workdir / "results"),
            "grid": {"estimators": ["ste"], "bits": [2, 4], "models": ["cnn"], "datasets": ["digits"],
                     "seeds": [0, 1]},
            "trial": trial, "budget": {"steps": steps}, "estimators": {"ste": {"lr": LONG_TRIAL["lr"]}},
            "resources": {"cpus": 1}, "retries": 1, "checkpoint_every": 5}
    path = workdir / "long.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------- analysis

def _summarise(seq: list[dict], ray_runs: dict[int, list[dict]]) -> dict[str, Any]:
    """Efficiency and overhead per worker count; medians (and ranges) over repetitions.

    Repetition r of the Ray runs is paired with repetition r of the sequential run (they
    were run back to back), so each efficiency is a ratio of two adjacent measurements.
    """
    out: dict[str, Any] = {"seq_total": [s["total_s"] for s in seq], "workers": {}}
    n_trials = len(seq[0]["trials"])
    for workers, runs in ray_runs.items():
        eff, over, inside, gaps, starts, sweeps = [], [], [], [], [], []
        for r, run in enumerate(runs):
            base = seq[min(r, len(seq) - 1)]
            ideal = base["total_s"] / workers
            eff.append(ideal / run["sweep_s"])
            over.append((run["sweep_s"] * workers - base["total_s"]) / n_trials)
            spans = [t["finished"] - t["started"] for t in run["trials"].values() if t["finished"]]
            inside.append((sum(spans) - base["total_s"]) / n_trials)
            gaps.append((run["sweep_s"] * workers - sum(spans)) / n_trials)
            starts.append(run["ray_start_s"])
            sweeps.append(run["sweep_s"])
        out["workers"][workers] = {"efficiency": eff, "overhead": over, "inside": inside, "gaps": gaps,
                                   "ray_start": starts, "sweep": sweeps,
                                   "process": [run["process_s"] for run in runs],
                                   "failed": sum(t["status"] != "completed" for run in runs
                                                 for t in run["trials"].values())}
    return out


def _fmt(values: list[float], digits: int = 2, pct: bool = False) -> str:
    if not values:
        return "—"
    scale, unit = (100, "%") if pct else (1, "")
    med, lo, hi = statistics.median(values) * scale, min(values) * scale, max(values) * scale
    if len(values) == 1:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def _measure(spec: Path, workdir: Path, reps: int, one_cpu_reps: int, log, label: str) -> dict[str, Any]:
    seq, ray_runs = [], {2: [], 1: []}
    for rep in range(reps):
        order = ["seq", 2] if rep % 2 == 0 else [2, "seq"]
        if rep < one_cpu_reps:
            order.append(1)
        for what in order:
            if what == "seq":
                seq.append(_spawn(["sequential", str(spec)], log))
                log(f"  {label} rep {rep}: sequential {seq[-1]['total_s']:.1f} s")
            else:
                results = workdir / f"results-{label}-{what}-{rep}"
                ray_runs[what].append(_spawn(["ray", str(spec), str(results), str(what)], log))
                run = ray_runs[what][-1]
                log(f"  {label} rep {rep}: ray --num-cpus {what}: start {run['ray_start_s']:.1f} s, "
                    f"sweep {run['sweep_s']:.1f} s")
    return _summarise(seq, ray_runs)


def run(quick: bool, workdir: Path, log=print) -> Section:
    workdir.mkdir(parents=True, exist_ok=True)
    quick_spec = quick_sweep_spec(workdir, quick)
    short = _measure(quick_spec, workdir, reps=1 if quick else 2, one_cpu_reps=0 if quick else 1, log=log,
                     label="quick")
    if quick:  # one Ray session only: the smoke run must stay short
        return _render(short, None, quick, 0, 0.0)
    target = 22.0
    steps, _ = calibrate_long_steps(target, log)
    long_spec = long_sweep_spec(workdir, steps)
    long = _measure(long_spec, workdir, reps=2, one_cpu_reps=1, log=log, label="long")
    return _render(short, long, quick, steps, target)


_HEADER = ["sweep", "trials", "workers", "sequential total s", "ideal s", "sweep wall s", "parallel efficiency",
           "overhead / trial s", "… inside trials s", "… between trials s", "Ray start-up s", "whole process s",
           "failed"]


def _rows(name: str, data: dict[str, Any], n_trials: int) -> list[list[str]]:
    rows = []
    seq = data["seq_total"]
    for workers, w in sorted(data["workers"].items(), reverse=True):
        if not w["sweep"]:
            continue
        rows.append([name, n_trials, workers, _fmt(seq, 1), _fmt([s / workers for s in seq], 1), _fmt(w["sweep"], 1),
                     _fmt(w["efficiency"], 0, pct=True), _fmt(w["overhead"]), _fmt(w["inside"]), _fmt(w["gaps"]),
                     _fmt(w["ray_start"], 1), _fmt(w["process"], 1), w["failed"]])
    return rows


def _render(short: dict, long: dict | None, quick: bool, steps: int, target: float) -> Section:
    n_short = 4 if quick else 30
    rows = _rows("quick.yaml" + (" (4 trials, 100 steps)" if quick else ""), short, n_short)
    bars = []
    short_w2 = short["workers"][2]
    if long is None:
        body = ("Quick mode: 4 short trials, sequential vs Ray with 2 workers only (no long trials, no 1-worker "
                "run).\n\n" + table(_HEADER, rows))
        return Section(KEY, TITLE, body, bars)
    rows += _rows(f"long: 4 × STE CNN/digits, {steps} steps", long, 4)
    w2 = long["workers"][2]["efficiency"]
    bars.append(Bar("§4 parallel efficiency, 2 workers, trials ≥ 20 s", statistics.median(w2), EFFICIENCY_BAR, ">="))
    scaling = [a / b for a, b in zip(long["workers"][1]["sweep"], long["workers"][2]["sweep"])]
    lines = [
        "Every run is a fresh subprocess. *sequential* = the planned trials one after another in one process "
        "with `trainers.run_trial` (1 torch thread each); *ray* = `service.runner.connect` + `run_sweep`, "
        "i.e. `qsweep run SPEC --no-dashboard --num-cpus N` (embedded Ray, Parquet sink, checkpoints every "
        "5 evaluations, 1 CPU per trial). Ray runs trial workers at nice 15, so the sequential runs are "
        "niced to 15 too. Ideal = sequential total / workers; parallel efficiency = ideal / sweep wall "
        "(Ray start-up excluded; it is its own column); per-trial overhead = (sweep wall × workers − "
        "sequential total) / trials, split into *inside* trials (Tune's start→finish of each trial minus its "
        "in-process time: worker warm-up, checkpoints, `tune.report`, contention with the driver) and "
        "*between* trials (slots idle while Tune schedules the next one). Median (min–max) over "
        "repetitions, each Ray run paired with the sequential run next to it.", "",
        table(_HEADER, rows), "",
        f"Scaling of the long trials from 1 to 2 workers (sweep wall, 1 worker / 2 workers): {_fmt(scaling)} "
        "(ideal 2).",
        f"Long trials: {steps} steps each, calibrated to ~{target:.0f} s in one process.", "",
        f"**Short trials** (quick.yaml, ~1 s each): efficiency {_fmt(short_w2['efficiency'], 0, pct=True)} — a "
        f"fixed cost of about {_fmt(short_w2['overhead'], 1)} s per trial dominates trials this short. "
        f"**Long trials**: efficiency {_fmt(w2, 0, pct=True)} (bar ≥ {EFFICIENCY_BAR:.0%}).",
    ]
    return Section(KEY, TITLE, "\n".join(lines), bars)


if __name__ == "__main__":
    _worker(sys.argv[1:])
