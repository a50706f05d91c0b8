"""End to end through the CLI: ``qsweep run`` on embedded Ray -> real ``run_trial`` trials ->
Parquet.

Each sweep runs ``qsweep`` as a subprocess with its own embedded Ray (2 CPUs, no
dashboard), so these tests own no Ray state and leave no Ray process behind.
"""

from __future__ import annotations

import json
import re

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from contract.curves import LAYOUT_FILE, read_curves
from contract.journal import without_fold_mark
from contract.schema import CURVES_SCHEMA, SCHEMA_VERSION
from service.rows import trials_schema
from service.spec_loading import load_spec
from tests.service.harness import explain, user_error, write_spec

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

NUM_EVALS, STEPS = 3, 40
ROWS_PER_TRIAL = NUM_EVALS + 1  # run_trial also reports step 0


@pytest.fixture(scope="module")
def sweep(module_qsweep, tmp_path_factory):
    """2 estimators x 2 seeds of the 2-bit MLP on digits: four tiny trials, one CLI run."""
    tmp = tmp_path_factory.mktemp("e2e")
    spec_file = write_spec(
        tmp,
        "e2e",
        grid={"estimators": ["ste", "fogzo"], "seeds": [0, 1]},
        trial={"num_evals": NUM_EVALS},
        budget={"steps": STEPS},
    )
    results = tmp / "results"
    run = module_qsweep("run", spec_file, "--results", results, "--no-dashboard", "--num-cpus", 2)
    assert run.returncode == 0, explain(run)
    return spec_file, results / "e2e", run


def test_run_writes_one_trial_row_per_trial_and_one_curve_row_per_evaluation(sweep):
    spec_file, sweep_dir, run = sweep
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    assert f"sweep e2e: {len(planned)} planned trials -> {sweep_dir}" in run.stdout

    trials = pq.read_table(sweep_dir / "trials.parquet")
    assert without_fold_mark(trials.schema).equals(TRIALS_SCHEMA, check_metadata=True)
    rows = {row["trial_id"]: row for row in trials.to_pylist()}
    assert rows.keys() == planned.keys()
    for tid, row in rows.items():
        assert (row["status"], row["error"], row["attempts"]) == ("completed", None, 1), tid
        assert (row["estimator"], row["seed"], row["bits"]) == (
            planned[tid]["estimator"],
            planned[tid]["seed"],
            2,
        )
        assert (
            row["steps"] == row["budget_steps"] == STEPS and row["schema_version"] == SCHEMA_VERSION
        )
        assert row["forwards"] > 0 and row["flops"] > 0 and 0 <= row["final_eval_metric"] <= 1
        assert row["best_eval_metric"] >= row["final_eval_metric"] and row["num_params"] > 0
        assert row["host"] and row["node_id"] and row["started_at"] <= row["finished_at"]
        assert json.loads(row["config"]) == planned[tid]
        assert set(json.loads(row["versions"])) >= {"qsweep", "ray", "torch", "pyarrow"}

    # The run ends by compacting the curves: one file per estimator x bits, none per trial.
    curves_dir = sweep_dir / "curves"
    n = len(planned)
    assert f"curves:  compacted {n * ROWS_PER_TRIAL} curve rows of {n} trials: {n} files -> 2" in (
        run.stdout
    )
    assert not list(curves_dir.glob("*.parquet"))
    layout = json.loads((curves_dir / LAYOUT_FILE).read_text())
    parts = sorted(p.relative_to(curves_dir).as_posix() for p in curves_dir.rglob("*.parquet"))
    assert parts == sorted(layout["files"])
    assert sorted(p.rsplit("/", 1)[0] for p in parts) == [
        "estimator=fogzo/bits=2",
        "estimator=ste/bits=2",
    ]
    stored = pa.schema(
        [f for f in CURVES_SCHEMA if f.name not in ("estimator", "bits")],
        metadata=CURVES_SCHEMA.metadata,
    )
    for part in parts:
        assert pq.read_schema(curves_dir / part).equals(stored, check_metadata=True)
    curves: dict[str, list[dict]] = {}
    for r in read_curves(str(sweep_dir)).to_pylist():
        curves.setdefault(r["trial_id"], []).append(r)
    assert curves.keys() == planned.keys()
    for tid, curve in curves.items():
        steps = [r["step"] for r in curve]
        assert len(curve) == ROWS_PER_TRIAL and steps[0] == 0 and steps[-1] == STEPS, tid
        assert steps == sorted(set(steps))
        assert {(r["estimator"], r["bits"], r["seed"]) for r in curve} == {
            (planned[tid]["estimator"], 2, planned[tid]["seed"])
        }
        # Cumulative costs never go down; step 0 has cost nothing yet.
        for column in ("forwards", "backwards", "flops", "wall_s"):
            values = [r[column] for r in curve]
            assert values[0] == 0 and values == sorted(values), (tid, column)
        assert curve[-1]["forwards"] == rows[tid]["forwards"]


def test_the_curves_read_as_one_table_with_pandas_pyarrow_and_duckdb(sweep):
    _, sweep_dir, _ = sweep
    curves_dir = sweep_dir / "curves"
    expected = 4 * ROWS_PER_TRIAL

    frame = pd.read_parquet(curves_dir)  # the compacted layout: hive partitions
    assert sorted(frame.columns) == sorted(CURVES_SCHEMA.names) and len(frame) == expected
    assert not frame.duplicated(["trial_id", "step"]).any()
    assert sorted(frame["estimator"].astype(str).unique()) == ["fogzo", "ste"]

    table = pds.dataset(curves_dir, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column_names) == sorted(CURVES_SCHEMA.names)
    assert table.num_rows == expected

    hive = f"read_parquet('{curves_dir}/**/*.parquet', hive_partitioning=true)"
    with duckdb.connect() as db:
        assert db.sql(f"select count(*) from {hive}").fetchall() == [(expected,)]
        per_trial = db.sql(
            f"select trial_id, count(*), min(step), max(step), min(estimator), min(bits) "
            f"from {hive} group by trial_id"
        ).fetchall()
        assert sorted(r[1:4] for r in per_trial) == [(ROWS_PER_TRIAL, 0, STEPS)] * 4
        assert {r[5] for r in per_trial} == {2} and {r[4] for r in per_trial} == {"fogzo", "ste"}
        joined = db.sql(
            f"select count(*) from {hive} c "
            f"join read_parquet('{sweep_dir}/trials.parquet') t using (trial_id) "
            f"where t.status = 'completed' and t.estimator = c.estimator and t.bits = c.bits"
        ).fetchall()
        assert joined == [(expected,)]


def test_status_and_report_print_the_counts(sweep, module_qsweep):
    _, sweep_dir, _ = sweep
    status = module_qsweep("status", sweep_dir)
    assert status.returncode == 0, explain(status)
    assert (
        f"e2e: 4 completed, 0 running, 0 failed, 0 pending of 4; {4 * ROWS_PER_TRIAL} curve rows"
        in status.stdout
    )

    report = module_qsweep("report", sweep_dir)
    assert report.returncode == 0, explain(report)
    assert f"sweep e2e ({sweep_dir}): 4 trials, 4 completed" in report.stdout
    assert (
        f"report: {sweep_dir / 'report.html'}" in report.stdout
        and (sweep_dir / "report.html").is_file()
    )


def test_run_again_on_the_same_results_exits_2_and_suggests_resume(sweep, module_qsweep, tmp_path):
    spec_file, sweep_dir, _ = sweep
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*.parquet")}
    again = module_qsweep(
        "run", spec_file, "--results", sweep_dir.parent, "--no-dashboard", "--num-cpus", 2
    )
    error = user_error(again)
    assert error == (
        f"error: {sweep_dir} already holds a sweep: `qsweep resume {sweep_dir}` continues it, "
        f"--overwrite starts over"
    )
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*.parquet")} == before  # untouched

    for command in (
        "status",
        "resume",
    ):  # not a sweep directory: one line, and resume starts no Ray
        error = user_error(module_qsweep(command, tmp_path))
        assert (
            error == f"error: {tmp_path}: no sweep.yaml here — is this a sweep's results directory?"
        )


def test_a_trial_that_raises_and_one_that_diverges_fail_and_the_rest_complete(qsweep, tmp_path):
    """The mnist trials raise DatasetError in the worker (their data_dir does not exist; the
    spec cannot know that), nspsa at lr 50 diverges to a NaN loss (TrialDiverged); the
    digits trials of ste and fogzo complete; the sweep ends and exits 1."""
    spec_file = write_spec(
        tmp_path,
        "failures",
        grid={"estimators": ["ste", "fogzo", "nspsa"], "datasets": ["digits", "mnist"]},
        trial={"num_evals": NUM_EVALS, "data_dir": str(tmp_path / "no-such-data")},
        estimators={"nspsa": {"lr": 50}},
        budget={"steps": STEPS},
        retries=0,
    )
    run = qsweep(
        "run", spec_file, "--results", tmp_path / "results", "--no-dashboard", "--num-cpus", 2
    )
    assert run.returncode == 1, explain(run)  # some trials failed (everything still written)
    sweep_dir = tmp_path / "results" / "failures"

    rows = {
        (r["estimator"], r["dataset"]): r
        for r in pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    }
    assert len(rows) == 6
    status = {key: row["status"] for key, row in rows.items()}
    assert status == {
        ("ste", "digits"): "completed",
        ("fogzo", "digits"): "completed",
        ("nspsa", "digits"): "failed",
        ("ste", "mnist"): "failed",
        ("fogzo", "mnist"): "failed",
        ("nspsa", "mnist"): "failed",
    }
    for key, row in rows.items():
        assert row["attempts"] == 1 and row["finished_at"] is not None, key  # retries: 0
    diverged = rows["nspsa", "digits"]
    assert re.fullmatch(
        r"nspsa: training loss became (nan|inf) at step \d+", diverged["error"]
    )  # the traceback beside it
    assert (
        diverged["error_traceback"].strip().splitlines()[-1]
        == f"contract.errors.TrialDiverged: {diverged['error']}"
    )
    for estimator in ("ste", "fogzo", "nspsa"):
        row = rows[estimator, "mnist"]
        assert row["error"] == (
            f"mnist: data_dir {tmp_path / 'no-such-data'} is not a directory "
            f"— expected {tmp_path / 'no-such-data' / 'MNIST' / 'raw'} inside it"
        )
        assert (
            row["error_traceback"].strip().splitlines()[-1]
            == f"contract.errors.DatasetError: {row['error']}"
        )
        assert "\x1b[" not in row["error_traceback"]

    curves = pd.read_parquet(sweep_dir / "curves")
    per_trial = curves.groupby("trial_id")["step"].apply(list).to_dict()
    for key in (("ste", "digits"), ("fogzo", "digits")):
        assert len(per_trial[rows[key]["trial_id"]]) == ROWS_PER_TRIAL
    assert per_trial[rows["nspsa", "digits"]["trial_id"]] == [
        0
    ]  # evaluated at step 0, diverged at step 8
    assert not any(rows[e, "mnist"]["trial_id"] in per_trial for e in ("ste", "fogzo", "nspsa"))

    # The end-of-run summary names each failed trial with its exception's message.
    for row in rows.values():
        if row["status"] == "failed":
            assert f"failed: {row['trial_id']}: {row['error']}" in run.stdout
    status = qsweep("status", sweep_dir)
    assert status.returncode == 0, explain(status)
    assert "failures: 2 completed, 0 running, 4 failed, 0 pending of 6" in status.stdout
