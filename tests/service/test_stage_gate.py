"""The pre-training stage shares the sweep's Tune run (``service.stage_gate``): its trials wait
for its model, fail with its reason when it fails, and the rest of the sweep runs on."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from service.spec_loading import load_spec
from service.stage_gate import (
    StageFailed,
    clear_failed,
    mark_failed,
    stage_done,
    stage_model_path,
    wait_for_stage,
)
from service.tune_config import encode
from tests.service.harness import explain, user_error, write_spec

RUN = ("--no-dashboard", "--num-cpus", 2)


def test_a_waiting_trial_goes_once_the_model_file_appears(tmp_path):
    sweep, polls = str(tmp_path), []

    def sleep(_seconds):  # the stage "finishes" during the third wait
        polls.append(1)
        if len(polls) == 3:
            path = stage_model_path(sweep, "pre-1")
            (tmp_path / "stages").mkdir()
            (tmp_path / "stages" / "pre-1.pt").write_bytes(b"model")
            assert path.endswith("stages/pre-1.pt")

    wait_for_stage(sweep, "pre-1", sleep=sleep)
    assert len(polls) == 3 and stage_done(sweep, "pre-1")


def test_a_failed_stage_fails_its_waiting_trials_with_its_reason_until_cleared(tmp_path):
    sweep = str(tmp_path)
    mark_failed(sweep, "pre-1", "pre-1: training loss became nan at step 3\nTraceback ...")
    with pytest.raises(StageFailed, match="stage pre-1 failed: pre-1: training loss became nan"):
        wait_for_stage(sweep, "pre-1", sleep=lambda _s: pytest.fail("waited on a failed stage"))
    clear_failed(sweep, "pre-1")
    sleeps = []
    with pytest.raises(RuntimeError, match="stop"):

        def sleep(_s):
            sleeps.append(1)
            raise RuntimeError("stop")  # it waits again instead of failing

        wait_for_stage(sweep, "pre-1", sleep=sleep)
    assert sleeps == [1]


def _stage_spec(tmp_path, name: str, **fields):
    return write_spec(
        tmp_path,
        name,
        grid={"estimators": ["mezo", "ste"], "seeds": [0, 1]},
        pretrain={"steps": 20, "estimators": ["mezo"], **fields},
        checkpoint_every=0,
    )


def test_the_grid_runs_the_stage_first_then_trials_from_scratch_then_its_own(tmp_path):
    plan = load_spec(_stage_spec(tmp_path, "order"))
    space, search, samples = encode(plan)
    ids = space["planned_id"]["grid_search"]
    starts = [plan.planned[i].get("init_from") or "" for i in ids]
    assert search is None and samples == 1 and len(ids) == 5
    assert ids[0].startswith("pretrain-") and starts[1:3] == ["", ""]
    assert all(s.startswith("stage:") for s in starts[3:])


@pytest.mark.slow
def test_one_tune_run_stage_failure_fails_its_trials_only(qsweep, tmp_path):
    """The stage diverges (lr 1e30): both MeZO trials fail naming it, both STE trials complete,
    every planned trial has exactly one row, and there is no separate stage Tune run."""
    spec_file = _stage_spec(tmp_path, "gate", optimizer="sgd", lr=1e30)
    plan = load_spec(spec_file)
    run = qsweep("run", spec_file, "--results", tmp_path / "results", *RUN)
    assert run.returncode == 1, explain(run)
    sweep = tmp_path / "results" / "gate"
    rows = {r["trial_id"]: r for r in pq.read_table(sweep / "trials.parquet").to_pylist()}
    planned = [t.trial_id for t in (*plan.pretrain, *plan.trials)]
    assert sorted(rows) == sorted(planned)
    (stage,) = plan.pretrain
    assert rows[stage.trial_id]["status"] == "failed"
    for trial in plan.trials:
        row = rows[trial.trial_id]
        if json.loads(row["config"])["estimator"] == "ste":
            assert row["status"] == "completed", row
        else:
            assert row["status"] == "failed"
            assert f"its pre-training stage {stage.trial_id} failed" in row["error"], row["error"]
    assert not (sweep / "tune-pretrain").exists() and (sweep / "tune").is_dir()


def test_a_folder_with_a_separate_stage_run_is_refused_in_one_line(qsweep, tmp_path):
    """An older qsweep ran the stage in a Tune run of its own (``tune-pretrain/``): resuming
    such a folder says so, naming the qsweep that wrote it, instead of guessing."""
    spec = write_spec(tmp_path, "old", grid={"estimators": ["ste"]}, budget={"steps": 5})
    run = qsweep("run", spec, "--results", tmp_path / "results", *RUN)
    assert run.returncode == 0, explain(run)
    sweep = tmp_path / "results" / "old"
    (sweep / "tune-pretrain").mkdir()
    line = user_error(qsweep("resume", sweep))
    assert "tune-pretrain" in line and "written by qsweep 0." in line and "--overwrite" in line


def test_a_stage_needs_a_grid_search(tmp_path):
    from service.errors import SpecError
    from service.spec_loading import parse_spec

    with pytest.raises(SpecError, match="pretrain: needs search.mode grid"):
        parse_spec(
            {
                "name": "p",
                "grid": {"estimators": ["ste"]},
                "budget": {"steps": 5},
                "pretrain": {"steps": 5},
                "search": {"mode": "optuna", "num_samples": 2},
            }
        )
