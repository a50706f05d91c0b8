"""Section 6: small trials — ``qsweep run`` vs the plainest ways to run the same trials.

The quick sweep (examples/quick.yaml: a float pre-training stage, then 36 trials of well
under a second each) is run four ways, each a whole fresh command timed from outside:

- ``qsweep``: ``qsweep run SPEC --no-dashboard --num-cpus 2`` — the real thing (embedded
  Ray, Tune, the Parquet sink, checkpoints, the report);
- ``pool``: ``multiprocessing.Pool(2)`` over ``trainers.run_trial`` (the stage first, then
  the trials) — the floor a 2-core parallel runner can hope for;
- ``tune``: a bare Ray Tune script — a function trainable calling ``run_trial`` and
  ``tune.report`` per evaluation, Tune's defaults, no qsweep callbacks, no checkpoints;
- ``loop``: one process calling ``run_trial`` for each trial in turn.

Each mode also records every trial's start and end, so besides the whole command the
table gives the *span* from the first trial's start to the last trial's end: the part a
sweep service can be blamed for once its start-up is paid. Modes run in alternating order
over the repetitions (the machine is shared); ratios are taken within a repetition.

A fifth, ``startup``, runs no trials: it prices the fixed costs a Ray-based command pays
and a forking Pool does not (imports, ``ray.init``, a fresh actor importing the trainable).

``python -m benchmarks.small_trials MODE SPEC WORKDIR`` is one mode's worker (it prints one
``BENCH_JSON:`` line); ``qsweep`` runs as the installed CLI in its own subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Bar, Section, run_json_worker, table
from benchmarks.service_overhead import quick_sweep_spec

KEY = "small_trials"
TITLE = "6. Small trials: `qsweep run` vs multiprocessing.Pool, bare Ray Tune and a loop"
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
WORKERS = 2
WHOLE_BAR = 1.5  # whole qsweep command / whole Pool command
SPAN_BAR = 1.15  # qsweep first-start -> last-end / the Pool's
MODES = ("qsweep", "pool", "tune", "loop")
# Optional: the source tree of an older qsweep (``git worktree add /tmp/old COMMIT``) adds a
# "qsweep-before" mode, its CLI on the same trials, for a before/after in one run.
BEFORE_ENV = "QSWEEP_BENCH_BEFORE_TREE"
TREE_ENV = "QSWEEP_BENCH_TREE"  # the "qsweep" mode's source tree, if not the installed one


# ------------------------------------------------------------------------------ the trials


def _planned(
    spec_path: str, workdir: Path
) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(stage trials, main trials) as ``(trial_id, run_trial config)``; ``stage:`` hand-overs
    point at files under ``workdir/stages``."""
    from service.spec import STAGE_PREFIX, load_spec

    plan = load_spec(spec_path)
    stages = workdir / "stages"
    stages.mkdir(parents=True, exist_ok=True)

    def config(planned) -> dict:
        out = dict(planned.config)
        out.setdefault("threads", 1)  # what the service gives a 1-CPU trial
        for key in ("init_from", "save_model_to"):
            value = out.get(key)
            if isinstance(value, str) and value.startswith(STAGE_PREFIX):
                out[key] = str(stages / f"{value.removeprefix(STAGE_PREFIX)}.pt")
        return out

    return (
        [(t.trial_id, config(t)) for t in plan.pretrain],
        [(t.trial_id, config(t)) for t in plan.trials],
    )


def _timed_trial(item: tuple[str, dict]) -> tuple[str, float, float]:
    from trainers import run_trial

    trial_id, config = item
    started = time.time()
    run_trial(config, lambda metrics, **_: None)
    return trial_id, started, time.time()


def _loop(spec_path: str, workdir: Path) -> dict[str, Any]:
    stage, trials = _planned(spec_path, workdir)
    return {"trials": [_timed_trial(item) for item in [*stage, *trials]]}


def _pool(spec_path: str, workdir: Path) -> dict[str, Any]:
    import multiprocessing

    stage, trials = _planned(spec_path, workdir)
    with multiprocessing.Pool(WORKERS) as pool:
        done = pool.map(_timed_trial, stage, chunksize=1)
        done += pool.map(_timed_trial, trials, chunksize=1)
    return {"trials": done}


def _bare_tune_trainable(config: dict) -> None:
    from ray import tune

    from trainers import run_trial

    started = time.time()
    run_trial(
        config["trial"],
        lambda metrics, **_: tune.report(
            {**metrics, "bench_start": started, "bench_end": time.time()}
        ),
    )


def _tune(spec_path: str, workdir: Path) -> dict[str, Any]:
    import ray
    from ray import tune

    stage, trials = _planned(spec_path, workdir)
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    done = []
    for name, items in (("stage", stage), ("trials", trials)):
        if not items:  # quick mode has no stage
            continue
        grid = tune.Tuner(
            _bare_tune_trainable,
            param_space={"trial": tune.grid_search([config for _, config in items])},
            run_config=tune.RunConfig(name=name, storage_path=str(workdir / "tune"), verbose=0),
        ).fit()
        done += [
            ("", result.metrics["bench_start"], result.metrics["bench_end"]) for result in grid
        ]
    ray.shutdown()
    return {"trials": done}


def _qsweep(spec_path: str, workdir: Path, tree: str | None = None) -> dict[str, Any]:
    """The installed CLI, as a user runs it (or the CLI of another source ``tree``, e.g. an
    older commit checked out with ``git worktree``); trial times from its trials.parquet."""
    import pyarrow.parquet as pq

    tree = tree or os.environ.get(TREE_ENV)
    data = yaml.safe_load(Path(spec_path).read_text())
    results = workdir / "results"
    exe = shutil.which("qsweep") or str(Path(sys.executable).with_name("qsweep"))
    env = None
    if tree:  # that tree's packages first on the path, run as the CLI's entry point does
        exe = sys.executable
        env = {**os.environ, "PYTHONPATH": tree}
    command = [exe] + (["-c", "from service.cli import main; main()"] if tree else [])
    command += ["run", spec_path, "--no-dashboard", "--num-cpus", str(WORKERS)]
    command += ["--results", str(results), "--overwrite"]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env, cwd=tree or None
    )
    if proc.returncode != 0:
        raise RuntimeError(f"qsweep run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    rows = pq.read_table(results / data["name"] / "trials.parquet").to_pylist()
    return {
        "trials": [
            (r["trial_id"], r["started_at"].timestamp(), r["finished_at"].timestamp()) for r in rows
        ],
        "statuses": sorted({r["status"] for r in rows}),
    }


def _qsweep_before(spec_path: str, workdir: Path) -> dict[str, Any]:
    return _qsweep(spec_path, workdir, os.environ[BEFORE_ENV])


def _import_trainable() -> tuple[int, float]:
    """What a fresh Ray worker pays before its first trial: the trainable's module (torch,
    Ray Tune, trainers). (pid, seconds of import)."""
    started = time.perf_counter()
    import service.tuner  # noqa: F401

    return os.getpid(), time.perf_counter() - started


def _startup(spec_path: str, workdir: Path) -> dict[str, Any]:
    """The fixed costs a Ray-based command pays and a forking Pool does not, one at a time in
    this fresh process: the CLI's imports and spec check, ``ray.init``, a fresh actor's first
    call (worker process start + importing the trainable), and whether an actor lands on a
    worker that a task already warmed (if it did, warming workers early would hide that cost)."""
    import ray

    started = time.perf_counter()
    import service.cli  # noqa: F401
    from service.spec import load_spec

    load_spec(spec_path)
    cli_s = time.perf_counter() - started
    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - started

    @ray.remote(num_cpus=1)
    class Fresh:
        def first(self) -> tuple[int, float]:
            return _import_trainable()

    started = time.perf_counter()
    actors = [Fresh.remote() for _ in range(WORKERS)]
    firsts = ray.get([a.first.remote() for a in actors])
    actor_s = time.perf_counter() - started
    for actor in actors:
        ray.kill(actor)
    warm_task = ray.remote(num_cpus=1)(_import_trainable)
    warm = ray.get([warm_task.remote() for _ in range(WORKERS)])
    actors = [Fresh.remote() for _ in range(WORKERS)]
    after_warm = ray.get([a.first.remote() for a in actors])
    started = time.perf_counter()
    ray.shutdown()
    return {
        "trials": [],
        "cli_s": cli_s,
        "ray_init_s": init_s,
        "actor_first_call_s": actor_s,
        "actor_import_s": statistics.median(s for _, s in firsts),
        "actors_on_warm_workers": len({p for p, _ in after_warm} & {p for p, _ in warm}),
        "actor_import_after_warm_s": statistics.median(s for _, s in after_warm),
        "ray_shutdown_s": time.perf_counter() - started,
    }


WORKERS_BY_MODE = {
    "loop": _loop,
    "pool": _pool,
    "tune": _tune,
    "qsweep": _qsweep,
    "qsweep-before": _qsweep_before,
    "startup": _startup,
}


def _worker(argv: list[str]) -> None:
    mode, spec_path, workdir = argv[0], argv[1], Path(argv[2])
    out = WORKERS_BY_MODE[mode](spec_path, workdir)
    print(MARK + json.dumps(out), flush=True)


def _spawn(mode: str, spec: Path, workdir: Path) -> dict[str, Any]:
    """One mode in a fresh process; its JSON plus the whole command's wall time."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    launched = time.time()  # wall clock, as the trials' stamps
    out, wall = run_json_worker(
        ["benchmarks.small_trials", mode, str(spec), str(workdir)],
        MARK,
        f"benchmark mode {mode}",
        cwd=REPO,
    )
    spans = out.pop("trials")
    if not spans:  # the start-up probe
        return out
    first_start = min(start for _, start, _ in spans)
    last_end = max(end for _, _, end in spans)
    out["whole_s"] = wall
    out["span_s"] = last_end - first_start
    out["lead_s"] = first_start - launched  # command start -> first trial start
    out["tail_s"] = launched + wall - last_end  # last trial end -> command exit
    out["busy_s"] = sum(end - start for _, start, end in spans)
    out["n"] = len(spans)
    return out


# ------------------------------------------------------------------------------ the section


def quick_spec(workdir: Path, quick: bool) -> Path:
    """examples/quick.yaml as it is (its stage included), or in quick mode 4 short trials."""
    return quick_sweep_spec(workdir, quick, keep_pretrain=True)


def _modes() -> tuple[str, ...]:
    return (*MODES, "qsweep-before") if os.environ.get(BEFORE_ENV) else MODES


def measure(spec: Path, workdir: Path, reps: int, log) -> dict[str, list[dict]]:
    modes = _modes()
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for rep in range(reps):
        order = modes if rep % 2 == 0 else modes[::-1]
        for mode in order:
            out = _spawn(mode, spec, workdir / f"{mode}-{rep}")
            runs[mode].append(out)
            log(f"  rep {rep} {mode}: whole {out['whole_s']:.1f} s, span {out['span_s']:.1f} s")
    return runs


STARTUP_ROWS = (
    ("`import service.cli` + the spec check (imports torch)", "cli_s"),
    (f"`ray.init(num_cpus={WORKERS})`, no dashboard", "ray_init_s"),
    (f"{WORKERS} fresh actors' first call, importing the trainable's module", "actor_first_call_s"),
    ("… of which the import, in the actor (median)", "actor_import_s"),
    ("the same import in an actor created after tasks warmed workers", "actor_import_after_warm_s"),
    ("`ray.shutdown()` of the embedded cluster", "ray_shutdown_s"),
)


def _startup_table(probes: list[dict[str, Any]]) -> str:
    rows = [[what, _fmt([p[key] for p in probes], 2)] for what, key in STARTUP_ROWS]
    return table(["fixed cost (one fresh process, one step at a time)", "s"], rows)


def _fmt(values: list[float], digits: int = 1) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def _ratios(runs: dict[str, list[dict]], mode: str, key: str) -> list[float]:
    return [a[key] / b[key] for a, b in zip(runs[mode], runs["pool"])]


def run(quick: bool, workdir: Path, log=print) -> Section:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = quick_spec(workdir, quick)
    reps = 1 if quick else 2
    runs = measure(spec, workdir, reps, log)
    probes = [_spawn("startup", spec, workdir / f"startup-{rep}") for rep in range(reps)]
    rows = []
    for mode in runs:
        r = runs[mode]
        rows.append(
            [
                mode,
                r[0]["n"],
                _fmt([x["whole_s"] for x in r]),
                _fmt(_ratios(runs, mode, "whole_s"), 2),
                _fmt([x["span_s"] for x in r]),
                _fmt(_ratios(runs, mode, "span_s"), 2),
                _fmt([x["lead_s"] for x in r]),
                _fmt([x["tail_s"] for x in r]),
                _fmt([x["busy_s"] / x["n"] for x in r], 2),
            ]
        )
    extra = {
        key: statistics.median(q[key] - p[key] for q, p in zip(runs["qsweep"], runs["pool"]))
        for key in ("whole_s", "lead_s", "span_s", "tail_s")
    }
    reused = sum(p["actors_on_warm_workers"] for p in probes)
    priced = statistics.median(
        p["cli_s"] + p["ray_init_s"] + p["actor_first_call_s"] for p in probes
    )
    lead = statistics.median(x["lead_s"] for x in runs["qsweep"])
    whole = statistics.median(_ratios(runs, "qsweep", "whole_s"))
    span = statistics.median(_ratios(runs, "qsweep", "span_s"))
    bars = [
        Bar("§6 whole `qsweep run` / Pool(2), quick sweep", whole, WHOLE_BAR),
        Bar("§6 first trial start → last trial end, qsweep / Pool(2)", span, SPAN_BAR),
    ]
    statuses = sorted({s for x in runs["qsweep"] for s in x.get("statuses", [])})
    body = "\n".join(
        [
            "Four ways to run the same trials (examples/quick.yaml"
            + (": 4 short trials, quick mode" if quick else ": its stage + 36 trials")
            + f"), each a fresh command timed from outside, {WORKERS} workers where parallel. "
            "*whole* = the command from start to exit (imports, Ray start, the stage, the trials, "
            "qsweep's report); *span* = first trial start → last trial end (qsweep: the Parquet's "
            "`started_at`/`finished_at`, stamped by the driver; the others: stamped in the "
            "worker). *per trial* = mean of each trial's own start → end. Median (min–max) over "
            "repetitions in alternating order; ratios are to the Pool of the same repetition.",
            "",
            table(
                [
                    "mode",
                    "trials",
                    "whole s",
                    "whole / Pool",
                    "span s",
                    "span / Pool",
                    "before first trial s",
                    "after last trial s",
                    "per trial s",
                ],
                rows,
            ),
            "",
            f"qsweep trial statuses: {', '.join(statuses)}.",
            "",
            f"**Where qsweep's extra time goes.** Its whole command takes {extra['whole_s']:.1f} s "
            f"more than the Pool's (median over repetitions): {extra['lead_s']:.1f} s more "
            f"before the first trial starts, {extra['span_s']:.1f} s more from the first trial's "
            f"start to the last one's end, {extra['tail_s']:.1f} s more after it (qsweep "
            "compacts the curves, writes the report and stops Ray; the Pool only exits). The "
            "Pool forks workers that already imported torch; Ray starts its own processes and "
            "each worker imports the trainable afresh. The start-up probe "
            "(`python -m benchmarks.small_trials startup`, fresh processes, "
            f"{len(probes)} run(s)) prices those steps:",
            "",
            _startup_table(probes),
            "",
            f"The first three steps add up to {priced:.1f} s of qsweep's {lead:.1f} s before its "
            "first trial; the rest is Python's start, Tune setting up the experiment and "
            "scheduling the first trials.",
            "",
            f"Actors created after {WORKERS} tasks had imported the trainable landed on those "
            f"warmed workers {reused} time(s) out of {WORKERS * len(probes)}: Ray gives a new "
            "actor a fresh or prestarted worker rather than one a task used, so warming "
            "workers with tasks does not take the import off a trial's path. Starting "
            "`ray.init` in a thread while the CLI imports torch and checks the spec was tried "
            "by hand (not kept): ray.init's thread waited on the imports the spec check was "
            "doing, and the first trial started later, not sooner.",
        ]
    )
    return Section(KEY, TITLE, body, bars)


if __name__ == "__main__":
    _worker(sys.argv[1:])
