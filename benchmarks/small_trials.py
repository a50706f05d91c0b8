"""Section 6: the quick sweep (examples/quick.yaml, stage + 36 trials) via ``qsweep run
--num-cpus 2``, ``multiprocessing.Pool(2)``, bare Ray Tune and a loop, each a fresh command
timed whole and by its trials' span, modes alternating; plus a ``startup`` probe. Worker:
``python -m benchmarks.small_trials MODE SPEC WORKDIR`` prints one ``BENCH_JSON:`` line.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Bar, Section, Table, run_json_worker
from benchmarks.service_overhead import fmt, quick_sweep_spec

KEY = "small_trials"
TITLE = "6. Small trials: `qsweep run` vs multiprocessing.Pool, bare Ray Tune and a loop"
REPO = Path(__file__).resolve().parents[1]
MARK = "BENCH_JSON: "
WORKERS = 2
WHOLE_BAR = 1.5  # whole qsweep command / whole Pool command
SPAN_BAR = 1.15  # qsweep first-start -> last-end / the Pool's
MODES = ("qsweep", "pool", "tune", "loop")


def _planned(spec_path: str, workdir: Path) -> list[list[tuple[str, dict]]]:
    """[stage trials, main trials] as (trial_id, run_trial config), 1 thread each, ``stage:``
    hand-overs pointing at files under ``workdir/stages``."""
    from service.plan import STAGE_PREFIX
    from service.spec_loading import load_spec

    plan, stages = load_spec(spec_path), workdir / "stages"
    stages.mkdir(parents=True, exist_ok=True)

    def config(planned) -> dict:
        out = {"threads": 1, **planned.config}
        for key in ("init_from", "save_model_to"):
            if str(out.get(key, "")).startswith(STAGE_PREFIX):
                out[key] = str(stages / f"{out[key].removeprefix(STAGE_PREFIX)}.pt")
        return out

    return [[(t.trial_id, config(t)) for t in part] for part in (plan.pretrain, plan.trials)]


def _timed_trial(item: tuple[str, dict]) -> tuple[str, float, float]:
    from trainers import run_trial

    started = time.time()
    run_trial(item[1], lambda metrics, **_: None)
    return item[0], started, time.time()


def _loop(spec_path: str, workdir: Path) -> dict[str, Any]:
    return {"trials": [_timed_trial(t) for part in _planned(spec_path, workdir) for t in part]}


def _pool(spec_path: str, workdir: Path) -> dict[str, Any]:
    import multiprocessing

    with multiprocessing.Pool(WORKERS) as pool:  # the stage, then the trials
        parts = [pool.map(_timed_trial, part, chunksize=1) for part in _planned(spec_path, workdir)]
    return {"trials": parts[0] + parts[1]}


def _bare_trainable(config: dict) -> None:
    from ray import tune

    from trainers import run_trial

    start = {"bench_start": time.time()}
    run_trial(config["trial"], lambda m, **_: tune.report(m | start | {"bench_end": time.time()}))


def _tune(spec_path: str, workdir: Path) -> dict[str, Any]:
    """A function trainable reporting per evaluation; Tune's defaults, no qsweep callbacks."""
    import ray
    from ray import tune

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    done = []
    for name, part in zip(("stage", "trials"), _planned(spec_path, workdir)):
        if part:  # quick mode has no stage
            space = {"trial": tune.grid_search([config for _, config in part])}
            run = tune.RunConfig(name=name, storage_path=str(workdir / "tune"), verbose=0)
            grid = tune.Tuner(_bare_trainable, param_space=space, run_config=run).fit()
            done += [("", r.metrics["bench_start"], r.metrics["bench_end"]) for r in grid]
    ray.shutdown()
    return {"trials": done}


def _qsweep(spec_path: str, workdir: Path) -> dict[str, Any]:
    """The installed CLI as a user runs it; trial times from its trials.parquet."""
    import pyarrow.parquet as pq

    exe = shutil.which("qsweep") or str(Path(sys.executable).with_name("qsweep"))
    command = [exe, "run", spec_path, "--no-dashboard", "--num-cpus", str(WORKERS)]
    command += ["--results", str(workdir / "results"), "--overwrite"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"qsweep run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    name = yaml.safe_load(Path(spec_path).read_text())["name"]
    rows = pq.read_table(workdir / "results" / name / "trials.parquet").to_pylist()
    stamps = [
        (r["trial_id"], r["started_at"].timestamp(), r["finished_at"].timestamp()) for r in rows
    ]
    return {"trials": stamps, "statuses": sorted({r["status"] for r in rows})}


class _Fresh:
    def first(self) -> None:
        import service.tuner  # noqa: F401  (the trainable's module: torch, Ray Tune, trainers)


def _startup(spec_path: str, workdir: Path) -> dict[str, Any]:
    """The fixed costs a Ray-based command pays and a forking Pool does not, one at a time."""
    import ray

    costs, started = {}, time.perf_counter()

    def lap(what: str) -> None:
        nonlocal started
        costs[what], started = time.perf_counter() - started, time.perf_counter()

    import service.cli  # noqa: F401
    from service.spec_loading import load_spec

    load_spec(spec_path)
    lap("`import service.cli` + the spec check")
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    lap(f"`ray.init(num_cpus={WORKERS})`, no dashboard")
    actors = [ray.remote(num_cpus=1)(_Fresh).remote() for _ in range(WORKERS)]
    ray.get([actor.first.remote() for actor in actors])
    lap(f"{WORKERS} fresh actors' first call (importing the trainable)")
    ray.shutdown()
    lap("`ray.shutdown()`")
    return {"trials": [], "costs": costs}


def _spawn(mode: str, spec: Path, workdir: Path) -> dict[str, Any]:
    """One mode in a fresh process: the whole command's wall time and its trials' span."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    launched = time.time()  # wall clock, as the trials' stamps
    args = ["benchmarks.small_trials", mode, str(spec), str(workdir)]
    out, wall = run_json_worker(args, MARK, f"benchmark mode {mode}", cwd=REPO)
    spans = out.pop("trials")
    if spans:
        first, last = min(s for _, s, _ in spans), max(e for _, _, e in spans)
        out |= {"whole": wall, "span": last - first, "n": len(spans)}
        out |= {"lead": first - launched, "tail": launched + wall - last}
        out["per_trial"] = sum(e - s for _, s, e in spans) / len(spans)
    return out


def run(quick: bool, workdir: Path, log=print) -> Section:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = quick_sweep_spec(workdir, quick, keep_pretrain=True)
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for rep in range(reps := 1 if quick else 2):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:
            runs[mode].append(_spawn(mode, spec, workdir / f"{mode}-{rep}"))
            log(f"  rep {rep} {mode}: whole {runs[mode][-1]['whole']:.1f} s")
    probes = [_spawn("startup", spec, workdir / f"startup-{rep}")["costs"] for rep in range(reps)]

    def ratios(mode: str, key: str) -> list[float]:
        return [a[key] / b[key] for a, b in zip(runs[mode], runs["pool"])]

    rows = []
    for mode, r in runs.items():
        col = {k: fmt([x[k] for x in r], 1) for k in ("whole", "span", "lead", "tail")}
        rows.append([mode, r[0]["n"], col["whole"], fmt(ratios(mode, "whole")), col["span"]])
        rows[-1] += [fmt(ratios(mode, "span")), col["lead"], col["tail"]]
        rows[-1].append(fmt([x["per_trial"] for x in r]))
    header = ["mode", "trials", "whole s", "whole / Pool", "span s", "span / Pool"]
    header += ["before first trial s", "after last trial s", "per trial s"]
    caption = f"The quick sweep four ways, {WORKERS} workers; median (min–max), ratios per rep"
    startup = [[what, fmt([p[what] for p in probes])] for what in probes[0]]
    tables = [
        Table(caption, header, rows),
        Table("Fixed costs (start-up probe)", ["", "s"], startup),
    ]
    whole, span = (statistics.median(ratios("qsweep", key)) for key in ("whole", "span"))
    bars = [
        Bar("§6 whole `qsweep run` / Pool(2), quick sweep", whole, WHOLE_BAR),
        Bar("§6 first trial start → last trial end, qsweep / Pool(2)", span, SPAN_BAR),
    ]
    return Section(KEY, TITLE, tables, bars, {"runs": runs, "startup": probes})


if __name__ == "__main__":
    mode, spec_path, workdir = sys.argv[1:4]
    modes = {"loop": _loop, "pool": _pool, "tune": _tune, "qsweep": _qsweep, "startup": _startup}
    print(MARK + json.dumps(modes[mode](spec_path, Path(workdir))), flush=True)
