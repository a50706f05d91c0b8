"""Spec expansion writes each estimator's default lr and eps into the trial configs it
leaves them out of, so the Parquet row and `qsweep validate` show the values that run."""

import os
import subprocess
import sys

import pytest
import yaml

from service.errors import SpecError
from service.rows import config_columns
from service.spec_loading import parse_spec
from service.tune_config import decode as resolve_trial
from trainers.estimators import ESTIMATORS, default_eps, default_lr

ALL = sorted(ESTIMATORS)


def expand(**changes) -> list[dict]:
    data = {
        "name": "d",
        "grid": {"estimators": ALL, "bits": [2]},
        "budget": {"steps": 10},
        **changes,
    }
    return [t.config for t in parse_spec(data).trials]


def test_a_spec_without_lr_or_eps_expands_to_each_estimators_defaults():
    configs = expand()
    assert sorted(c["estimator"] for c in configs) == ALL
    for c in configs:
        assert c["lr"] == default_lr(c["estimator"])
        eps = default_eps(c["estimator"])
        assert c["estimator_options"] == ({} if eps is None else {"eps": eps})


def test_the_users_lr_and_eps_win_over_the_defaults():
    configs = {
        c["estimator"]: c
        for c in expand(
            trial={"lr": 0.07}, estimators={"nspsa": {"lr": 1e-4, "eps": 0.2}, "mezo": {"eps": 0.5}}
        )
    }
    assert (configs["nspsa"]["lr"], configs["nspsa"]["estimator_options"]["eps"]) == (1e-4, 0.2)
    assert (configs["mezo"]["lr"], configs["mezo"]["estimator_options"]["eps"]) == (0.07, 0.5)
    assert all(configs[name]["lr"] == 0.07 for name in ("ste", "fogzo", "quzo"))


FIRST_ORDER = [e for e in ALL if not ESTIMATORS[e].updates_in_place]
IN_PLACE = [e for e in ALL if ESTIMATORS[e].updates_in_place]


def test_the_optimizer_of_the_spec_picks_that_optimizers_default():
    configs = expand(grid={"estimators": FIRST_ORDER, "bits": [2]}, trial={"optimizer": "adam"})
    assert sorted(c["estimator"] for c in configs) == FIRST_ORDER
    for c in configs:
        assert c["lr"] == default_lr(c["estimator"], "adam")


@pytest.mark.parametrize("name", IN_PLACE)
@pytest.mark.parametrize("where", ["trial", "estimators"])
def test_optimizer_settings_for_an_in_place_estimator_are_one_spec_error(name, where):
    section = (
        {"trial": {"momentum": 0.9}}
        if where == "trial"
        else {"estimators": {name: {"momentum": 0.9}}}
    )
    with pytest.raises(SpecError) as info:
        expand(grid={"estimators": [name], "bits": [2]}, **section)
    message = str(info.value)
    assert message == (
        f"estimators.{name}: momentum: {name} updates the weights in place and uses no "
        "optimizer; remove it"
    )


def test_a_pretrain_stage_carries_its_default_lr_too():
    data = {
        "name": "p",
        "grid": {"estimators": ["quzo"]},
        "budget": {"steps": 10},
        "pretrain": {"steps": 5},
    }
    (stage,) = parse_spec(data).pretrain
    assert stage.config["lr"] == default_lr("ste")


def test_the_parquet_row_records_the_effective_values():
    for c in expand():
        row = config_columns(c)
        assert row["lr"] == default_lr(c["estimator"]) and row.get("eps") == default_eps(
            c["estimator"]
        )


def test_an_optuna_sample_still_replaces_the_default():
    data = {
        "name": "o",
        "grid": {"estimators": ["mezo"]},
        "budget": {"steps": 10},
        "search": {
            "mode": "optuna",
            "num_samples": 2,
            "space": {"lr": {"low": 1e-4, "high": 1e-2}, "eps": {"low": 1e-3, "high": 1e-1}},
        },
    }
    planned = {t.trial_id: t.config for t in parse_spec(data).trials}
    (tid,) = planned
    _, cfg = resolve_trial(planned, {"planned_id": tid, "lr": 5e-4, "eps": 0.01}, "t1")
    assert (cfg["lr"], cfg["estimator_options"]["eps"]) == (5e-4, 0.01)


def test_validate_prints_the_effective_numbers_not_default(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump({"name": "v", "grid": {"estimators": ALL}, "budget": {"steps": 10}})
    )
    out = subprocess.run(
        [sys.executable, "-c", "from service.cli import app; app()", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr
    rows = {
        line.split("│")[2].strip(): line for line in out.stdout.splitlines() if line.count("│") > 8
    }
    assert sorted(rows) == ALL
    for name, line in rows.items():
        cells = [cell.strip() for cell in line.split("│")]
        assert cells[8] == "grid" and cells[9] == f"{default_lr(name):.3g}"
        assert cells[10] == ("" if default_eps(name) is None else f"eps={default_eps(name)}")
    assert "default" not in out.stdout
