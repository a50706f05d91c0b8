"""ParquetSink under real Ray Tune: the Parquet contract, failures, retries, resume, atomic
writes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle, tune
from ray.exceptions import ActorDiedError, RayActorError
from ray.tune.experiment import Trial

import contract.storage
from contract.journal import without_fold_mark
from contract.schema import CURVES_SCHEMA, SCHEMA_VERSION
from contract.storage import list_files, read_parquet, resolve, write_parquet_atomic
from service.failure_text import GENERIC_ACTOR_LINES
from service.failures import FAILURE_KEY, TRACEBACK_KEY
from service.rows import trials_schema
from service.sink import ParquetSink, read_results
from service.spec_loading import parse_spec
from trainers.estimators import default_eps, default_lr

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

STEPS, EVERY = 40, 10  # five evaluations per trial: steps 0, 10, 20, 30, 40
VERSIONS = {"qsweep": "test", "ray": ray.__version__}


def planned_trials(name: str, seeds: list[int]) -> dict[str, dict]:
    spec = parse_spec(
        {
            "name": name,
            "grid": {"estimators": ["fogzo"], "seeds": seeds},
            "estimators": {"fogzo": {"n": 2}},
            "budget": {"steps": STEPS},
        }
    )
    return {p.trial_id: p.config for p in spec.trials}


def metrics(step: int, wall_s: float) -> dict:
    """The keys run_trial reports, plus the host/node keys our trainable adds."""
    return {
        "step": step,
        "forwards": 3 * step,
        "backwards": step,
        "flops": 1e3 * step,
        "wall_s": wall_s,
        "train_loss": float("nan") if step == 0 else 2.0 / step,
        "eval_loss": 1.0 / (1 + step),
        "eval_metric": step / STEPS,
        "peak_memory_bytes": 4096,
        "num_params": 123,
        "progress": step / STEPS,
        "done": step == STEPS,
        "host": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
    }


def make_trainable(planned: dict[str, dict], marker_dir: str | None = None):
    """Seed 13 raises after two evaluations. With ``marker_dir``, every trial fails once after
    step 30 (its first attempt only); seed 1 checkpoints at step 10 and resumes from there,
    the others restart from scratch. ``wall_s`` = step + 1000 * attempt tells attempts apart."""

    def trainable(config: dict) -> None:
        seed = planned[config["planned_id"]]["seed"]
        marker = Path(marker_dir, config["planned_id"]) if marker_dir else None
        attempt = 2 if marker is not None and marker.exists() else 1
        start = 0
        if (checkpoint := tune.get_checkpoint()) is not None:
            with checkpoint.as_directory() as d:
                start = int(Path(d, "step").read_text()) + EVERY
        for step in range(start, STEPS + 1, EVERY):
            if seed == 13 and step == 2 * EVERY:
                raise ValueError(f"boom: seed {seed} diverged at step {step}")
            if marker is not None and attempt == 1 and step == 3 * EVERY + EVERY:
                marker.touch()
                raise RuntimeError("transient failure, first attempt only")
            if seed == 1 and step == EVERY:
                d = tempfile.mkdtemp()
                Path(d, "step").write_text(str(step))
                tune.report(
                    metrics(step, step + 1000 * attempt),
                    checkpoint=tune.Checkpoint.from_directory(d),
                )
            else:
                tune.report(metrics(step, step + 1000 * attempt))

    return trainable


def run_sweep(
    tmp: Path, name: str, seeds: list[int], max_failures: int = 0, marker_dir: str | None = None
):
    planned = planned_trials(name, seeds)
    sink = ParquetSink(str(tmp / "results" / name), name, planned, VERSIONS)
    tuner = tune.Tuner(
        make_trainable(planned, marker_dir),
        param_space={"planned_id": tune.grid_search(sorted(planned))},
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(tmp / "tune"),
            callbacks=[sink],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return planned, tuner.fit()


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory):
    """Seeds 0 and 1 complete, seed 13 raises: one Tune run shared by several tests."""
    tmp = tmp_path_factory.mktemp("sweep")
    planned, grid = run_sweep(tmp, "basic", [0, 1, 13])
    return tmp / "results" / "basic", planned, grid


def by_id(table: pa.Table) -> dict[str, dict]:
    return {row["trial_id"]: row for row in table.to_pylist()}


def test_rows_are_trials_times_evaluations_with_the_contract_schema(sweep):
    sweep_dir, planned, _ = sweep
    written = without_fold_mark(pq.read_schema(sweep_dir / "trials.parquet"))
    assert written.equals(TRIALS_SCHEMA, check_metadata=True)
    for path in (sweep_dir / "curves").iterdir():
        assert pq.read_schema(path).equals(CURVES_SCHEMA, check_metadata=True)
    dataset = pds.dataset(sweep_dir / "curves", format="parquet").to_table()
    assert dataset.schema.equals(CURVES_SCHEMA)
    frame = pd.read_parquet(sweep_dir / "curves")
    assert len(frame) == len(dataset) == 5 + 5 + 2  # two complete trials, and seed 13 died after 2
    assert not frame.duplicated(["trial_id", "step"]).any()

    trials, curves = read_results(str(sweep_dir))
    assert trials.schema.equals(TRIALS_SCHEMA) and curves.schema.equals(CURVES_SCHEMA)
    assert curves.num_rows == 12 and set(trials["trial_id"].to_pylist()) == set(planned)
    ok = by_id(trials)[next(t for t, c in planned.items() if c["seed"] == 0)]
    assert ok["status"] == "completed" and ok["error"] is None and ok["attempts"] == 1
    assert ok["schema_version"] == SCHEMA_VERSION and ok["sweep"] == "basic"
    assert (ok["estimator"], ok["bits"], ok["quantizer"], ok["model"], ok["dataset"]) == (
        "fogzo",
        2,
        "int",
        "mlp",
        "digits",
    )
    # Effective values: n from the spec, the rest from the TrialConfig / FOGZOConfig defaults.
    assert (ok["n"], ok["eps"], ok["beta_min"], ok["lr"], ok["optimizer"], ok["batch_size"]) == (
        2,
        default_eps("fogzo"),
        0.999,
        default_lr("fogzo"),
        "sgd",
        64,
    )
    assert (
        ok["perturb_bits"] is None and ok["surrogate"] == "identity" and ok["budget_steps"] == STEPS
    )
    assert (ok["steps"], ok["forwards"], ok["backwards"], ok["flops"], ok["wall_s"]) == (
        40,
        120,
        40,
        4e4,
        1040,
    )
    assert ok["final_eval_loss"] == ok["best_eval_loss"] == 1 / 41 and ok["best_eval_metric"] == 1.0
    assert (
        ok["num_params"] == 123
        and ok["peak_memory_bytes"] == 4096
        and ok["host"] == socket.gethostname()
    )
    assert ok["node_id"] and ok["started_at"] <= ok["finished_at"]
    assert json.loads(ok["versions"]) == VERSIONS and json.loads(ok["config"])["seed"] == 0


def test_a_trial_that_raises_is_failed_with_its_message_and_the_rest_complete(sweep):
    sweep_dir, planned, _ = sweep
    trials = by_id(read_results(str(sweep_dir))[0])
    statuses = {c["seed"]: trials[t]["status"] for t, c in planned.items()}
    assert statuses == {0: "completed", 1: "completed", 13: "failed"}
    failed = trials[next(t for t, c in planned.items() if c["seed"] == 13)]
    assert failed["error"] == "ValueError: boom: seed 13 diverged at step 20"  # one line
    assert failed["error_traceback"].startswith(
        "ray::ImplicitFunc.train()"
    )  # and what Tune recorded
    assert failed["error_traceback"].endswith("ValueError: boom: seed 13 diverged at step 20")
    assert "\x1b[" not in failed["error_traceback"] and "Failure #" not in failed["error_traceback"]
    assert failed["finished_at"] is not None and failed["steps"] == EVERY


def test_retries_count_attempts_and_keep_one_row_per_step_from_the_latest_attempt(
    ray_cluster, tmp_path
):
    markers = tmp_path / "markers"
    markers.mkdir()
    planned, grid = run_sweep(tmp_path, "retry", [0, 1], max_failures=1, marker_dir=str(markers))
    assert not grid.errors
    trials, curves = read_results(str(tmp_path / "results" / "retry"))
    for tid, config in planned.items():
        row = by_id(trials)[tid]
        assert (row["status"], row["attempts"], row["error"], row["error_traceback"]) == (
            "completed",
            2,
            None,
            None,
        )
        curve = curves.filter(pa.compute.equal(curves["trial_id"], tid)).to_pylist()
        assert [r["step"] for r in curve] == [0, 10, 20, 30, 40]
        # Seed 0 restarted from scratch; seed 1 resumed from its step-10 checkpoint, so only
        # what it re-reported (20 and on) comes from the second attempt.
        first_from_retry = 0 if config["seed"] == 0 else 20
        assert [r["wall_s"] // 1000 for r in curve] == [
            1 if r["step"] < first_from_retry else 2 for r in curve
        ]
        assert row["wall_s"] == 2040


def test_a_new_sink_over_the_same_directory_does_not_duplicate(sweep):
    """A resumed driver: a fresh sink loads the files, and Tune re-reporting changes nothing."""
    sweep_dir, planned, grid = sweep
    before = read_results(str(sweep_dir))
    sink = ParquetSink(str(sweep_dir), "basic", planned, VERSIONS, journal_every_s=0)
    for result in grid:
        trial = Trial(
            "trainable", config=result.config, trial_id=result.metrics["trial_id"], stub=True
        )
        sink.on_trial_start(iteration=0, trials=[trial], trial=trial)
        for record in result.metrics_dataframe.to_dict("records"):
            sink.on_trial_result(iteration=0, trials=[trial], trial=trial, result=record)
        end = sink.on_trial_error if result.error else sink.on_trial_complete
        end(iteration=0, trials=[trial], trial=trial)
    after = read_results(str(sweep_dir))
    assert after[1].num_rows == before[1].num_rows == 12
    old, new = by_id(before[0]), by_id(after[0])
    completed = [t for t in old if old[t]["status"] == "completed"]
    assert all(new[t] == old[t] for t in completed)  # completed trials are final
    assert new.keys() == old.keys()
    (failed,) = [t for t in old if old[t]["status"] == "failed"]
    assert new[failed]["status"] == "failed" and new[failed]["error"] == old[failed]["error"]
    assert new[failed]["attempts"] == 2  # the re-run counts as one more attempt


def test_a_crashed_driver_is_resumed_without_losing_or_duplicating_rows(tmp_path):
    """First driver dies after step 20 (no complete); the second resumes from a checkpoint at 10.

    The second sink comes out of a pickle taken before any result, as ``Tuner.restore``
    rebuilds callbacks from ``tuner.pkl``: it must read the files as they are now."""
    planned = planned_trials("resume", [0])
    (tid,) = planned
    trial = Trial("trainable", config={"planned_id": tid}, trial_id="t0", stub=True)
    first = ParquetSink(str(tmp_path / "resume"), "resume", planned, VERSIONS, journal_every_s=0)
    pickled = cloudpickle.dumps(first)
    first.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for step in (0, 10, 20):
        first.on_trial_result(
            iteration=0, trials=[trial], trial=trial, result={**metrics_local(step), "wall_s": 1}
        )
    second = cloudpickle.loads(pickled)
    second.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for step in (20, 30, 40):
        second.on_trial_result(
            iteration=0, trials=[trial], trial=trial, result={**metrics_local(step), "wall_s": 2}
        )
    second.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    trials, curves = read_results(str(tmp_path / "resume"))
    assert [(r["step"], r["wall_s"]) for r in curves.to_pylist()] == [
        (0, 1),
        (10, 1),
        (20, 2),
        (30, 2),
        (40, 2),
    ]
    (row,) = trials.to_pylist()
    assert (row["status"], row["attempts"], row["steps"]) == ("completed", 2, 40)


def metrics_local(step: int) -> dict:
    """``metrics`` without Ray's runtime context (for hooks driven outside a trial)."""
    return {
        "step": step,
        "eval_loss": 1.0 / (1 + step),
        "eval_metric": step / STEPS,
        "progress": step / STEPS,
    }


def test_results_wait_in_memory_until_tunes_snapshot_asks_for_the_sinks_state(tmp_path):
    """With batching, nothing is written per event; ``get_state`` (called by Tune right before
    it saves an experiment snapshot) writes the curves and the status events, at once."""
    planned = planned_trials("batch", [0])
    trial = Trial("trainable", config={"planned_id": next(iter(planned))}, trial_id="t0", stub=True)
    sink = ParquetSink(str(tmp_path / "batch"), "batch", planned, VERSIONS, journal_every_s=3600)
    sink.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for step in (0, 10, 20):
        sink.on_trial_result(iteration=0, trials=[trial], trial=trial, result=metrics_local(step))
    assert read_results(str(tmp_path / "batch"))[1].num_rows == 0  # (the first fold was at start)
    assert sink.get_state() is None  # no callback state for Tune to store
    trials, curves = read_results(str(tmp_path / "batch"))
    assert curves["step"].to_pylist() == [0, 10, 20]
    assert trials["status"].to_pylist() == ["running"]


def test_a_trial_stopped_before_its_budget_is_stopped(tmp_path):
    planned = planned_trials("asha", [0])
    trial = Trial("trainable", config={"planned_id": next(iter(planned))}, trial_id="t0", stub=True)
    sink = ParquetSink(str(tmp_path / "asha"), "asha", planned, VERSIONS, journal_every_s=0)
    sink.on_trial_start(iteration=0, trials=[trial], trial=trial)
    sink.on_trial_result(
        iteration=0, trials=[trial], trial=trial, result={**metrics_local(10), "done": True}
    )
    sink.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    assert read_results(str(tmp_path / "asha"))[0]["status"].to_pylist() == ["stopped"]


def test_a_reported_failure_adds_no_curve_row_and_ends_the_trial_failed_even_if_stopped(tmp_path):
    """The trainable's failure result (``service.failures``) is no evaluation; if a scheduler
    stops the trial on it, Tune calls on_trial_complete, and the trial is still failed."""
    planned = planned_trials("fail", [0])
    trial = Trial("trainable", config={"planned_id": next(iter(planned))}, trial_id="t0", stub=True)
    sink = ParquetSink(str(tmp_path / "fail"), "fail", planned, VERSIONS, journal_every_s=0)
    sink.on_trial_start(iteration=0, trials=[trial], trial=trial)
    sink.on_trial_result(iteration=0, trials=[trial], trial=trial, result=metrics_local(0))
    sink.on_trial_result(
        iteration=0,
        trials=[trial],
        trial=trial,
        result={
            FAILURE_KEY: "fogzo: training loss became inf at step 7",
            TRACEBACK_KEY: "Traceback ...\nTrialDiverged: ...",
            "eval_loss": float("nan"),
            "training_iteration": 2,
        },
    )
    sink.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    trials, curves = read_results(str(tmp_path / "fail"))
    (row,) = trials.to_pylist()
    assert (row["status"], row["attempts"], row["error"]) == (
        "failed",
        1,
        "fogzo: training loss became inf at step 7",
    )
    assert row["error_traceback"] == "Traceback ...\nTrialDiverged: ..."
    assert curves["step"].to_pylist() == [0]


def test_a_version_3_folder_loads_and_is_continued_in_the_current_version(sweep, tmp_path):
    """Before version 4, ``error`` held the whole traceback: it moves to ``error_traceback``
    and ``error`` becomes its last line, for readers and for a resumed sink alike."""
    sweep_dir, planned, _ = sweep
    old_dir = tmp_path / "basic"
    shutil.copytree(sweep_dir, old_dir)
    shutil.rmtree(old_dir / "events", ignore_errors=True)  # a version-3 folder has no journal
    current = read_results(str(sweep_dir))[0]  # with what earlier tests' events changed
    text = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'
    errors = [text if e is not None else None for e in current["error"].to_pylist()]
    v3 = current.drop_columns(["error_traceback"]).set_column(
        current.schema.get_field_index("error"), "error", pa.array(errors, pa.string())
    )
    pq.write_table(
        v3.replace_schema_metadata({**v3.schema.metadata, b"qsweep_schema_version": b"3"}),
        old_dir / "trials.parquet",
    )
    upgraded = read_results(str(old_dir))[0]
    # as a resumed driver does
    ParquetSink(str(old_dir), "basic", planned, VERSIONS, journal_every_s=0).ledger.write_trials()
    rewritten = pq.read_table(old_dir / "trials.parquet")
    for loaded in (upgraded, rewritten):
        assert loaded.schema.equals(TRIALS_SCHEMA)
        failed = [r for r in loaded.to_pylist() if r["status"] == "failed"]
        assert [(r["error"], r["error_traceback"]) for r in failed] == [("ValueError: boom", text)]
        assert all(
            r["error"] is r["error_traceback"] is None
            for r in loaded.to_pylist()
            if r["status"] == "completed"
        )
    assert (
        pq.read_schema(old_dir / "trials.parquet").metadata[b"qsweep_schema_version"]
        == str(SCHEMA_VERSION).encode()
    )


def test_writes_leave_no_temp_files_and_a_failed_write_keeps_the_old_file(
    sweep, tmp_path, monkeypatch
):
    sweep_dir = sweep[0]
    assert not [
        p for p in sweep_dir.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")
    ]
    fs, path = resolve(str(tmp_path / "t.parquet"))
    table = pa.table({"x": [1, 2]})
    write_parquet_atomic(fs, path, table)

    def half_write(table, out):
        out.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(contract.storage.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(fs, path, pa.table({"x": [3]}))
    monkeypatch.undo()
    assert read_parquet(fs, path).equals(table)
    assert os.listdir(tmp_path) == ["t.parquet"]


def test_storage_resolves_paths_and_uris_and_works_on_a_non_local_filesystem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve("results/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "results" / "x")
    fs, path = resolve(f"file://{tmp_path}/y")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/y"
    mock = pafs._MockFileSystem()  # an object store stand-in: the single-PUT branch
    table = pa.table({"x": [1]})
    write_parquet_atomic(mock, "bucket/sweep/curves/a.parquet", table)
    assert read_parquet(mock, "bucket/sweep/curves/a.parquet").equals(table)
    assert read_parquet(mock, "bucket/sweep/missing.parquet") is None
    assert list_files(mock, "bucket/sweep/curves", ".parquet") == ["bucket/sweep/curves/a.parquet"]
    assert list_files(mock, "bucket/nowhere", ".parquet") == []


def test_the_ray_free_failure_text_knows_rays_generic_actor_messages():
    """``service.failure_text`` spells out Ray's generic dead-actor lines so the ledger needs
    no Ray; a dead actor's reason skips them, so they must still be Ray's own."""
    assert {RayActorError.BASE_ERROR_MSG, ActorDiedError.BASE_ERROR_MSG} == GENERIC_ACTOR_LINES
