"""Sweep spec validation and expansion; `qsweep validate` exit codes. No Ray needed."""

import subprocess
import sys

import pytest
import yaml

from service.errors import SpecError
from service.spec_loading import load_spec, parse_spec
from service.tune_config import decode as resolve_trial
from trainers.estimators import default_eps, default_lr

BASE = {
    "name": "t",
    "grid": {"estimators": ["ste", "fogzo"], "bits": [2, 4], "seeds": [0, 1]},
    "budget": {"steps": 20},
}


def spec(**changes):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        data[key] = value
    return parse_spec(data)


def test_grid_expands_to_the_cartesian_product_with_stable_ids():
    trials = spec().trials
    assert len(trials) == 2 * 2 * 2
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids)
    assert ids == [t.trial_id for t in spec().trials], (
        "the same spec gives the same ids (resume, dedupe)"
    )
    assert ids[0].startswith("ste-int2-mlp-digits-s0-")


def test_per_estimator_hyperparameters_and_lists_as_extra_axes():
    trials = spec(estimators={"fogzo": {"lr": [0.1, 0.01], "n": 2, "beta_min": 0.99}}).trials
    fogzo = [t.config for t in trials if t.config["estimator"] == "fogzo"]
    assert len(fogzo) == 2 * 2 * 2
    assert {c["lr"] for c in fogzo} == {0.1, 0.01}
    assert all(
        c["estimator_options"] == {"n": 2, "beta_min": 0.99, "eps": default_eps("fogzo")}
        for c in fogzo
    )
    assert all(
        t.config["lr"] == default_lr("ste") for t in trials if t.config["estimator"] == "ste"
    )


def test_flops_budget_reaches_every_trial_and_fp8_ignores_the_bits_axis():
    data = {
        **BASE,
        "budget": {"flops": "1.5e7"},
        "grid": {"estimators": ["quzo"], "bits": [2, 4, 8], "quantizers": ["int", "fp8_e4m3"]},
    }
    trials = parse_spec(data).trials
    assert all(t.config["flops"] == 1.5e7 and t.config["steps"] is None for t in trials)
    fp8 = [t for t in trials if t.config["quantizer"] == "fp8_e4m3"]
    assert len(fp8) == 1 and fp8[0].config["bits"] == 8
    assert len(trials) == 3 + 1


@pytest.mark.parametrize(
    "change,message",
    [
        ({"grid": {"estimators": []}}, "grid.estimators: must list at least one value"),
        ({"grid": {"estimators": ["adamw"]}}, "grid.estimators: unknown estimator 'adamw'"),
        ({"grid": {"estimators": ["ste"], "bits": [2, "two"]}}, "grid.bits.1"),
        (
            {"grid": {"estimators": ["ste"], "bits": [16]}},
            "grid.bits: Value error|bits must be in 1..8",
        ),
        (
            {"grid": {"estimators": ["ste"], "models": ["gpt5"]}},
            "grid.models: unknown model 'gpt5'",
        ),
        (
            {"grid": {"estimators": ["quzo"], "quantizers": ["none"]}},
            "quzo keeps its weights on a quantized grid",
        ),
        (
            {"grid": {"estimators": ["qfo"], "quantizers": ["none"]}},
            "qfo keeps its weights on a quantized grid",
        ),
        ({"budget": {}}, "budget: set steps or flops"),
        ({"budget": {"steps": -3}}, "budget.steps"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"trial": {"batchsize": 3}}, "trial: unknown key 'batchsize'"),
        ({"trial": {"estimator": "ste"}}, "trial: 'estimator' is set by grid"),
        ({"estimators": {"fogzo": {"betta": 0.9}}}, "estimators.fogzo: fogzo: unknown option"),
        ({"estimators": {"mezo": {"lr": 0.1}}}, "estimators.mezo: not in grid.estimators"),
        ({"estimators": {"fogzo": {"optimizer": "lion"}}}, "optimizer 'lion'"),
        ({"resources": {"cpus": 0}}, "resources.cpus"),
        ({"search": {"mode": "random"}}, "search.mode"),
        (
            {"search": {"mode": "grid", "space": {"lr": {"low": 0.1, "high": 1}}}},
            "space is only used with mode: optuna",
        ),
        (
            {"search": {"mode": "optuna", "space": {"lr": {"low": 1, "high": 0.1}}}},
            "needs low < high",
        ),
        (
            {"search": {"mode": "optuna", "space": {"gamma": {"low": 0.1, "high": 1}}}},
            "search.space.gamma",
        ),
        ({"name": "my sweep!"}, "name: use letters"),
    ],
)
def test_each_bad_field_gets_its_own_one_line_error(change, message):
    with pytest.raises(SpecError, match=message) as err:
        spec(**change)
    assert "\n" not in str(err.value)


def test_resolve_trial_grid_and_optuna():
    s = spec(estimators={"fogzo": {"lr": 0.05}})
    planned = {t.trial_id: t.config for t in s.trials}
    fogzo_id = next(i for i, c in planned.items() if c["estimator"] == "fogzo")
    assert resolve_trial(planned, {"planned_id": fogzo_id}, "abc") == (fogzo_id, planned[fogzo_id])
    tid, cfg = resolve_trial(planned, {"planned_id": fogzo_id, "lr": 0.2, "beta_min": 0.9}, "abc")
    assert (
        tid == f"{fogzo_id}-abc"
        and cfg["lr"] == 0.2
        and cfg["estimator_options"]["beta_min"] == 0.9
    )
    assert planned[fogzo_id]["lr"] == 0.05, "resolving must not mutate the plan"
    ste_id = next(i for i, c in planned.items() if c["estimator"] == "ste")
    _, cfg = resolve_trial(planned, {"planned_id": ste_id, "beta_min": 0.9}, "x")
    assert "beta_min" not in cfg["estimator_options"], (
        "options an estimator lacks are not forced on it"
    )


def test_the_quick_example_is_valid_and_has_36_trials():
    quick = load_spec("examples/quick.yaml")
    assert len(quick.trials) == 6 * 3 * 2


def _qsweep(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", "from service.cli import app; app()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_validate_cli_prints_the_table_and_exits_2_on_errors(tmp_path):
    ok = _qsweep("validate", "examples/quick.yaml")
    assert ok.returncode == 0 and "36 trials" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {estimators: [ste], bits: [9]}\nbudget: {steps: 5}\n")
    out = _qsweep("validate", str(bad))
    assert out.returncode == 2
    assert (
        out.stderr.strip().startswith("error: grid.bits")
        and len(out.stderr.strip().splitlines()) == 1
    )
    assert "Traceback" not in out.stderr
    missing = _qsweep("validate", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "no such spec file" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    out = _qsweep("validate", str(broken))
    assert out.returncode == 2 and "not valid YAML" in out.stderr


@pytest.mark.parametrize(
    "section,option,message",
    [
        (
            "model_options",
            {"hiden": 3},
            "model_options: mlp: unknown option(s) hiden; valid options: hidden, bias",
        ),
        (
            "dataset_options",
            {"foo": 1},
            "dataset_options: digits: unknown option(s) foo; valid options: size",
        ),
    ],
)
def test_unknown_model_or_dataset_options_fail_when_the_spec_is_read(section, option, message):
    """Not inside a trial hours later: the spec names the bad option and what is valid."""
    with pytest.raises(SpecError) as err:
        parse_spec(
            {
                "name": "x",
                "grid": {"estimators": ["ste"]},
                "budget": {"steps": 5},
                "trial": {section: option},
            }
        )
    assert str(err.value).endswith(message) and "\n" not in str(err.value)
