"""A new estimator is one module plus its registry line: registered, it is a valid spec
estimator, it trains, and its options land in the Parquet as typed columns."""

from __future__ import annotations

import pyarrow as pa
import pytest

from contract.storage import read_trials
from service.errors import SpecError
from service.ledger import ResultsLedger
from service.spec_loading import parse_spec
from tests.service.toy_estimator import DampedSTE
from trainers import run_trial
from trainers.estimators import ESTIMATORS, register_estimator


@pytest.fixture
def registered():
    register_estimator(DampedSTE)  # the registry line
    yield
    del ESTIMATORS["damped_ste"]


def _spec(**estimators):
    return {
        "name": "toy",
        "grid": {"estimators": ["damped_ste", "ste"], "bits": [4]},
        "trial": {"num_evals": 2, "batch_size": 32},
        "budget": {"steps": 6},
        "estimators": estimators,
    }


def test_a_registered_estimators_options_land_in_the_parquet(registered, tmp_path):
    plan = parse_spec(_spec(damped_ste={"damping": [0.25, 0.75], "flavour": "nesterov"}))
    assert sorted(t.config["estimator"] for t in plan.trials) == ["damped_ste"] * 2 + ["ste"]
    ledger = ResultsLedger(str(tmp_path), "toy", {"qsweep": "test"})
    for trial in plan.trials:
        ledger.register(trial.trial_id, trial.config)
        ledger.start(trial.trial_id)
        run_trial(trial.config, lambda record, tid=trial.trial_id: ledger.result(tid, record))
        ledger.complete(trial.trial_id)
    table = read_trials(str(tmp_path))
    assert table.schema.field("damping").type == pa.float64()
    assert table.schema.field("flavour").type == pa.string()
    assert table.schema.field("repeats").type == pa.int64()
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    toy = sorted(
        (r for r in rows.values() if r["estimator"] == "damped_ste"), key=lambda r: r["damping"]
    )
    assert [(r["damping"], r["flavour"], r["repeats"]) for r in toy] == [
        (0.25, "nesterov", 1),
        (0.75, "nesterov", 1),
    ]
    assert all(r["status"] == "completed" and r["steps"] == 6 for r in rows.values())
    assert all(r["lr"] == 0.05 and r["optimizer"] == "sgd" for r in toy)  # its default lr
    (ste,) = [r for r in rows.values() if r["estimator"] == "ste"]
    assert ste["damping"] is None and ste["flavour"] is None  # not an STE option


def test_a_registered_estimators_bad_option_is_one_spec_error(registered):
    with pytest.raises(SpecError) as info:
        parse_spec(_spec(damped_ste={"damping": 2.0}))
    assert str(info.value) == (
        "estimators.damped_ste: damped_ste: damping must be in (0, 1] (got 2.0)"
    )
    with pytest.raises(SpecError, match="unknown option"):
        parse_spec(_spec(damped_ste={"dampening": 0.5}))


def test_without_its_registry_line_the_estimator_is_unknown():
    with pytest.raises(SpecError, match="unknown estimator 'damped_ste'"):
        parse_spec(_spec())
