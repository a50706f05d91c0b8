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


WORKERS_BY_MODE = {
    "loop": _loop,
    "pool": _pool,
    "tune": _tune,
    "qsweep": _qsweep,
    "qsweep-before": _qsweep_before,
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
    out, wall = run_json_worker(
        ["benchmarks.small_trials", mode, str(spec), str(workdir)],
        MARK,
        f"benchmark mode {mode}",
        cwd=REPO,
    )
    spans = out.pop("trials")
    out["whole_s"] = wall
    out["span_s"] = max(end for _, _, end in spans) - min(start for _, start, _ in spans)
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
    runs = measure(spec, workdir, 1 if quick else 2, log)
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
                _fmt([x["busy_s"] / x["n"] for x in r], 2),
            ]
        )
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
                    "per trial s",
                ],
                rows,
            ),
            "",
            f"qsweep trial statuses: {', '.join(statuses)}.",
        ]
    )
    return Section(KEY, TITLE, body, bars)


if __name__ == "__main__":
    _worker(sys.argv[1:])
