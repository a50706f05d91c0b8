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
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Bar, Section, run_json_worker, table

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
    trials, train, cpu0 = {}, {}, time.process_time()
    for planned in spec.trials:
        config = dict(planned.config)
        config.setdefault("threads", 1)  # what service.tuner.train_one gives a 1-CPU trial
        t0 = time.perf_counter()
        last = run_trial(config, lambda metrics, **_: None)
        trials[planned.trial_id] = time.perf_counter() - t0
        train[planned.trial_id] = last["wall_s"]
    return {
        "import_s": imported - started,
        "trials": trials,
        "train_s": train,
        "total_s": sum(trials.values()),
        "cpu_share": (time.process_time() - cpu0) / sum(trials.values()),
        "load": os.getloadavg()[0],
    }


def _ray(spec_path: str, results: str, num_cpus: int, profile: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    import ray

    from service.runner import connect, prepare, run_sweep
    from service.spec import load_spec

    spec = load_spec(spec_path)
    run = prepare(spec, results, overwrite=True)
    imported = time.perf_counter()
    connect(None, dashboard=False, num_cpus=num_cpus)
    ray_up = time.perf_counter()
    summary, wait_share, wall_start = None, None, time.time()
    if profile:  # the driver under cProfile (wall clock): where the Tune driver spends the sweep
        from benchmarks.common import cprofile_stats, cumulative_share, stats_table

        stats = cprofile_stats(lambda: run_sweep(run, live=False))
        summary = stats_table(stats, top=16, sort="cumulative")
        wait_share = cumulative_share(stats, "wait", "ray/_private/worker.py")
    else:
        run_sweep(run, live=False)
    swept, wall_end = time.perf_counter(), time.time()
    ray.shutdown()
    down = time.perf_counter()
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(run.sweep_dir, "trials.parquet")).to_pylist()
    trials = {
        r["trial_id"]: {
            "status": r["status"],
            "started": r["started_at"].timestamp(),
            "finished": r["finished_at"].timestamp() if r["finished_at"] else None,
            "wall_s": r["wall_s"],
        }
        for r in rows
    }
    return {
        "import_s": imported - started,
        "ray_start_s": ray_up - imported,
        "sweep_s": swept - ray_up,
        "shutdown_s": down - swept,
        "trials": trials,
        "load": os.getloadavg()[0],
        "profile": summary,
        "wait_share": wait_share,
        "wall_start": wall_start,
        "wall_end": wall_end,
    }


def _worker(argv: list[str]) -> None:
    mode, spec_path = argv[0], argv[1]
    out = (
        _sequential(spec_path)
        if mode == "sequential"
        else _ray(spec_path, argv[2], int(argv[3]), profile=len(argv) > 4 and argv[4] == "profile")
    )
    print(MARK + json.dumps(out), flush=True)


def _spawn(args: list[str], log, timeout: float = 1200) -> dict[str, Any]:
    """Run one worker subprocess (at Ray's worker niceness); its JSON plus the process wall time."""
    out, wall = run_json_worker(
        ["benchmarks.service_overhead", *args],
        MARK,
        f"benchmark worker {args}",
        timeout,
        cwd=REPO,
        preexec_fn=lambda: os.nice(NICE) if args[0] == "sequential" else None,
    )
    out["process_s"] = wall
    return out


# ------------------------------------------------------------------------------------- specs

QUICK_TRIALS = 36  # examples/quick.yaml: 6 estimators x 3 bits x 2 seeds


def quick_sweep_spec(workdir: Path, quick: bool, keep_pretrain: bool = False) -> Path:
    """examples/quick.yaml's 36 trials, or in quick mode 4 of them, without its pre-training
    stage: every trial then trains from scratch, so the one-process baseline needs no stage
    checkpoint and both sides run the same trials (the overhead measured is Tune's, per trial)."""
    data = yaml.safe_load((REPO / "examples" / "quick.yaml").read_text())
    if quick or not keep_pretrain:  # (``keep_pretrain``: the stage too, section 6's full run)
        data.pop("pretrain", None)
    data["results"] = str(workdir / "results")
    if quick:
        data["grid"].update(estimators=["ste", "fogzo"], bits=[2], seeds=[0, 1])
        data["estimators"] = {k: v for k, v in data["estimators"].items() if k in ("ste", "fogzo")}
        data["budget"] = {"steps": 100}
    path = workdir / "quick.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


LONG_TRIAL = {
    "estimator": "ste",
    "model": "cnn",
    "dataset": "digits",
    "batch_size": 64,
    "lr": 0.05,
    "num_evals": 10,
    "threads": 1,
}


def calibrate_long_steps(target_s: float, log) -> tuple[int, float]:
    """Steps of a CNN-on-digits STE trial that take about ``target_s`` seconds in one process.

    Two probe lengths: the slope is the per-step time, without the trial's fixed set-up
    (data, model, FLOP count) that a single short probe would spread over its steps."""
    from trainers import run_trial

    def timed(steps: int) -> float:
        t0 = time.perf_counter()
        run_trial({**LONG_TRIAL, "bits": 2, "steps": steps}, lambda metrics, **_: None)
        return time.perf_counter() - t0

    short, long = 300, 1200
    timed(short)  # warm-up: imports, first-call allocations
    t_short, t_long = timed(short), timed(long)
    per_step = max((t_long - t_short) / (long - short), 1e-6)
    fixed = max(t_short - short * per_step, 0.0)
    steps = max(long, int((target_s - fixed) / per_step))
    log(
        f"  long trials: {per_step * 1e3:.2f} ms/step + {fixed:.1f} s set-up -> {steps} steps for "
        f"~{target_s:.0f} s"
    )
    return steps, per_step


def long_sweep_spec(workdir: Path, steps: int) -> Path:
    """4 equal trials (STE, CNN on digits, bits 2/4 x seeds 0/1) of ``steps`` steps."""
    trial = {
        k: v
        for k, v in LONG_TRIAL.items()
        if k not in ("estimator", "model", "dataset", "lr", "threads")
    }
    data = {
        "name": "long",
        "results": str(workdir / "results"),
        "grid": {
            "estimators": ["ste"],
            "bits": [2, 4],
            "models": ["cnn"],
            "datasets": ["digits"],
            "seeds": [0, 1],
        },
        "trial": trial,
        "budget": {"steps": steps},
        "estimators": {"ste": {"lr": LONG_TRIAL["lr"]}},
        "resources": {"cpus": 1},
        "retries": 1,
        "checkpoint_every": 5,
    }
    path = workdir / "long.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------- analysis


def _summarise(seq: list[dict], ray_runs: dict[int, list[dict]]) -> dict[str, Any]:
    """Efficiency and overhead per worker count; medians (and ranges) over repetitions.

    Repetition r of the Ray runs is paired with repetition r of the sequential run (they
    were run back to back), so each efficiency is a ratio of two adjacent measurements.
    Tune's own start and stop (sweep start -> first trial start, last trial end -> fit
    returns) are a per-sweep cost, split off from the per-trial overhead.
    """
    out: dict[str, Any] = {
        "seq_total": [s["total_s"] for s in seq],
        "workers": {},
        "seq_train": [sum(s["train_s"].values()) for s in seq],
        "cpu_share": [s["cpu_share"] for s in seq],
        "seq_load": [s["load"] for s in seq],
    }
    n_trials = len(seq[0]["trials"])
    for workers, runs in ray_runs.items():
        w: dict[str, list] = {
            k: []
            for k in (
                "efficiency",
                "efficiency_steady",
                "fixed",
                "overhead",
                "inside",
                "gaps",
                "slow",
                "ray_start",
                "sweep",
                "process",
                "load",
            )
        }
        for r, run in enumerate(runs):
            base = seq[min(r, len(seq) - 1)]
            done = [t for t in run["trials"].values() if t["finished"]]
            first = min(t["started"] for t in run["trials"].values())
            last = max(t["finished"] for t in done)
            fixed = (first - run["wall_start"]) + (run["wall_end"] - last)
            steady = run["sweep_s"] - fixed
            spans = sum(t["finished"] - t["started"] for t in done)
            w["efficiency"].append(base["total_s"] / workers / run["sweep_s"])
            w["efficiency_steady"].append(base["total_s"] / workers / steady)
            w["fixed"].append(fixed)
            w["overhead"].append((steady * workers - base["total_s"]) / n_trials)
            w["inside"].append((spans - base["total_s"]) / n_trials)
            w["gaps"].append((steady * workers - spans) / n_trials)
            w["slow"].append(
                sum(t["wall_s"] or 0.0 for t in run["trials"].values())
                / sum(base["train_s"].values())
            )
            w["ray_start"].append(run["ray_start_s"])
            w["sweep"].append(run["sweep_s"])
            w["process"].append(run["process_s"])
            w["load"].append(run["load"])
        w["failed"] = sum(
            t["status"] != "completed" for run in runs for t in run["trials"].values()
        )
        profiled = next((run for run in runs if run.get("profile")), None)
        w["profile"], w["wait_share"] = (
            (profiled["profile"], profiled["wait_share"]) if profiled else (None, None)
        )
        out["workers"][workers] = w
    return out


def _fmt(values: list[float], digits: int = 2, pct: bool = False) -> str:
    if not values:
        return "—"
    scale, unit = (100, "%") if pct else (1, "")
    med, lo, hi = statistics.median(values) * scale, min(values) * scale, max(values) * scale
    if len(values) == 1:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def _measure(
    spec: Path,
    workdir: Path,
    reps: int,
    one_cpu_reps: int,
    log,
    label: str,
    profile_one_cpu: bool = False,
    seq_reps: int | None = None,
) -> dict[str, Any]:
    """``reps`` sequential/Ray-2 pairs (alternating order), ``one_cpu_reps`` Ray-1 runs."""
    seq, ray_runs = [], {2: [], 1: []}
    seq_reps = reps if seq_reps is None else seq_reps
    for rep in range(reps):
        order = (["seq"] if rep < seq_reps else []) + [2]
        order = order if rep % 2 == 0 else order[::-1]
        if rep < one_cpu_reps:
            order.append(1)
        for what in order:
            if what == "seq":
                seq.append(_spawn(["sequential", str(spec)], log))
                log(f"  {label} rep {rep}: sequential {seq[-1]['total_s']:.1f} s")
            else:
                results = workdir / f"results-{label}-{what}-{rep}"
                args = ["ray", str(spec), str(results), str(what)] + (
                    ["profile"] if what == 1 and profile_one_cpu else []
                )
                ray_runs[what].append(_spawn(args, log))
                run = ray_runs[what][-1]
                log(
                    f"  {label} rep {rep}: ray --num-cpus {what}: start {run['ray_start_s']:.1f} "
                    f"s, sweep {run['sweep_s']:.1f} s"
                )
    return _summarise(seq, ray_runs)


def run(quick: bool, workdir: Path, log=print) -> Section:
    workdir.mkdir(parents=True, exist_ok=True)
    quick_spec = quick_sweep_spec(workdir, quick)
    short = _measure(
        quick_spec,
        workdir,
        reps=1 if quick else 2,
        one_cpu_reps=0 if quick else 1,
        log=log,
        label="quick",
        profile_one_cpu=not quick,
        seq_reps=1,
    )
    if quick:  # one Ray session only: the smoke run must stay short
        return _render(short, None, quick, 0, 0.0)
    target = 21.0
    steps, _ = calibrate_long_steps(target, log)
    long_spec = long_sweep_spec(workdir, steps)
    long = _measure(long_spec, workdir, reps=2, one_cpu_reps=1, log=log, label="long")
    return _render(short, long, quick, steps, target)


_HEADER = [
    "sweep",
    "trials",
    "workers",
    "sequential total s",
    "ideal s",
    "sweep wall s",
    "parallel efficiency",
    "efficiency without Tune start/stop",
    "Tune start + stop s",
    "overhead / trial s",
    "… inside trials s",
    "… between trials s",
    "training time Ray / sequential",
    "Ray start-up s",
    "load avg",
    "failed",
]


def _rows(name: str, data: dict[str, Any], n_trials: int) -> list[list[str]]:
    rows = []
    seq = data["seq_total"]
    for workers, w in sorted(data["workers"].items(), reverse=True):
        if not w["sweep"]:
            continue
        rows.append(
            [
                name,
                n_trials,
                workers,
                _fmt(seq, 1),
                _fmt([s / workers for s in seq], 1),
                _fmt(w["sweep"], 1),
                _fmt(w["efficiency"], 0, pct=True),
                _fmt(w["efficiency_steady"], 0, pct=True),
                _fmt(w["fixed"], 1),
                _fmt(w["overhead"]),
                _fmt(w["inside"]),
                _fmt(w["gaps"]),
                _fmt(w["slow"]),
                _fmt(w["ray_start"], 1),
                _fmt(w["load"], 1),
                w["failed"],
            ]
        )
    return rows


def _render(short: dict, long: dict | None, quick: bool, steps: int, target: float) -> Section:
    n_short = 4 if quick else QUICK_TRIALS
    rows = _rows("quick.yaml" + (" (4 trials, 100 steps)" if quick else ""), short, n_short)
    bars = []
    short_w2 = short["workers"][2]
    if long is None:
        body = (
            "Quick mode: 4 short trials, sequential vs Ray with 2 workers only (no long trials, no "
            "1-worker run).\n\n" + table(_HEADER, rows)
        )
        return Section(KEY, TITLE, body, bars)
    rows += _rows(f"long: 4 × STE CNN/digits, {steps} steps", long, 4)
    lw2 = long["workers"][2]
    bars.append(
        Bar(
            "§4 parallel efficiency, 2 workers, trials ≥ 20 s",
            statistics.median(lw2["efficiency"]),
            EFFICIENCY_BAR,
            ">=",
        )
    )
    scaling = [a / b for a, b in zip(long["workers"][1]["sweep"], long["workers"][2]["sweep"])]
    med = statistics.median
    lines = [
        "Every run is a fresh subprocess. *sequential* = the planned trials one after another in "
        "one process with `trainers.run_trial` (1 torch thread each); *ray* = "
        "`service.runner.connect` + `run_sweep`, i.e. `qsweep run SPEC --no-dashboard --num-cpus "
        "N` (embedded Ray, Parquet sink, checkpoints every 5 evaluations, 1 CPU per trial). Ray "
        "runs trial workers at nice 15, so the sequential runs are niced to 15 too. Ideal = "
        "sequential total / workers; parallel efficiency = ideal / sweep wall, Ray's own start-up "
        "excluded (its own column). The overhead is split into Tune's start + stop (sweep start → "
        "first trial starts, last trial ends → `fit` returns: once per sweep) and a per-trial part "
        "= (rest of the sweep wall × workers − sequential total) / trials, itself split into "
        "*inside* trials (Tune's start→finish of a trial minus its in-process time: a fresh "
        "worker's process start and imports, checkpoints, `tune.report`, CPU contention) and "
        "*between* trials (slots idle while Tune "
        'schedules the next). "training time Ray / sequential" compares the trials\' own reported '
        "training time (`wall_s`): above 1 means the same steps ran slower inside the sweep. "
        "Median (min–max) over repetitions; each Ray run is paired with the sequential run next to "
        "it. Load average = the machine's 1-minute load when the run ended (2 cores; other "
        "people's jobs included).",
        "",
        table(_HEADER, rows),
        "",
        f"- Long trials: {steps} steps each (calibrated to ~{target:.0f} s in one process). "
        f"Scaling from 1 to 2 workers (sweep wall, 1 worker / 2 workers): {_fmt(scaling)} (ideal "
        "2.00).",
        f"- **Long trials, 2 workers: parallel efficiency {_fmt(lw2['efficiency'], 0, pct=True)}** "
        f"(bar ≥ {EFFICIENCY_BAR:.0%}); without Tune's start/stop "
        f"{_fmt(lw2['efficiency_steady'], 0, pct=True)}. Per trial: {med(lw2['overhead']):.1f} s "
        f"overhead, of which {med(lw2['inside']):.1f} s inside trials and {med(lw2['gaps']):.1f} s "
        f"between trials. Inside, the trials' own training ran {med(lw2['slow']):.2f}x as long as "
        f"in one process (≈ {(med(lw2['slow']) - 1) * med(long['seq_train']) / 4:.1f} s per trial "
        "of CPU contention: two trainings plus Ray's processes on two cores); the remainder is "
        "each trial's start in its worker (imports on a fresh worker, dataset, model, FLOP count) "
        "and its checkpoints.",
        f"- **Short trials** (quick.yaml, ~{med(short['seq_total']) / QUICK_TRIALS:.1f} s each in "
        f"one process): efficiency {_fmt(short_w2['efficiency'], 0, pct=True)}. Tune's start + "
        f"stop ({med(short_w2['fixed']):.1f} s) and {med(short_w2['overhead']):.1f} s per trial "
        "dwarf trials this short; the first trial on each worker also pays a fresh Python process "
        "importing torch, Ray Tune and qsweep (actors are reused after that).",
    ]
    w1 = short["workers"][1]
    if w1.get("profile"):
        lines += [
            "",
            "*Where the driver's time goes* — cProfile (wall clock) of `run_sweep` in the "
            "quick.yaml sweep with 1 worker (the 1-worker quick.yaml row above is this profiled "
            f"run): {100 * (w1['wait_share'] or 0):.0f}% of it is `ray.wait`, i.e. the Tune driver "
            "is waiting for the trial worker, not working (its result handling, the Parquet sink "
            "and the progress callback are the small remainder). So the per-trial overhead is on "
            "the worker side — process warm-up, per-trial set-up (dataset, model, FLOP count), "
            "checkpoints — and in CPU contention: on 2 cores, 2 trial processes share the machine "
            "with Ray's driver, raylet, GCS and agents (and here with other people's jobs), which "
            "the sequential baseline does not.",
            "",
            w1["profile"],
        ]
    return Section(KEY, TITLE, "\n".join(lines), bars)


if __name__ == "__main__":
    _worker(sys.argv[1:])
