"""Section 7: N trivial trials (no torch) through bare Ray Tune and through qsweep's service,
embedded and on a 3-node local cluster, each run a fresh driver process; the ledger's
status-event cost as trials grow; ``qsweep status`` / ``report`` on the N-trial folder.

Each configuration is measured once into ``<dir>/<config>-<N>.json`` (``--dir``,
``$QSWEEP_BENCH_SCALE_DIR`` or ~/.cache/qsweep-bench/scale; ``--force`` again):
``python -m benchmarks.scale --config qsweep-embedded``. The section in full mode reads
them and starts no Ray run; ``--quick`` measures the embedded pair, N = 200, in its workdir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Bar, Section, run_json_worker, timed

KEY = "scale"
TITLE = "7. 10,000 trials: qsweep vs bare Ray Tune"
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
DIR_ENV = "QSWEEP_BENCH_SCALE_DIR"
DEFAULT_DIR = Path("~/.cache/qsweep-bench/scale")

FULL_TRIALS, QUICK_TRIALS = 10_000, 200
SLEEP_S = 0.1  # one trial's "work"
EVALS = 3  # tune.report calls per trial
STEPS_PER_EVAL = 10
NUM_CPUS = 2  # the embedded cluster's CPUs; the 3-node cluster: 0 + 1 + 1
TRIAL_CPU = 0.125  # 16 trials at once on 2 CPUs, as Ray's 10,000-trial release test
QUICK_TRIAL_CPU = 0.5  # 4 at once: 16 workers take ~20 s to start on 2 cores
CONCURRENT = int(NUM_CPUS / TRIAL_CPU)
BARRIER_TIMEOUT_S = 300.0
ESTIMATORS, BITS = ("ste", "nspsa", "fogzo", "mezo", "quzo"), (2, 3, 4, 8)  # 20 trials a seed
RUNS = ("bare-embedded", "qsweep-embedded", "bare-cluster", "qsweep-cluster")
CONFIGS = (*RUNS, "events", "cli")
EVENT_SIZES, QUICK_EVENT_SIZES = (1_000, 10_000, 100_000), (500, 5_000)
EVENT_SAMPLE = 200  # trials whose start / result / complete are timed, per size
RECORD = {"step": 10, "eval_loss": 1.0, "eval_metric": 0.5, "train_loss": 1.0, "progress": 1.0}

WALL_BAR = 1.10  # qsweep fit wall / bare Tune's
RSS_BAR_GIB = 1.0
EVENT_GROWTH_BAR = 2.0  # median status event at the largest size / at the smallest
STATUS_BAR_S = 2.0
REPORT_BAR_S = 30.0
RUN_COLUMNS = (
    "config completed trials fit_s warmup_s over_bare over_bare_steady trials_per_s events_per_s"
    " cpu_ms_per_trial rss_gib lost load"
)
CHECK_COLUMNS = (
    "config parquet_rows distinct_trials parquet_completed curve_rows expected_curve_rows"
    " flat_duplicate_steps duplicate_steps compact_s"
)
EVENT_COLUMNS = (
    "trials status_median_ms start_ms complete_ms status_p90_ms status_mean_ms folds result_ms"
    " fold_s register_s"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_trivial_trainable(
    sleep_s: float = SLEEP_S, evals: int = EVALS, barrier: str | None = None,
    actors: int = CONCURRENT, barrier_timeout_s: float = BARRIER_TIMEOUT_S,
) -> Callable:  # fmt: skip
    """``sleep_s`` of sleep in ``evals`` pieces, a ``tune.report`` of an Evaluation-shaped
    record after each; a closure, so a worker imports nothing of qsweep (no torch).
    ``barrier`` (a folder every node sees): the first trial of each worker process waits
    there for ``actors`` processes. Without it, with ``reuse_actors`` and 0.1 s trials, the
    actor starting for the next trial is killed as a finished one takes it: ~2 live actors."""

    def trivial(config: dict[str, Any]) -> None:
        import socket

        import ray
        from ray import tune

        if barrier is not None:
            _wait_at_barrier(barrier, actors, barrier_timeout_s)
        node = ray.get_runtime_context().get_node_id()
        where = {"trial_id": config.get("planned_id"), "host": socket.gethostname()}
        started = time.perf_counter()
        for k in range(1, evals + 1):
            time.sleep(sleep_s / evals)
            step, loss = k * STEPS_PER_EVAL, 2.0 / (1 + k)
            tune.report(
                dict(
                    step=step, forwards=step, backwards=step, flops=1e5 * step,
                    wall_s=time.perf_counter() - started, train_loss=loss * 1.05,
                    eval_loss=loss, eval_metric=1.0 - loss / 2.5, metric_name="accuracy",
                    peak_memory_bytes=4096, num_params=760, progress=k / evals,
                    done=k == evals, node_id=node, **where,
                )
            )  # fmt: skip

    return trivial


def _wait_at_barrier(barrier: str, actors: int, timeout_s: float) -> None:
    """The first call in a process arrives (one file per process) and waits for ``actors``."""
    import socket

    mine = os.path.join(barrier, f"{socket.gethostname()}-{os.getpid()}")
    if os.path.exists(mine):
        return
    Path(mine).touch()
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(barrier)) < actors and time.monotonic() < deadline:
        time.sleep(0.05)


def spec_data(n_trials: int, results: str, trial_cpu: float = TRIAL_CPU) -> dict[str, Any]:
    """A grid of ``n_trials`` (rounded up to a multiple of 20: estimators x bits x seeds)."""
    seeds = list(range(max(1, math.ceil(n_trials / (len(ESTIMATORS) * len(BITS))))))
    grid = {"estimators": list(ESTIMATORS), "bits": list(BITS), "seeds": seeds}
    return dict(
        name="scale", results=results, grid=grid, trial={"num_evals": EVALS},
        budget={"steps": EVALS * STEPS_PER_EVAL}, resources={"cpus": trial_cpu}, retries=0,
        checkpoint_every=0,
    )  # fmt: skip


def _plan(n_trials: int, results: str, trial_cpu: float = TRIAL_CPU):
    from service.spec_loading import parse_spec

    return parse_spec(spec_data(n_trials, results, trial_cpu))


# ------------------------------------------------------------------------------ one driver


def _start_ray(cluster: str, qsweep: bool) -> Callable[[], None]:
    """Ray on loopback in a fresh RAY_TMPDIR, embedded (NUM_CPUS) or a 3-node cluster (head
    0 CPUs, two nodes of 1); qsweep joins through ``service.runner.connect``. What stops it."""
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="qsb-", dir="/tmp")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # bind to 127.0.0.1 only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    nodes = None
    if cluster == "cluster":
        from ray.cluster_utils import Cluster

        head = {"num_cpus": 0, "include_dashboard": False}
        nodes = Cluster(initialize_head=True, head_node_args=head)
        for i in (1, 2):
            nodes.add_node(num_cpus=1, runtime_env_dir_name=f"runtime_resources_{i}")
        nodes.wait_for_nodes()
    if qsweep:
        from service.runner import connect

        connect(nodes and nodes.address, dashboard=False, num_cpus=None if nodes else NUM_CPUS)
    elif nodes:
        ray.init(address=nodes.address, log_to_driver=False)
    else:
        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    return lambda: (ray.shutdown(), nodes and nodes.shutdown())


def _tuner(run, ids: list[str], storage: Path, trainable: Callable, trial_cpu: float):
    """qsweep: what ``service.runner.run_sweep`` builds for a grid sweep, the trainable
    swapped; bare: ``tune.Tuner`` over the planned ids, local storage, no callbacks of ours."""
    from ray import tune

    if run is None:
        return tune.Tuner(
            tune.with_resources(trainable, {"cpu": trial_cpu}),
            param_space={"planned_id": tune.grid_search(ids)},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name="tune", storage_path=str(storage), verbose=0),
        )
    from service.runner import _callbacks
    from service.tuner import build_tuner

    resources = {"cpu": run.spec.resources.cpus, "gpu": run.spec.resources.gpus}
    trainable = tune.with_resources(trainable, resources)
    return build_tuner(run.plan, run.sweep_dir, _callbacks(run, live=False), trainable=trainable)


def drive(config: str, n_trials: int, workdir: Path, trial_cpu: float) -> dict[str, Any]:
    """One run in this process, which must be fresh: its CPU time and peak RSS are the
    driver's. The bare side reads the planned ids from the parent (no qsweep import)."""
    side, cluster = config.split("-")
    started = time.perf_counter()
    import ray  # noqa: F401 - imports timed with the rest
    from ray import tune  # noqa: F401

    barrier = workdir / "barrier"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir(parents=True)
    concurrent = int(NUM_CPUS / trial_cpu)
    trainable = make_trivial_trainable(SLEEP_S, EVALS, str(barrier), concurrent)
    run = None
    if side == "qsweep":
        from service.runner import prepare

        plan = _plan(n_trials, str(workdir / "results"), trial_cpu)
        run = prepare(plan, str(workdir / "results"), overwrite=True)
        ids = [t.trial_id for t in plan.trials]
    else:
        ids = json.loads((workdir / "ids.json").read_text())
    prepared = time.perf_counter()
    stop = _start_ray(cluster, side == "qsweep")
    ray_up = time.perf_counter()
    tuner = _tuner(run, ids, workdir / "bare", trainable, trial_cpu)
    cpu0, t0, fit_began = time.process_time(), time.perf_counter(), time.time()
    grid = tuner.fit()
    fit_s, cpu_s, fit_ended = time.perf_counter() - t0, time.process_time() - cpu0, time.time()
    arrivals = sorted(p.stat().st_mtime for p in barrier.iterdir())
    released = arrivals[concurrent - 1] if len(arrivals) >= concurrent else None
    metrics = [(r.metrics or {}, r.error) for r in grid]
    results = sum(int(m.get("training_iteration") or 0) for m, _ in metrics)
    stop()
    out = dict(
        config=config, trials=len(ids), results=results, events=2 * len(ids) + results,
        completed=sum(e is None and m.get("done") and m.get("progress") == 1.0 for m, e in metrics),
        errors=sum(e is not None for _, e in metrics), fit_s=fit_s, driver_cpu_s=cpu_s,
        warmup_s=released - fit_began if released else math.nan,  # until the barrier let go
        steady_s=fit_ended - released if released else math.nan, actors=len(arrivals),
        peak_rss_bytes=_peak_rss_bytes(),
        prepare_s=prepared - started, ray_start_s=ray_up - prepared, sleep_s=SLEEP_S,
        evals=EVALS, trial_cpu=trial_cpu, concurrent=concurrent, load=os.getloadavg()[0],
    )  # fmt: skip
    if run is None:
        shutil.rmtree(workdir / "bare", ignore_errors=True)  # 10,000 trial folders
        return out
    from contract.curves import compact_curves

    flat = check_results(run.sweep_dir, len(ids))  # as the sweep left it, then compacted
    out |= {"flat_duplicate_steps": flat["duplicate_steps"], "flat_curve_rows": flat["curve_rows"]}
    out["compact_s"] = timed(lambda: compact_curves(run.sweep_dir))
    return out | check_results(run.sweep_dir, len(ids)) | {"sweep_dir": run.sweep_dir}


def _peak_rss_bytes() -> int:
    """This process's own peak RSS (VmHWM): ``ru_maxrss`` keeps the parent's across exec."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def check_results(sweep_dir: str, n_trials: int) -> dict[str, Any]:
    """One row per trial, no duplicate (trial_id, step), every curve row there."""
    from contract.storage import read_results

    t0 = time.perf_counter()
    trials, curves = read_results(sweep_dir)
    ids = trials.column("trial_id").to_pylist()
    keys = list(zip(curves.column("trial_id").to_pylist(), curves.column("step").to_pylist()))
    return dict(
        parquet_rows=trials.num_rows, distinct_trials=len(set(ids)),
        parquet_completed=trials.column("status").to_pylist().count("completed"),
        curve_rows=curves.num_rows, expected_curve_rows=n_trials * EVALS,
        duplicate_steps=len(keys) - len(set(keys)), read_results_s=time.perf_counter() - t0,
    )  # fmt: skip


# ------------------------------------------------------------------------------ no Ray


def event_cost(n: int, where: Path, sample: int = EVENT_SAMPLE) -> dict[str, Any]:
    """``n`` trials registered in a fresh ``ResultsLedger``, one fold (``write_trials``)
    timed, then ``start``, one ``result`` and ``complete`` timed for ``sample`` trials spread
    over the table; the folds the ledger's timer makes meanwhile are counted."""
    from service.ledger import ResultsLedger

    base = _plan(1, "unused").trials[0].config
    shutil.rmtree(where, ignore_errors=True)
    ledger = ResultsLedger(str(where), "scale", {"bench": "1"})
    register_s = timed(lambda: [ledger.register(f"t{i:07d}", base | {"seed": i}) for i in range(n)])
    fold_s, folds, write_trials = timed(ledger.write_trials), [], ledger.write_trials
    ledger.write_trials = lambda: folds.append(timed(write_trials))  # the ledger's timer calls it
    picked = [f"t{i:07d}" for i in range(0, n, max(1, n // sample))][:sample]
    start, result, complete = [], [], []
    for tid in picked:
        start.append(timed(lambda tid=tid: ledger.start(tid)))
        result.append(timed(lambda tid=tid: ledger.result(tid, {**RECORD, "done": True})))
        complete.append(timed(lambda tid=tid: ledger.complete(tid)))
    ledger.write_trials = write_trials
    fold_s, status = min(fold_s, timed(ledger.write_trials)), start + complete
    shutil.rmtree(where, ignore_errors=True)
    ms = lambda fn, times: 1e3 * fn(times)  # noqa: E731
    return dict(
        trials=n, register_s=register_s, fold_s=fold_s, folds=len(folds), sample=len(picked),
        start_ms=ms(statistics.median, start), complete_ms=ms(statistics.median, complete),
        result_ms=ms(statistics.median, result), status_median_ms=ms(statistics.median, status),
        status_p90_ms=1e3 * statistics.quantiles(status, n=10)[-1],
        status_mean_ms=ms(statistics.fmean, status),
    )  # fmt: skip


def cli_times(sweep_dir: str, reps: int) -> dict[str, Any]:
    """``qsweep status DIR`` and ``qsweep report DIR``: whole commands, as a user types them."""
    exe = shutil.which("qsweep") or str(Path(sys.executable).with_name("qsweep"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def cli(*args: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"qsweep {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return time.perf_counter() - t0

    status = [cli("status", sweep_dir) for _ in range(reps)]
    return {"status_s": status, "report_s": [cli("report", sweep_dir) for _ in range(reps)]}


# ------------------------------------------------------------------------------ orchestration


def result_dir(override: str | Path | None = None) -> Path:
    where = Path(override or os.environ.get(DIR_ENV) or DEFAULT_DIR).expanduser().resolve()
    where.mkdir(parents=True, exist_ok=True)
    return where


def _result_file(where: Path, config: str, n_trials: int) -> Path:
    return where / ("events.json" if config == "events" else f"{config}-{n_trials}.json")


def measure(config: str, n: int, where: Path, force: bool = False, quick: bool = False):
    """One configuration unless its result file exists; None where it cannot run yet
    (``cli`` before ``qsweep-embedded``)."""
    path = _result_file(where, config, n)
    if path.exists() and not force:
        log(f"  {config}: kept {path}")
        return json.loads(path.read_text())
    log(f"  {config}: measuring")
    if config in RUNS:
        workdir = where / f"{config}-{n}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        if config.startswith("bare"):
            ids = [t.trial_id for t in _plan(n, "unused").trials]
            (workdir / "ids.json").write_text(json.dumps(ids))
        cpu = QUICK_TRIAL_CPU if quick else TRIAL_CPU
        args = json.dumps(dict(config=config, trials=n, workdir=str(workdir), trial_cpu=cpu))
        worker = ["benchmarks.scale", "--worker", args]
        out, wall = run_json_worker(worker, MARK, f"scale {config}", 4 * 3600, cwd=REPO)
        out["process_s"] = wall  # the worker process, Python start and Ray start included
        log(f"    fit {out['fit_s']:.0f} s, {out['completed']:,} completed")
    elif config == "events":
        sizes = QUICK_EVENT_SIZES if quick else EVENT_SIZES
        out = {"sizes": [event_cost(k, where / f"ledger-{k}") for k in sizes]}
    else:
        source = _result_file(where, "qsweep-embedded", n)
        if not source.exists():
            log(f"  cli: needs {source} (run qsweep-embedded first)")
            return None
        out = cli_times(json.loads(source.read_text())["sweep_dir"], reps=1 if quick else 2)
    out["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path.write_text(json.dumps(out, indent=1))
    return out


# ------------------------------------------------------------------------------ the section


def _lost(r: dict) -> int:
    """Trial rows missing or doubled, curve rows missing or doubled, flat and compacted."""
    n, rows = r["trials"], r["expected_curve_rows"]
    return (
        abs(r["parquet_rows"] - n) + abs(r["distinct_trials"] - n) + r["duplicate_steps"]
        + r["flat_duplicate_steps"] + abs(r["flat_curve_rows"] - rows) + abs(r["curve_rows"] - rows)
    )  # fmt: skip


def _run_row(config: str, r: dict | None, bare: dict | None) -> dict:
    """The numbers a run's row shows, qsweep's over the bare run's on the same Ray."""
    if not r:
        return {"config": config, "completed": "not measured"}
    over = lambda key: r[key] / bare[key] if bare else math.nan  # noqa: E731
    return r | dict(
        over_bare=over("fit_s"), over_bare_steady=over("steady_s"),
        rss_gib=r["peak_rss_bytes"] / 2**30, trials_per_s=r["trials"] / r["fit_s"],
        events_per_s=r["events"] / r["fit_s"],
        cpu_ms_per_trial=1e3 * r["driver_cpu_s"] / r["trials"],
        lost=_lost(r) if config.startswith("qsweep") else "—",
    )  # fmt: skip


def render(runs: dict[str, dict | None], events: dict, cli: dict | None, n: int) -> Section:
    """The section's tables and bars from the measured files."""
    from benchmarks.results_path import dict_table  # not at the top: Ray workers import us

    rows = [_run_row(c, runs[c], runs["bare-" + c.split("-")[1]]) for c in RUNS]
    cpu = next((r["trial_cpu"] for r in runs.values() if r), TRIAL_CPU)
    qsweep = [r for r in rows if r["config"].startswith("qsweep") and "fit_s" in r]
    sizes, bars = events["sizes"], []
    tables = [
        dict_table(f"{n:,} trials of {SLEEP_S:g} s, {cpu:g} CPU each", rows, RUN_COLUMNS),
        dict_table("qsweep's results after each run (`read_results`)", qsweep, CHECK_COLUMNS),
        dict_table("One status event on `ResultsLedger` alone (no Ray)", sizes, EVENT_COLUMNS),
    ]
    for cluster, where in (("embedded", "embedded Ray"), ("cluster", "3-node local cluster")):
        if runs[f"qsweep-{cluster}"] and runs[f"bare-{cluster}"]:
            wall = rows[RUNS.index(f"qsweep-{cluster}")]["over_bare"]
            bars.append(Bar(f"§7 qsweep / bare Tune wall, {n:,} trials, {where}", wall, WALL_BAR))
    if qsweep:
        rss = max(r["rss_gib"] for r in qsweep)
        bars.append(Bar(f"§7 qsweep driver peak RSS, {n:,} trials (GiB)", rss, RSS_BAR_GIB))
        lost = sum(r["lost"] for r in qsweep)
        bars.append(Bar(f"§7 trial rows / curve rows lost or duplicated, {n:,} trials", lost, 0))
    growth = sizes[-1]["status_median_ms"] / sizes[0]["status_median_ms"]
    name = f"§7 status event at {sizes[-1]['trials']:,} / at {sizes[0]['trials']:,} trials"
    bars.append(Bar(name, growth, EVENT_GROWTH_BAR))
    if cli:
        status, report = statistics.median(cli["status_s"]), statistics.median(cli["report_s"])
        commands = [
            {"command": "`qsweep status DIR`", "median_s": status, "runs": len(cli["status_s"])},
            {"command": "`qsweep report DIR`", "median_s": report, "runs": len(cli["report_s"])},
        ]
        caption = f"Whole commands on the {n:,}-trial folder"
        tables.append(dict_table(caption, commands, "command median_s runs"))
        bars.append(Bar(f"§7 `qsweep status` on {n:,} trials (s)", status, STATUS_BAR_S))
        bars.append(Bar(f"§7 `qsweep report` on {n:,} trials (s)", report, REPORT_BAR_S))
    return Section(KEY, TITLE, tables, bars, {"runs": runs, "events": sizes, "cli": cli})


def run(quick: bool, workdir: Path, log=log) -> Section:
    """Quick: N = 200, the embedded pair measured in ``workdir``. Full: N = 10,000 from the
    files in ``result_dir()``; a missing Ray run is reported as not measured."""
    n, where = (QUICK_TRIALS, result_dir(workdir)) if quick else (FULL_TRIALS, result_dir())
    runs = {
        c: measure(c, n, where, quick=True) if quick and "embedded" in c else None for c in RUNS
    }
    for config in [c for c in RUNS if not runs[c]]:
        path = _result_file(where, config, n)
        runs[config] = json.loads(path.read_text()) if path.exists() else None
        log(f"  {config}: {'kept' if path.exists() else 'not measured'} (--config {config})")
    events = measure("events", n, where, quick=quick)
    return render(runs, events, measure("cli", n, where, quick=quick), n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", action="append", choices=CONFIGS, help="default: all, in order")
    parser.add_argument("--trials", type=int, default=FULL_TRIALS, help="N (default 10,000)")
    parser.add_argument("--dir", help=f"result folder (default ${DIR_ENV} or {DEFAULT_DIR})")
    parser.add_argument("--force", action="store_true", help="measure again even if measured")
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        out = drive(spec["config"], spec["trials"], Path(spec["workdir"]), spec["trial_cpu"])
        print(MARK + json.dumps(out), flush=True)
        return 0
    for config in args.config or CONFIGS:
        measure(config, args.trials, result_dir(args.dir), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
