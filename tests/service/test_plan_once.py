"""The plan carries typed configs built once: a trial's ``TrialConfig`` and its row columns
are made when the spec is read, and nothing downstream builds them again; the results
ledger, which ``qsweep status``-like tools import, loads no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.ledger import ResultsLedger
from service.spec_loading import parse_spec
from trainers.config import TrialConfig

SPEC = {
    "name": "once",
    "grid": {"estimators": ["ste", "fogzo", "quzo"], "bits": [2, 4], "seeds": [0, 1]},
    "budget": {"steps": 5},
    "pretrain": {"steps": 5, "estimators": ["quzo"]},
}


@pytest.fixture
def builds(monkeypatch):
    """How many TrialConfig objects get built (each one validates a whole trial)."""
    count = {"n": 0}
    original = TrialConfig.__post_init__

    def counting(self):
        count["n"] += 1
        original(self)

    monkeypatch.setattr(TrialConfig, "__post_init__", counting)
    return count


def test_each_trial_is_validated_once_when_the_spec_is_read(builds, tmp_path):
    plan = parse_spec(SPEC)
    trials = (*plan.pretrain, *plan.trials)
    assert len(trials) == 1 + 3 * 2 * 2
    assert builds["n"] == len(trials)  # once each, input checks included
    for trial in trials:
        assert isinstance(trial.settings, TrialConfig)
        assert trial.settings.estimator == trial.config["estimator"]
        assert trial.settings.estimator_config is not None and trial.settings.quant is not None
        assert trial.columns["estimator"] == trial.config["estimator"]
    # registering every planned trial's row in the ledger builds nothing again
    ledger = ResultsLedger(str(tmp_path / "once"), "once", {"qsweep": "test"})
    before = builds["n"]
    for trial in trials:
        ledger.register(trial.trial_id, trial.config, plan.columns[trial.trial_id])
    assert builds["n"] == before
    row = ledger.rows[plan.trials[0].trial_id]
    assert row["lr"] == plan.trials[0].settings.lr and row["role"] == "grid"


def test_importing_the_ledger_loads_no_torch():
    code = "import sys, service.ledger; print(sorted(m for m in sys.modules if m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
