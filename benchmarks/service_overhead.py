"""Section 4: planned trials run sequentially in one process (``run_trial``, 1 thread, nice 15
as Ray's workers) vs ``qsweep run --no-dashboard --num-cpus N`` (``service.runner``), each a
fresh subprocess, in alternating pairs. Worker: ``python -m benchmarks.service_overhead
sequential SPEC | ray SPEC RESULTS NUM_CPUS`` prints one ``BENCH_JSON:`` line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Bar, Section, Table, run_json_worker

KEY = "service_overhead"
TITLE = "4. Service overhead: Ray Tune sweep vs the same trials in one process"
EFFICIENCY_BAR = 0.80
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
NICE = 15  # Ray's worker_niceness: the sequential baseline competes for the CPU on equal terms
LONG_TRIAL = {"estimator": "ste", "model": "cnn", "dataset": "digits", "batch_size": 64}
LONG_TRIAL |= {"lr": 0.05, "num_evals": 10, "threads": 1, "bits": 2}  # what LONG_SPEC runs
LONG_SPEC = """{name: long, retries: 1, checkpoint_every: 5, resources: {cpus: 1},
grid: {estimators: [ste], bits: [2, 4], models: [cnn], datasets: [digits], seeds: [0, 1]},
trial: {batch_size: 64, num_evals: 10}, estimators: {ste: {lr: 0.05}}}"""


def _sequential(spec_path: str) -> dict[str, Any]:
    from service.spec_loading import load_spec
    from trainers import run_trial

    trials, train = {}, {}
    for planned in load_spec(spec_path).trials:
        config = {"threads": 1, **planned.config}  # what the tuner gives a 1-CPU trial
        started = time.perf_counter()
        train[planned.trial_id] = run_trial(config, lambda metrics, **_: None)["wall_s"]
        trials[planned.trial_id] = time.perf_counter() - started
    return {"total_s": sum(trials.values()), "train_s": sum(train.values()), "n": len(trials)}


def _ray(spec_path: str, results: str, num_cpus: int) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import ray

    from service.runner import connect, prepare, run_sweep
    from service.spec_loading import load_spec

    run = prepare(load_spec(spec_path), results, overwrite=True)
    started = time.perf_counter()
    connect(None, dashboard=False, num_cpus=num_cpus)
    ray_up, wall_start = time.perf_counter(), time.time()
    run_sweep(run, live=False)
    swept, wall_end = time.perf_counter(), time.time()
    ray.shutdown()
    rows = pq.read_table(os.path.join(run.sweep_dir, "trials.parquet")).to_pylist()

    def stamp(when):  # None for a trial that did not finish
        return when and when.timestamp()

    trials = [
        [stamp(r["started_at"]), stamp(r["finished_at"]), r["wall_s"] or 0.0, r["status"]]
        for r in rows
    ]
    out = {"ray_start_s": ray_up - started, "sweep_s": swept - ray_up, "load": os.getloadavg()[0]}
    return out | {"trials": trials, "wall_start": wall_start, "wall_end": wall_end}


def _spawn(args: list[str]) -> dict[str, Any]:
    nice = (lambda: os.nice(NICE)) if args[0] == "sequential" else None
    what = f"benchmark worker {args}"
    return run_json_worker(
        ["benchmarks.service_overhead", *args], MARK, what, cwd=REPO, preexec_fn=nice
    )[0]


def quick_sweep_spec(workdir: Path, quick: bool, keep_pretrain: bool = False) -> Path:
    """examples/quick.yaml without its pre-training stage (both sides then run the same
    from-scratch trials), or in quick mode 4 of its trials at 100 steps."""
    data = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    if quick or not keep_pretrain:  # ``keep_pretrain``: section 6's full run keeps the stage
        data.pop("pretrain", None)
    if quick:
        data["grid"].update(estimators=["ste", "fogzo"], bits=[2], seeds=[0, 1])
        data["estimators"] = {k: v for k, v in data["estimators"].items() if k in ("ste", "fogzo")}
        data["budget"] = {"steps": 100}
    return _write_spec(workdir / "quick.yaml", data)


def _write_spec(path: Path, data: dict) -> Path:
    data["results"] = str(path.parent / "results")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def calibrate_long_steps(target_s: float) -> tuple[int, float]:
    """Steps of a CNN-on-digits STE trial lasting ~``target_s`` in one process, from the slope
    between two probe lengths (so the trial's fixed set-up is not spread over its steps)."""
    from trainers import run_trial

    def timed(steps: int) -> float:
        started = time.perf_counter()
        run_trial({**LONG_TRIAL, "steps": steps}, lambda metrics, **_: None)
        return time.perf_counter() - started

    timed(300)  # warm-up
    short, long = timed(300), timed(1200)
    per_step = max((long - short) / 900, 1e-6)
    return max(1200, int((target_s - max(short - 300 * per_step, 0.0)) / per_step)), per_step


def long_sweep_spec(workdir: Path, steps: int) -> Path:
    """4 equal trials (STE, CNN on digits, bits 2/4 x seeds 0/1) of ``steps`` steps."""
    data = yaml.safe_load(LONG_SPEC) | {"budget": {"steps": steps}}
    return _write_spec(workdir / "long.yaml", data)


def _pair(seq: dict, run: dict, workers: int) -> dict[str, float]:
    """One Ray run against its sequential neighbour, by column. Tune's start + stop (sweep
    start -> first trial start, last trial end -> fit returns) is split off the per-trial
    overhead, itself split into inside trials (start -> finish minus in-process time) and
    between them; "training time" compares the trials' own ``wall_s``."""
    done, total, n = [t for t in run["trials"] if t[1]], seq["total_s"], seq["n"]
    fixed = min(t[0] for t in run["trials"]) - run["wall_start"]
    fixed += run["wall_end"] - max(t[1] for t in done)
    steady, spans = run["sweep_s"] - fixed, sum(t[1] - t[0] for t in done)
    return {
        "trials": n,
        "sequential total s": total,
        "ideal s": total / workers,
        "sweep wall s": run["sweep_s"],
        "parallel efficiency": total / workers / run["sweep_s"],
        "efficiency without Tune start/stop": total / workers / steady,
        "Tune start + stop s": fixed,
        "overhead / trial s": (steady * workers - total) / n,
        "… inside trials s": (spans - total) / n,
        "… between trials s": (steady * workers - spans) / n,
        "training time Ray / sequential": sum(t[2] for t in run["trials"]) / seq["train_s"],
        "Ray start-up s": run["ray_start_s"],
        "load avg": run["load"],
        "failed": sum(t[3] != "completed" for t in run["trials"]),
    }


def measure(spec: Path, workdir: Path, reps: int, one_cpu_reps: int, seq_reps: int, log) -> dict:
    """``reps`` sequential / Ray-2 pairs (order alternating), then ``one_cpu_reps`` Ray-1 runs;
    each column of ``_pair`` over the repetitions, by worker count."""
    seq, runs = [], {2: [], 1: []}
    for rep in range(reps):
        order = (["seq"] if rep < seq_reps else []) + [2]
        order = (order if rep % 2 == 0 else order[::-1]) + ([1] if rep < one_cpu_reps else [])
        for what in order:
            if what == "seq":
                seq.append(_spawn(["sequential", str(spec)]))
            else:
                results = workdir / f"results-{spec.stem}-{what}-{rep}"
                runs[what].append(_spawn(["ray", str(spec), str(results), str(what)]))
            log(f"  {spec.stem} rep {rep}: {what} done")
    summary = {}
    for w, rs in ((w, rs) for w, rs in runs.items() if rs):
        pairs = [_pair(seq[min(r, len(seq) - 1)], run, w) for r, run in enumerate(rs)]
        summary[w] = {k: [p[k] for p in pairs] for k in pairs[0]}
    return summary


def fmt(values: list[float], digits: int = 2) -> str:
    """Median (min–max) over repetitions; the value alone for one."""
    med, lo, hi = (f"{v:.{digits}f}" for v in (statistics.median(values), min(values), max(values)))
    return med if len(values) == 1 else f"{med} ({lo}–{hi})"


def _table(caption: str, sweeps: dict[str, dict]) -> Table:
    cell = {"trials": lambda v: v[0], "failed": sum}  # the rest: median (min–max)
    rows = [
        [name, w, *(cell.get(k, fmt)(v) for k, v in m.items())]
        for name, summary in sweeps.items()
        for w, m in sorted(summary.items(), reverse=True)
    ]
    header = next(iter(next(iter(sweeps.values())).values()))
    return Table(caption, ["sweep", "workers", *header], rows)


def run(quick: bool, workdir: Path, log=print) -> Section:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = quick_sweep_spec(workdir, quick)
    sweeps = {"quick.yaml": measure(spec, workdir, 1 if quick else 2, 0 if quick else 1, 1, log)}
    measurements: dict[str, Any] = {"sweeps": sweeps}
    bars, tables = [], []
    if not quick:  # the smoke run stays at one Ray session
        steps, per_step = calibrate_long_steps(21.0)
        long = measure(long_sweep_spec(workdir, steps), workdir, 2, 1, 2, log)
        sweeps[f"long: 4 × STE CNN/digits, {steps} steps (~21 s each)"] = long
        scaling = [a / b for a, b in zip(long[1]["sweep wall s"], long[2]["sweep wall s"])]
        measurements |= {"long_steps": steps, "long_s_per_step": per_step, "scaling": scaling}
        tables.append(
            Table("Long trials: scaling", ["sweep wall, 1 worker / 2 workers"], [[fmt(scaling)]])
        )
        efficiency = statistics.median(long[2]["parallel efficiency"])
        name = "§4 parallel efficiency, 2 workers, trials ≥ 20 s"
        bars.append(Bar(name, efficiency, EFFICIENCY_BAR, ">="))
    caption = "Sequential (one process) vs `qsweep run --num-cpus N`; median (min–max) over reps"
    return Section(KEY, TITLE, [_table(caption, sweeps), *tables], bars, measurements)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    out = _sequential(*args) if mode == "sequential" else _ray(args[0], args[1], int(args[2]))
    print(MARK + json.dumps(out), flush=True)
