"""Section 5: the Parquet sink's throughput (alone, through its Tune hooks with stub trials,
and timed in place in a real sweep), then ``load_results`` and ``report_command`` on a
synthetic results folder of 1M curve rows in the contract schema."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import yaml

from benchmarks.common import Bar, Section, Table, profile_table, timed

KEY = "results_path"
TITLE = "5. Results path: Parquet sink throughput, analysis load and report"
LOAD_BAR = 3.0
ESTIMATORS = ("ste", "nspsa", "fogzo", "mezo", "quzo")
BITS = (2, 3, 4, 8)
LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
SWEEP = "trials completed rows expected_rows duplicates wall_s rows_per_s sink_s sink_share"
SINK = "trials evals rows total_s rows_per_s result_ms_median result_ms_last"
FORWARDS = {"ste": 1, "nspsa": 2, "fogzo": 3, "mezo": 2, "quzo": 2}


def _plan(n_trials: int, num_evals: int, steps: int, **extra):
    from service.spec_loading import parse_spec

    seeds = list(range(n_trials // (len(ESTIMATORS) * len(BITS))))
    grid = {"estimators": list(ESTIMATORS), "bits": list(BITS), "seeds": seeds}
    data = {"name": "sinkbench", "grid": grid, "trial": {"num_evals": num_evals}}
    return parse_spec(data | {"budget": {"steps": steps}} | extra)


def _metrics(step: int, steps: int) -> dict:
    return dict(
        step=step, forwards=3 * step, backwards=step, flops=1e5 * step, wall_s=0.01 * step,
        train_loss=2.0 / (1 + step), eval_loss=1.0 / (1 + step), eval_metric=step / steps,
        peak_memory_bytes=4096, num_params=760, progress=step / steps, done=step == steps,
        host="bench", node_id="node",
    )  # fmt: skip


def drive_sink(sweep_dir: Path, n_trials: int, num_evals: int, concurrency: int = 2) -> dict:
    """``n_trials`` x ``num_evals + 1`` results through a fresh ParquetSink's hooks, trials
    reporting ``concurrency`` at a time, interleaved as in a 2-CPU sweep."""
    from ray.tune.experiment import Trial

    from service.sink import ParquetSink

    planned = {t.trial_id: t.config for t in _plan(n_trials, num_evals, 100).trials}
    trials = [
        Trial("trainable", config={"planned_id": tid}, trial_id=f"t{i:05d}", stub=True)
        for i, tid in enumerate(planned)
    ]
    evals = [round(100 * k / num_evals) for k in range(num_evals + 1)]
    started, per_result = time.perf_counter(), []
    sink = ParquetSink(str(sweep_dir), "sinkbench", planned, {"bench": "1"})
    for first in range(0, len(trials), concurrency):
        group = trials[first : first + concurrency]
        for trial in group:
            sink.on_trial_start(iteration=0, trials=trials, trial=trial)
        for step in evals:
            for trial in group:
                result, t0 = _metrics(step, 100), time.perf_counter()
                sink.on_trial_result(iteration=0, trials=trials, trial=trial, result=result)
                per_result.append(time.perf_counter() - t0)
            sink.on_step_end(iteration=0, trials=trials)
        for trial in group:
            sink.on_trial_complete(iteration=0, trials=trials, trial=trial)
    sink.on_experiment_end(trials=trials)
    total, rows = time.perf_counter() - started, len(trials) * len(evals)
    return dict(
        trials=len(trials), evals=len(evals), rows=rows, total_s=total, rows_per_s=rows / total,
        result_ms_median=1e3 * statistics.median(per_result),
        result_ms_last=1e3 * statistics.median(per_result[-concurrency * 3 :]),
    )  # fmt: skip


def _timing(fn, spent: list[float]):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        return out

    return wrapper


def real_sweep(workdir: Path, n_trials: int, num_evals: int, num_cpus: int = 2) -> dict:
    """``n_trials`` tiny trials through ``qsweep run``'s code path (embedded Ray, Tune, the
    sink) in this process, the sink's hooks timed in place; then every curve row counted."""
    import pyarrow.parquet as pq
    import ray

    from service.runner import connect, prepare, run_sweep
    from service.sink import ParquetSink

    extra = {"results": str(workdir), "resources": {"cpus": 1}, "checkpoint_every": 5}
    plan, spent = _plan(n_trials, num_evals, 2 * num_evals, **extra), [0.0]
    hooks = {k: _timing(v, spent) for k, v in vars(ParquetSink).items() if k.startswith("on_")}
    with mock.patch.multiple(ParquetSink, **hooks):
        try:
            run = prepare(plan, str(workdir), overwrite=True)
            connect(None, dashboard=False, num_cpus=num_cpus)
            wall = timed(lambda: run_sweep(run, live=False))
        finally:
            ray.shutdown()
    trials = pq.read_table(Path(run.sweep_dir) / "trials.parquet")
    curves = pq.read_table(Path(run.sweep_dir) / "curves")
    keys = set(zip(curves.column("trial_id").to_pylist(), curves.column("step").to_pylist()))
    return dict(
        trials=trials.num_rows, completed=trials.column("status").to_pylist().count("completed"),
        rows=curves.num_rows, expected_rows=len(plan.trials) * (num_evals + 1),
        duplicates=curves.num_rows - len(keys), wall_s=wall, rows_per_s=curves.num_rows / wall,
        sink_s=spent[0], sink_share=spent[0] / wall,
    )  # fmt: skip


def write_synthetic(sweep_dir: Path, n_trials: int, evals: int) -> int:
    """Completed trials (5 estimators x 4 bits x 5 lrs x seeds, ``n_trials`` rounded down to
    a multiple of 100), ``evals`` curve rows each, one curve file per trial; the row count."""
    from contract import schema, storage

    fs, root = storage.resolve(str(sweep_dir))
    rng, now = np.random.default_rng(0), datetime(2026, 1, 1, tzinfo=timezone.utc)
    steps, last = np.arange(evals, dtype=np.int64) * 10, (evals - 1) * 10
    seeds = range(max(1, n_trials // 100))
    common = dict(
        schema_version=schema.SCHEMA_VERSION, sweep="synthetic", status="completed",
        quantizer="int", model="mlp", dataset="digits", optimizer="sgd", momentum=0.9,
        weight_decay=0.0,
        batch_size=64, surrogate="identity", budget_steps=last, steps=last, backwards=last,
        wall_s=last * 1e-3, peak_memory_bytes=4096, num_params=760, host="bench",
        node_id="node", attempts=1, started_at=now, finished_at=now + timedelta(seconds=10),
        versions=json.dumps({"qsweep": "bench"}),
    )  # fmt: skip
    rows = []
    for est, bits, lr, seed in itertools.product(ESTIMATORS, BITS, LRS, seeds):
        tid, fwd, zo = f"{est}-int{bits}-mlp-digits-lr{lr}-s{seed}", FORWARDS[est], est != "ste"
        loss = 0.2 + 2.1 * np.exp(-(0.5 + rng.random()) * steps / last * 5)
        loss = loss + 0.01 * rng.standard_normal(evals)
        ids = dict(trial_id=tid, estimator=est, bits=bits, seed=seed)
        curve = {name: np.full(evals, common[name]) for name in ("schema_version", "sweep")}
        curve |= {name: np.full(evals, value) for name, value in ids.items()}
        curve |= dict(
            step=steps, forwards=steps * fwd, backwards=steps * (est in ("ste", "fogzo")),
            flops=steps * fwd * 5e4, wall_s=steps * 1e-3, train_loss=loss * 1.05,
            eval_loss=loss, eval_metric=1 - loss / 2.5, peak_memory_bytes=np.full(evals, 4096),
        )  # fmt: skip
        path = storage.join(root, schema.CURVES_DIR, f"{tid}.parquet")
        storage.write_parquet_atomic(fs, path, pa.table(curve, schema=schema.CURVES_SCHEMA))
        rows.append(dict.fromkeys(schema.TRIALS_SCHEMA.names) | common | ids | dict(
            lr=lr, n=1 if zo else None, eps=1e-3 if zo else None, forwards=last * fwd,
            flops=float(last * fwd * 5e4), final_train_loss=float(loss[-1] * 1.05),
            final_eval_loss=float(loss[-1]), final_eval_metric=float(1 - loss[-1] / 2.5),
            best_eval_loss=float(loss.min()), best_eval_metric=float(1 - loss.min() / 2.5),
            config=json.dumps({"estimator": est, "bits": bits, "lr": lr, "seed": seed}),
        ))  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema.TRIALS_SCHEMA)
    storage.write_parquet_atomic(fs, storage.join(root, schema.TRIALS_FILE), table)
    spec = {"name": "synthetic", "grid": {"estimators": list(ESTIMATORS), "bits": list(BITS)}}
    text = yaml.safe_dump(spec, sort_keys=False)
    storage.write_text_atomic(fs, storage.join(root, schema.SPEC_FILE), text)
    return len(rows) * evals


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "—"
    return f"{value:,.0f}" if isinstance(value, int) or abs(value) >= 100 else f"{value:.3g}"


def dict_table(caption: str, rows: list[dict], keys: str) -> Table:
    """The ``keys`` (space-separated) of each row dict as columns, numbers to 3 digits."""
    names = keys.split()
    return Table(caption, names, [[_cell(r.get(k, "—")) for k in names] for r in rows])


def _times(what: str, t: list[float]) -> dict:
    return dict(step=what, median_s=statistics.median(t), min_s=min(t), max_s=max(t), reps=len(t))


def run(quick: bool, workdir: Path, log) -> Section:
    from analysis.load import load_results
    from analysis.report import report_command

    workdir.mkdir(parents=True, exist_ok=True)
    sink = [
        drive_sink(workdir / f"sink-{n}-{evals}", n, evals)
        for n, evals in ([(20, 10)] if quick else [(200, 20), (200, 50), (20, 200)])
    ]
    sweep = real_sweep(workdir / "sweep", 20 if quick else 200, num_evals=10)
    log(f"  real sweep: {sweep['rows']:,} curve rows in {sweep['wall_s']:.1f} s")
    n_trials, evals = (100, 100) if quick else (1000, 1000)
    synthetic, t0 = workdir / "synthetic", time.perf_counter()
    rows = write_synthetic(synthetic, n_trials, evals)
    write_s = time.perf_counter() - t0
    load = [timed(lambda: load_results(str(synthetic))) for _ in range(3 if quick else 5)]
    report = [
        timed(lambda: report_command([str(synthetic)], str(workdir / "report")))
        for _ in range(1 if quick else 2)
    ]
    analysis = [_times("load_results", load), _times("report_command", report)]
    tables = [
        dict_table(f"A real sweep of {sweep['trials']} tiny trials, embedded Ray", [sweep], SWEEP),
        dict_table("The Parquet sink alone (stub trials, two reporting interleaved)", sink, SINK),
        dict_table(f"Analysis on {rows:,} curve rows", analysis, "step median_s min_s max_s reps"),
    ]
    if statistics.median(load) > LOAD_BAR:
        profiled = lambda: load_results(str(synthetic))  # noqa: E731
        tables.append(profile_table("load_results, cProfile", profiled))
    lost = abs(sweep["expected_rows"] - sweep["rows"]) + sweep["duplicates"]
    bars = [
        Bar(f"§5 load_results of {rows:,} curve rows (s)", statistics.median(load), LOAD_BAR),
        Bar(f"§5 rows lost or duplicated in a real sweep of {sweep['trials']} trials", lost, 0),
    ]
    raw = {"sink": sink, "real_sweep": sweep, "load_s": load, "report_s": report}
    return Section(KEY, TITLE, tables, bars, raw | {"synthetic_write_s": write_s})
