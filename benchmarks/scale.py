"""Section 7: 10,000 trials — qsweep's service vs bare Ray Tune, on one node and on three.

A trivial trainable (no torch: ``SLEEP_S`` of ``time.sleep`` split over ``EVALS`` calls of
``tune.report``, each a record shaped like ``contract.record.Evaluation``) is run for N
planned trials four ways, each in a fresh driver process:

- ``bare-*``: ``tune.Tuner`` over ``tune.grid_search`` of the N planned ids, a plain
  ``tune.RunConfig`` on local storage (``verbose=0``), no callbacks of ours;
- ``qsweep-*``: the same trainable run by qsweep's service: a ``SweepPlan`` of N trials
  (``service.spec.parse_spec``), ``service.runner.prepare`` writing spec and plan, the
  callbacks ``service.runner`` gives a sweep (the Parquet sink, the progress printer) and
  the ones ``service.tuner.build_tuner`` adds, which builds the Tuner
  (``build_tuner(..., trainable=...)``: only the trainable is swapped);

each on ``*-embedded`` (``ray.init(num_cpus=2)``) and ``*-cluster`` (a 3-node local
cluster, ``ray.cluster_utils.Cluster``: a head with 0 CPUs and two worker nodes with one
CPU each, all on 127.0.0.1, storage on the local disk they share). Both sides get the same
Ray (``log_to_driver=False``, no dashboard) and the same Tune settings besides the
callbacks: ``reuse_actors=True`` (Ray's own 10,000-trial release test uses it, and so does
qsweep) and ``TRIAL_CPU`` CPU per trial, so 16 trials run at once on the 2 CPUs, as in
Ray's release test (16 CPUs, one per trial). The first trial of each worker process waits
at a barrier until 16 are up (``make_trivial_trainable`` says why Tune needs that with 0.1 s
trials on 2 cores); from then on the 16 actors are reused and the driver sets the pace,
which is what this measures. The warm-up is reported apart.

Recorded per run: the wall time of ``Tuner.fit()``, the driver's CPU seconds per trial
(``time.process_time``, every thread of the driver process), its peak RSS
(``getrusage``), events per second (trial starts + completions + results), trials
completed; for qsweep that trials.parquet has one row per trial and the curves no
duplicate ``(trial_id, step)`` (``contract.storage.read_results``).

Also, without Ray: the cost of one status event (``service.ledger.ResultsLedger.start`` /
``complete``) with 1k, 10k and 100k trials registered, and of one fold
(``ResultsLedger.write_trials``); and ``qsweep status DIR`` / ``qsweep report DIR`` on the
N-trial qsweep results folder, each a whole command.

Each configuration writes ``<dir>/<config>-<N>.json`` and is skipped when that file exists
(``--force`` measures it again), so the long runs go one at a time::

    python -m benchmarks.scale --config qsweep-embedded     # one configuration
    python -m benchmarks.scale --profile --trials 1000       # the qsweep driver under cProfile
    python -m benchmarks --only scale                        # the section, from the files

``<dir>`` is ``$QSWEEP_BENCH_SCALE_DIR`` or ``~/.cache/qsweep-bench/scale``. The section
(``run``) never starts a missing 10,000-trial Ray run itself (each takes minutes): it
reports it as not measured; it measures the ledger's event costs, and the status/report
times once the qsweep-embedded folder exists. ``--quick``: N = 200, the embedded pair only,
0.5 CPU per trial (4 at once: 16 workers take ~20 s to start on 2 cores), in the run's
temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Bar, Section, fmt_bytes, table

KEY = "scale"
TITLE = "7. 10,000 trials: qsweep vs bare Ray Tune"
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
DIR_ENV = "QSWEEP_BENCH_SCALE_DIR"
DEFAULT_DIR = Path("~/.cache/qsweep-bench/scale")

FULL_TRIALS = 10_000
QUICK_TRIALS = 200
SLEEP_S = 0.1  # one trial's "work"
EVALS = 3  # tune.report calls per trial
STEPS_PER_EVAL = 10
NUM_CPUS = 2  # the embedded cluster's CPUs; the 3-node cluster: 0 + 1 + 1
TRIAL_CPU = 0.125  # -> 16 trials at once on 2 CPUs
QUICK_TRIAL_CPU = 0.5  # quick mode: 4 at once (16 workers take ~20 s to start on 2 cores)
CONCURRENT = int(NUM_CPUS / TRIAL_CPU)
BARRIER_TIMEOUT_S = 300.0
ESTIMATORS = ("ste", "nspsa", "fogzo", "mezo", "quzo")
BITS = (2, 3, 4, 8)  # x estimators = 20 trials per seed
RUNS = ("bare-embedded", "qsweep-embedded", "bare-cluster", "qsweep-cluster")
CONFIGS = (*RUNS, "events", "cli")
EVENT_SIZES = (1_000, 10_000, 100_000)
QUICK_EVENT_SIZES = (500, 5_000)
EVENT_SAMPLE = 200  # trials whose start / result / complete are timed, per size

WALL_BAR = 1.10  # qsweep fit wall / bare Tune's
RSS_BAR_GIB = 1.0
EVENT_GROWTH_BAR = 2.0  # median status event at the largest size / at 1k trials
STATUS_BAR_S = 2.0
REPORT_BAR_S = 30.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the trainable


def make_trivial_trainable(
    sleep_s: float = SLEEP_S,
    evals: int = EVALS,
    barrier: str | None = None,
    actors: int = CONCURRENT,
    barrier_timeout_s: float = BARRIER_TIMEOUT_S,
) -> Callable:
    """A function trainable that does no work: ``sleep_s`` of sleep in ``evals`` pieces, a
    ``tune.report`` after each with a record as ``trainers.run_trial`` makes it (the ids
    ``service.tuner.train_one`` adds included). A closure, so Ray ships it by value and a
    worker imports nothing of qsweep (no torch).

    ``barrier`` (a folder every node sees): the first trial of each worker process waits
    there until ``actors`` processes have arrived (at most ``barrier_timeout_s``). Without
    it Tune never gets past ~2 live actors on 2 cores with 0.1 s trials: with
    ``reuse_actors`` a finished trial's actor goes to the next trial, and the actor that was
    starting for that trial (seconds, on a loaded 2-core machine) is killed; so trials run
    on the one or two actors that were up before the first trial ended, and the CPU goes
    into starting workers that are killed. With the barrier no trial ends before
    ``actors`` are up, and from then on every finished trial's actor is reused."""

    def trivial(config: dict[str, Any]) -> None:
        import socket

        import ray
        from ray import tune

        if barrier is not None:
            _wait_at_barrier(barrier, actors, barrier_timeout_s)
        where = {
            "trial_id": config.get("planned_id"),
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }
        started = time.perf_counter()
        for k in range(1, evals + 1):
            time.sleep(sleep_s / evals)
            step = k * STEPS_PER_EVAL
            loss = 2.0 / (1 + k)
            tune.report(
                {
                    "step": step,
                    "forwards": step,
                    "backwards": step,
                    "flops": 1e5 * step,
                    "wall_s": time.perf_counter() - started,
                    "train_loss": loss * 1.05,
                    "eval_loss": loss,
                    "eval_metric": 1.0 - loss / 2.5,
                    "metric_name": "accuracy",
                    "peak_memory_bytes": 4096,
                    "num_params": 760,
                    "progress": k / evals,
                    "done": k == evals,
                    **where,
                }
            )

    return trivial


def _wait_at_barrier(barrier: str, actors: int, timeout_s: float) -> None:
    """The first call in a process: arrive (one file per process) and wait for ``actors``."""
    import socket

    mine = os.path.join(barrier, f"{socket.gethostname()}-{os.getpid()}")
    if os.path.exists(mine):
        return
    with open(mine, "w"):
        pass
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(barrier)) < actors and time.monotonic() < deadline:
        time.sleep(0.05)


def barrier_released(barrier: Path, actors: int) -> float | None:
    """When the ``actors``-th process arrived (epoch seconds), None if fewer did."""
    arrivals = sorted(p.stat().st_mtime for p in barrier.iterdir())
    return arrivals[actors - 1] if len(arrivals) >= actors else None


def spec_data(n_trials: int, results: str, trial_cpu: float = TRIAL_CPU) -> dict[str, Any]:
    """A grid of ``n_trials`` (rounded up to a multiple of 20: estimators x bits x seeds)."""
    seeds = max(1, math.ceil(n_trials / (len(ESTIMATORS) * len(BITS))))
    return {
        "name": "scale",
        "results": results,
        "grid": {"estimators": list(ESTIMATORS), "bits": list(BITS), "seeds": list(range(seeds))},
        "trial": {"num_evals": EVALS},
        "budget": {"steps": EVALS * STEPS_PER_EVAL},
        "resources": {"cpus": trial_cpu},
        "retries": 0,
        "checkpoint_every": 0,
    }


def planned_ids(n_trials: int) -> list[str]:
    """The planned trial ids of ``spec_data`` (the bare side's grid) without expanding it."""
    from service.spec import parse_spec

    return [t.trial_id for t in parse_spec(spec_data(n_trials, "unused")).trials]


# ------------------------------------------------------------------------------ one driver


def _start_ray(cluster: str, qsweep: bool) -> Callable[[], None]:
    """Ray on loopback in a fresh RAY_TMPDIR: embedded (NUM_CPUS) or a 3-node cluster;
    returns what stops it. qsweep joins through ``service.runner.connect``."""
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="qsb-", dir="/tmp")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # bind to 127.0.0.1 only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    if qsweep:
        from service.runner import connect
    if cluster == "embedded":
        if qsweep:
            connect(None, dashboard=False, num_cpus=NUM_CPUS)
        else:
            ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
        return ray.shutdown
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    for i in (1, 2):
        nodes.add_node(num_cpus=1, runtime_env_dir_name=f"runtime_resources_{i}")
    nodes.wait_for_nodes()
    if qsweep:
        connect(nodes.address, dashboard=False)
    else:
        ray.init(address=nodes.address, log_to_driver=False)

    def stop() -> None:
        ray.shutdown()
        nodes.shutdown()

    return stop


def _bare_tuner(ids: list[str], storage: Path, trainable: Callable, trial_cpu: float):
    from ray import tune

    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": trial_cpu}),
        param_space={"planned_id": tune.grid_search(ids)},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=str(storage), verbose=0),
    )


def _qsweep_tuner(run, trainable: Callable):
    """What ``service.runner.run_sweep`` builds for a grid sweep without a stage, with the
    trainable swapped."""
    from ray import tune

    from service.runner import _callbacks
    from service.tuner import build_tuner

    resources = {"cpu": run.spec.resources.cpus, "gpu": run.spec.resources.gpus}
    return build_tuner(
        run.plan,
        run.sweep_dir,
        _callbacks(run, live=False),
        trainable=tune.with_resources(trainable, resources),
    )


def _non_ray_profile(stats, total_s: float, top: int = 20) -> str:
    """The ``top`` functions outside Ray (and outside the interpreter's built-ins) by
    cumulative time, as Markdown."""
    from benchmarks.common import _short_path

    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in sorted(
        stats.stats.items(), key=lambda kv: kv[1][3], reverse=True
    ):
        if "/ray/" in filename or filename == "~" or filename.startswith("<"):
            continue
        if "threading.py" in filename or "benchmarks/scale.py" in filename:
            continue
        rows.append(
            [
                f"`{name}` ({_short_path(filename)}:{line})",
                ncalls,
                f"{tottime:.2f}",
                f"{cumtime:.2f}",
                f"{cumtime / total_s:.1%}",
            ]
        )
        if len(rows) == top:
            break
    return table(["function", "calls", "own s", "cumulative s", "share of fit"], rows)


def drive(
    config: str,
    n_trials: int,
    workdir: Path,
    sleep_s: float = SLEEP_S,
    evals: int = EVALS,
    profile: bool = False,
    trial_cpu: float = TRIAL_CPU,
) -> dict[str, Any]:
    """One run (``bare-embedded`` ...) in this process, which must be fresh: the numbers
    are this process's CPU time and peak RSS."""
    side, cluster = config.split("-")
    started = time.perf_counter()
    import ray  # noqa: F401 - imports timed with the rest
    from ray import tune  # noqa: F401

    barrier = workdir / "barrier"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir(parents=True)
    concurrent = int(NUM_CPUS / trial_cpu)
    trainable = make_trivial_trainable(sleep_s, evals, str(barrier), concurrent)
    run = None
    if side == "qsweep":
        from service.runner import prepare
        from service.spec import parse_spec

        plan = parse_spec(spec_data(n_trials, str(workdir / "results"), trial_cpu))
        run = prepare(plan, str(workdir / "results"), overwrite=True)
        ids = [t.trial_id for t in plan.trials]
    else:  # the planned ids, from the parent: this driver imports nothing of qsweep (torch)
        ids = json.loads((workdir / "ids.json").read_text())
    prepared = time.perf_counter()
    stop = _start_ray(cluster, side == "qsweep")
    ray_up = time.perf_counter()
    tuner = (
        _qsweep_tuner(run, trainable)
        if run is not None
        else _bare_tuner(ids, workdir / "bare", trainable, trial_cpu)
    )
    cpu0, t0, fit_began = time.process_time(), time.perf_counter(), time.time()
    stats = None
    if profile:
        from benchmarks.common import cprofile_stats

        box = {}
        stats = cprofile_stats(lambda: box.setdefault("grid", tuner.fit()))
        grid = box["grid"]
    else:
        grid = tuner.fit()
    fit_s, cpu_s, fit_ended = time.perf_counter() - t0, time.process_time() - cpu0, time.time()
    released = barrier_released(barrier, concurrent)
    warmup_s = (released - fit_began) if released else math.nan
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = errors = completed = 0
    for result in grid:
        metrics = result.metrics or {}
        results += int(metrics.get("training_iteration") or 0)
        if result.error is not None:
            errors += 1
        elif metrics.get("done") and metrics.get("progress") == 1.0:
            completed += 1
    stop()
    out: dict[str, Any] = {
        "config": config,
        "trials": len(ids),
        "completed": completed,
        "errors": errors,
        "results": results,
        "events": 2 * len(ids) + results,
        "fit_s": fit_s,
        "warmup_s": warmup_s,  # until `concurrent` actors were up (the barrier)
        "steady_s": fit_ended - released if released else math.nan,
        "actors": len(list(barrier.iterdir())),
        "driver_cpu_s": cpu_s,
        "peak_rss_bytes": rss_kb * 1024,
        "prepare_s": prepared - started,
        "ray_start_s": ray_up - prepared,
        "sleep_s": sleep_s,
        "evals": evals,
        "trial_cpu": trial_cpu,
        "concurrent": concurrent,
        "load": os.getloadavg()[0],
    }
    if stats is not None:
        out["profile"] = _non_ray_profile(stats, fit_s)
        stats.dump_stats(str(workdir / "driver.prof"))  # for pstats / snakeviz
        out["profile_file"] = str(workdir / "driver.prof")
    if run is not None:  # checked as the sweep left it, then compacted as `qsweep run` does
        from contract.curves import compact_curves

        flat = check_results(run.sweep_dir, len(ids), evals)
        out["flat_duplicate_steps"] = flat["duplicate_steps"]
        out["flat_curve_rows"] = flat["curve_rows"]
        out["compact_s"] = _timed(lambda: compact_curves(run.sweep_dir))
        out.update(check_results(run.sweep_dir, len(ids), evals))
        out["sweep_dir"] = run.sweep_dir
    else:
        shutil.rmtree(workdir / "bare", ignore_errors=True)  # 10,000 trial folders
    return out


def check_results(sweep_dir: str, n_trials: int, evals: int) -> dict[str, Any]:
    """One row per trial, no duplicate (trial_id, step), every curve row there."""
    from contract.storage import read_results

    t0 = time.perf_counter()
    trials, curves = read_results(sweep_dir)
    ids = trials.column("trial_id").to_pylist()
    keys = list(zip(curves.column("trial_id").to_pylist(), curves.column("step").to_pylist()))
    statuses = trials.column("status").to_pylist()
    return {
        "parquet_rows": trials.num_rows,
        "distinct_trials": len(set(ids)),
        "parquet_completed": statuses.count("completed"),
        "curve_rows": curves.num_rows,
        "expected_curve_rows": n_trials * evals,
        "duplicate_steps": len(keys) - len(set(keys)),
        "read_results_s": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------ ledger events


def event_costs(sizes: tuple[int, ...], workdir: Path, sample: int = EVENT_SAMPLE) -> list[dict]:
    """Per size: register that many trials in a fresh ``ResultsLedger`` (no Ray), fold once
    (``write_trials``, timed), then time ``start``, one ``result`` and ``complete`` for
    ``sample`` trials spread over the table; folds the ledger's timer makes meanwhile are
    counted and included in the means."""
    from service.spec import parse_spec

    base = parse_spec(spec_data(1, "unused")).trials[0].config
    out = []
    for n in sizes:
        where = workdir / f"ledger-{n}"
        shutil.rmtree(where, ignore_errors=True)
        out.append(_event_cost(n, where, base, sample))
        shutil.rmtree(where, ignore_errors=True)
        log(
            f"  ledger with {n:,} trials: status event {out[-1]['status_median_ms']:.2f} ms "
            f"median, fold {out[-1]['fold_s']:.3f} s"
        )
    return out


RECORD = {"step": 10, "eval_loss": 1.0, "eval_metric": 0.5, "train_loss": 1.0, "progress": 1.0}


def _event_cost(n: int, where: Path, base: dict[str, Any], sample: int) -> dict[str, Any]:
    from service.ledger import ResultsLedger

    ledger = ResultsLedger(str(where), "scale", {"bench": "1"})
    t0 = time.perf_counter()
    for i in range(n):
        ledger.register(f"t{i:07d}", {**base, "seed": i})
    register_s = time.perf_counter() - t0
    fold_s = _timed(ledger.write_trials)
    fold_times: list[float] = []
    write_trials = ledger.write_trials

    def counted() -> None:
        t = time.perf_counter()
        write_trials()
        fold_times.append(time.perf_counter() - t)

    ledger.write_trials = counted  # the ledger's own timer calls self.write_trials()
    picked = [f"t{i:07d}" for i in range(0, n, max(1, n // sample))][:sample]
    start, result, complete = [], [], []
    window = time.perf_counter()
    for tid in picked:
        start.append(_timed(lambda tid=tid: ledger.start(tid)))
        result.append(_timed(lambda tid=tid: ledger.result(tid, {**RECORD, "done": True})))
        complete.append(_timed(lambda tid=tid: ledger.complete(tid)))
    window = time.perf_counter() - window
    ledger.write_trials = write_trials
    final_fold_s = _timed(ledger.write_trials)
    status = start + complete
    return {
        "trials": n,
        "register_s": register_s,
        "fold_s": min(fold_s, final_fold_s),
        "start_ms": 1e3 * statistics.median(start),
        "complete_ms": 1e3 * statistics.median(complete),
        "result_ms": 1e3 * statistics.median(result),
        "status_median_ms": 1e3 * statistics.median(status),
        "status_p90_ms": 1e3 * statistics.quantiles(status, n=10)[-1],
        "status_mean_ms": 1e3 * statistics.fmean(status),
        "folds": len(fold_times),
        "fold_in_window_s": sum(fold_times),
        "sample": len(picked),
        "window_s": window,
    }


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ the CLI


def cli_times(sweep_dir: str, reps: int, report: bool = True) -> dict[str, Any]:
    """``qsweep status DIR`` and ``qsweep report DIR``: whole commands, as a user types them."""
    exe = shutil.which("qsweep") or str(Path(sys.executable).with_name("qsweep"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def run(*args: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=1800, env=env, cwd=REPO
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"qsweep {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return wall

    status = [run("status", sweep_dir) for _ in range(reps)]
    reports = [run("report", sweep_dir) for _ in range(reps)] if report else []
    return {"sweep_dir": sweep_dir, "status_s": status, "report_s": reports}


# ------------------------------------------------------------------------------ orchestration


def result_dir(override: str | Path | None = None) -> Path:
    where = Path(override or os.environ.get(DIR_ENV) or DEFAULT_DIR).expanduser().resolve()
    where.mkdir(parents=True, exist_ok=True)
    return where


def _result_file(where: Path, config: str, n_trials: int) -> Path:
    return where / ("events.json" if config == "events" else f"{config}-{n_trials}.json")


def _spawn(args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One driver in a fresh process (``python -m benchmarks.scale --worker JSON``)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--worker", json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"scale benchmark {args['config']} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    out = json.loads(lines[-1][len(MARK) :])
    out["process_s"] = time.perf_counter() - started
    return out


def measure(
    config: str,
    n_trials: int,
    where: Path,
    force: bool = False,
    quick: bool = False,
    profile: bool = False,
) -> dict[str, Any] | None:
    """Measure one configuration unless its result file exists (``force``: again); the
    result, or None where it cannot run yet (``cli`` before ``qsweep-embedded``)."""
    path = _result_file(where, config, n_trials)
    if profile:
        path = where / f"profile-{n_trials}.json"
    if path.exists() and not force:
        log(f"  {config}: kept {path}")
        return json.loads(path.read_text())
    log(f"  {config}: measuring ({n_trials:,} trials)" if config in RUNS else f"  {config}")
    if config in RUNS:
        workdir = where / (f"profile-{n_trials}" if profile else f"{config}-{n_trials}")
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        if config.startswith("bare"):
            (workdir / "ids.json").write_text(json.dumps(planned_ids(n_trials)))
        args = {
            "config": config,
            "trials": n_trials,
            "workdir": str(workdir),
            "profile": profile,
            "trial_cpu": QUICK_TRIAL_CPU if quick else TRIAL_CPU,
        }
        out = _spawn(args, timeout=4 * 3600)
        if config.startswith("qsweep") and not profile:
            log(
                f"    fit {out['fit_s']:.0f} s, {out['parquet_rows']:,} rows, "
                f"{out['duplicate_steps']} duplicate steps"
            )
        else:
            log(f"    fit {out['fit_s']:.0f} s, {out['completed']:,} completed")
    elif config == "events":
        sizes = QUICK_EVENT_SIZES if quick else EVENT_SIZES
        out = {"sizes": event_costs(sizes, where / "ledger")}
    elif config == "cli":
        source = _result_file(where, "qsweep-embedded", n_trials)
        if not source.exists():
            log(f"  cli: needs {source} (run qsweep-embedded first)")
            return None
        sweep_dir = json.loads(source.read_text())["sweep_dir"]
        out = cli_times(sweep_dir, reps=1 if quick else 2)
        log(
            f"    status {min(out['status_s']):.1f} s, report "
            f"{min(out['report_s'] or [math.nan]):.1f} s"
        )
    else:
        raise ValueError(f"unknown configuration {config!r}; valid: {', '.join(CONFIGS)}")
    out["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path.write_text(json.dumps(out, indent=1))
    return out


# ------------------------------------------------------------------------------ the section


def _ratio(a: dict | None, b: dict | None, key: str) -> float:
    if not a or not b or not b.get(key):
        return math.nan
    return a[key] / b[key]


def _fmt(value: float, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def render(runs: dict[str, dict | None], events: dict | None, cli: dict | None, n: int):
    """The section's Markdown and bars from the measured files."""
    present = {k: v for k, v in runs.items() if v}
    rows = []
    for config in RUNS:
        r = present.get(config)
        if not r:
            rows.append([f"`{config}`", "not measured", *["—"] * 9])
            continue
        side, cluster = config.split("-")
        bare = present.get(f"bare-{cluster}")
        qsweep = side == "qsweep"
        rows.append(
            [
                f"`{config}`",
                f"{r['completed']:,} / {r['trials']:,}",
                f"{r['fit_s']:.0f}",
                f"{r['warmup_s']:.0f}",
                _fmt(_ratio(r, bare, "fit_s")) if qsweep else "1",
                _fmt(_ratio(r, bare, "steady_s")) if qsweep else "1",
                f"{r['trials'] / r['fit_s']:.1f}",
                f"{r['events'] / r['fit_s']:.0f}",
                f"{1e3 * r['driver_cpu_s'] / r['trials']:.1f}",
                fmt_bytes(r["peak_rss_bytes"]),
                f"{r['load']:.1f}",
            ]
        )
    some = next(iter(present.values()), {})
    trial_cpu = some.get("trial_cpu", TRIAL_CPU)
    concurrent = some.get("concurrent", int(NUM_CPUS / trial_cpu))
    lines = [
        f"N = {n:,} trials of a trivial trainable (no torch: {SLEEP_S:g} s of sleep in "
        f"{EVALS} pieces, a `tune.report` of an Evaluation-shaped record after each), "
        f"{trial_cpu:g} CPU per trial so {concurrent} run at once on 2 CPUs "
        "(Ray's 10,000-trial release test runs 16 at once, 1 s each, on 16 CPUs). *bare*: "
        "`tune.Tuner` over a grid of the planned ids, `RunConfig(verbose=0)` on local storage, "
        "no callbacks of ours (Tune's default CSV, JSON and TensorBoard loggers); *qsweep*: the "
        "same trainable under `service.tuner.build_tuner` with the callbacks `service.runner` "
        "gives a sweep (the Parquet sink and its event journal, the progress printer, "
        "TensorBoard, checkpoint pruning), the plan and spec written by `prepare`. Both: "
        "`reuse_actors=True` (as in Ray's release test and in qsweep), the same `ray.init` (no "
        "dashboard, `log_to_driver=False`). *embedded*: `ray.init(num_cpus=2)`; *cluster*: "
        "`ray.cluster_utils.Cluster`, a head with 0 CPUs and two worker nodes with 1 CPU each "
        "on 127.0.0.1, the driver on the head. Each run is a fresh driver process and ran once "
        "(the machine is shared: the 1-minute load average at the end is in the last column).",
        "",
        f"*Warm-up*: the first trial of each worker process waits until {concurrent} have "
        "started. Without that, Tune never gets past one or two live actors here: with "
        "`reuse_actors` a finished trial's actor is handed to the next trial and the actor "
        "being started for that trial (seconds, on 2 loaded cores) is killed, so a 0.1 s trial "
        f"always ends before a new actor is up (measured: 400 trials at {TRIAL_CPU:g} CPU ran "
        "on 2 actors while 97 worker processes were started and killed, ~4 trials/s). After "
        f"the warm-up the {concurrent} actors are reused to the end and the driver sets the "
        "pace, which is what this section measures.",
        "",
        table(
            [
                "configuration",
                "completed",
                "fit wall s",
                "of which warm-up s",
                "qsweep / bare wall",
                "qsweep / bare after warm-up",
                "trials / s",
                "events / s",
                "driver CPU ms / trial",
                "driver peak RSS",
                "load",
            ],
            rows,
        ),
        "",
        "*events* = trial starts + completions + results (each `tune.report` is one result), "
        "per second of `fit()`. *driver CPU* = `time.process_time()` of the driver process "
        "over `fit()` (all its threads, Ray's core worker included), per trial. *driver peak "
        "RSS* = `ru_maxrss` of the driver process (qsweep's includes torch, which "
        "`service.tuner` imports).",
        "",
    ]
    extra = []
    for cluster in ("embedded", "cluster"):
        q, b = present.get(f"qsweep-{cluster}"), present.get(f"bare-{cluster}")
        if q and b:
            ms = 1e3 * (q["driver_cpu_s"] / q["trials"] - b["driver_cpu_s"] / b["trials"])
            extra.append(f"{ms:.1f} ms ({cluster})")
    if extra:
        lines += [
            "qsweep's driver spends " + " and ".join(extra) + " more CPU per trial than bare "
            f"Tune's. With {concurrent} trials of {SLEEP_S:g} s at once the driver sets the "
            "pace, so that time goes straight into the wall time; the profile below (when "
            "measured) says where.",
            "",
        ]
    checks = [
        [
            f"`{config}`",
            f"{r['parquet_rows']:,} ({r['trials']:,})",
            f"{r['distinct_trials']:,}",
            f"{r['parquet_completed']:,}",
            f"{r['curve_rows']:,} ({r['expected_curve_rows']:,})",
            f"{r.get('flat_duplicate_steps', '—')} / {r['duplicate_steps']}",
            _fmt(r.get("compact_s", math.nan), 1),
        ]
        for config, r in present.items()
        if config.startswith("qsweep") and "parquet_rows" in r
    ]
    if checks:
        lines += [
            "qsweep's results after each run (`contract.storage.read_results`), as the sweep "
            "left them (one curve file per trial) and after `contract.curves.compact_curves`, "
            "which `qsweep run` calls when a sweep ends (timed here, outside the fit):",
            "",
            table(
                [
                    "configuration",
                    "trials.parquet rows (planned)",
                    "distinct trial ids",
                    "completed",
                    "curve rows (expected)",
                    "duplicate (trial_id, step): flat / compacted",
                    "`compact_curves` s",
                ],
                checks,
            ),
            "",
        ]
    bars = []
    for cluster in ("embedded", "cluster"):
        ratio = _ratio(present.get(f"qsweep-{cluster}"), present.get(f"bare-{cluster}"), "fit_s")
        if not math.isnan(ratio):
            where = "embedded Ray" if cluster == "embedded" else "3-node local cluster"
            bars.append(Bar(f"§7 qsweep / bare Tune wall, {n:,} trials, {where}", ratio, WALL_BAR))
    qsweep_rss = [r["peak_rss_bytes"] for c, r in present.items() if c.startswith("qsweep")]
    if qsweep_rss:
        bars.append(
            Bar(f"§7 qsweep driver peak RSS, {n:,} trials (GiB)", max(qsweep_rss) / 2**30, 1.0)
        )
    lost = [
        abs(r["parquet_rows"] - r["trials"])
        + abs(r["distinct_trials"] - r["trials"])
        + r["duplicate_steps"]
        + r.get("flat_duplicate_steps", 0)
        + abs(r.get("flat_curve_rows", r["expected_curve_rows"]) - r["expected_curve_rows"])
        + abs(r["curve_rows"] - r["expected_curve_rows"])
        for c, r in present.items()
        if c.startswith("qsweep") and "parquet_rows" in r
    ]
    if lost:
        bars.append(
            Bar(f"§7 trial rows / curve rows lost or duplicated, {n:,} trials", sum(lost), 0)
        )
    if events:
        sizes = events["sizes"]
        lines += [
            "**Cost of one status event** on `service.ledger.ResultsLedger` alone (no Ray): "
            "that many trials registered, one fold, then `start`, one `result` and `complete` "
            f"timed for {sizes[0]['sample']} trials spread over the table. A status event "
            "writes the trial's row as one small event file (`contract.journal`); a *fold* "
            "(`write_trials`) rewrites trials.parquet whole and runs on the ledger's timer "
            "(at least 2 s and 50 x its own cost apart); the mean includes the folds that fell "
            "into the timed window.",
            "",
            table(
                [
                    "trials",
                    "start ms (median)",
                    "complete ms (median)",
                    "status event p90 ms",
                    "status event mean ms (folds incl.)",
                    "folds in window",
                    "result ms (median)",
                    "one fold s",
                    "register all s",
                ],
                [
                    [
                        f"{s['trials']:,}",
                        f"{s['start_ms']:.2f}",
                        f"{s['complete_ms']:.2f}",
                        f"{s['status_p90_ms']:.2f}",
                        f"{s['status_mean_ms']:.2f}",
                        s["folds"],
                        f"{s['result_ms']:.2f}",
                        f"{s['fold_s']:.3f}",
                        f"{s['register_s']:.2f}",
                    ]
                    for s in sizes
                ],
            ),
            "",
        ]
        growth = sizes[-1]["status_median_ms"] / sizes[0]["status_median_ms"]
        bars.append(
            Bar(
                f"§7 status event at {sizes[-1]['trials']:,} / at {sizes[0]['trials']:,} trials",
                growth,
                EVENT_GROWTH_BAR,
            )
        )
    if cli:
        status = statistics.median(cli["status_s"])
        lines += [
            f"**`qsweep status` and `qsweep report`** on the {n:,}-trial qsweep results "
            "folder (`qsweep-embedded`), each the whole command (Python start and imports "
            f"included), median of {len(cli['status_s'])}:",
            "",
            table(
                ["command", "wall s", "runs", "goal"],
                [
                    ["`qsweep status DIR`", f"{status:.2f}", len(cli["status_s"]), "≤ 2 s"],
                ]
                + (
                    [
                        [
                            "`qsweep report DIR`",
                            f"{statistics.median(cli['report_s']):.1f}",
                            len(cli["report_s"]),
                            "≤ 30 s",
                        ]
                    ]
                    if cli["report_s"]
                    else []
                ),
            ),
            "",
        ]
        bars.append(Bar(f"§7 `qsweep status` on {n:,} trials (s)", status, STATUS_BAR_S))
        if cli["report_s"]:
            bars.append(
                Bar(
                    f"§7 `qsweep report` on {n:,} trials (s)",
                    statistics.median(cli["report_s"]),
                    REPORT_BAR_S,
                )
            )
    return "\n".join(lines), bars


def run(quick: bool, workdir: Path, log=log) -> Section:
    """Quick: N = 200 on the embedded cluster, measured in ``workdir``. Full: N = 10,000 from
    the files in ``result_dir()``; a missing Ray run is not started here (each takes many
    minutes: ``python -m benchmarks.scale --config NAME``), only the ledger's event costs
    and, once the qsweep-embedded folder exists, the status/report times are measured."""
    n = QUICK_TRIALS if quick else FULL_TRIALS
    where = result_dir(workdir if quick else None)
    measured: dict[str, dict | None] = {}
    for config in RUNS:
        path = _result_file(where, config, n)
        if quick and config in RUNS[:2]:
            measured[config] = measure(config, n, where, quick=True)
        elif path.exists():
            measured[config] = json.loads(path.read_text())
        else:
            measured[config] = None
            if not quick:
                log(f"  {config}: not measured (python -m benchmarks.scale --config {config})")
    events = measure("events", n, where, quick=quick)
    cli = measure("cli", n, where, quick=quick)
    body, bars = render(measured, events, cli, n)
    profiles = [] if quick else sorted(where.glob("profile-*.json"), key=os.path.getmtime)
    if profiles:  # python -m benchmarks.scale --profile --trials 1000 (the newest)
        prof = json.loads(profiles[-1].read_text())
        body += (
            f"\n\n*cProfile of the qsweep driver (`qsweep-embedded`, {prof['trials']:,} "
            f"trials, fit {prof['fit_s']:.0f} s under the profiler), the functions outside "
            "Ray by cumulative time:*\n\n" + prof["profile"] + "\n"
        )
    return Section(KEY, TITLE, body, bars)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Measure configurations of the scale section, one result file each.",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--config",
        action="append",
        choices=CONFIGS,
        help="configuration to measure (repeatable; default: all, in order)",
    )
    parser.add_argument("--trials", type=int, default=FULL_TRIALS, help="N (default 10,000)")
    parser.add_argument("--dir", help=f"result folder (default ${DIR_ENV} or {DEFAULT_DIR})")
    parser.add_argument("--force", action="store_true", help="measure again even if measured")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run qsweep-embedded under cProfile instead (writes profile-N.json)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        out = drive(
            spec["config"],
            spec["trials"],
            Path(spec["workdir"]),
            profile=spec.get("profile", False),
            trial_cpu=spec.get("trial_cpu", TRIAL_CPU),
        )
        print(MARK + json.dumps(out), flush=True)
        return 0
    where = result_dir(args.dir)
    if args.profile:
        out = measure("qsweep-embedded", args.trials, where, force=args.force, profile=True)
        print(out["profile"])
        return 0
    for config in args.config or CONFIGS:
        measure(config, args.trials, where, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
