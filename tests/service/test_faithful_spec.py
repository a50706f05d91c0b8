"""Issue 15's spec names: the faithful settings are spec keys, and a bad one is one line,
exit 2, before Ray starts (``qsweep validate`` here; ``run`` validates the same way)."""

from __future__ import annotations

import pytest
import yaml

from service.errors import SpecError
from service.spec_loading import parse_spec
from tests.service.harness import user_error

BASE = {
    "name": "faithful",
    "grid": {"estimators": ["ste", "fogzo"], "bits": [2]},
    "budget": {"steps": 20},
}


def spec(**sections):
    return parse_spec(yaml.safe_load(yaml.safe_dump({**BASE, **sections})))


def test_fogzos_faithful_options_are_spec_keys():
    trials = spec(
        estimators={"fogzo": {"zo_params": "quantized", "beta_min": "auto", "kappa": 8}}
    ).trials
    (fogzo,) = [t.config for t in trials if t.config["estimator"] == "fogzo"]
    assert {k: fogzo["estimator_options"][k] for k in ("zo_params", "beta_min", "kappa")} == {
        "zo_params": "quantized",
        "beta_min": "auto",
        "kappa": 8,
    }


def test_the_faithful_settings_are_spec_keys_that_reach_every_trial():
    trials = spec(
        trial={"lr_schedule": "cosine", "warmup": 0.05, "quant_options": {"scale": "fixed"}}
    ).trials
    for trial in trials:
        assert trial.config["lr_schedule"] == "cosine" and trial.config["warmup"] == 0.05
        assert trial.config["quant_options"] == {"scale": "fixed"}


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"trial": {"lr_schedule": "cosin"}},
            "lr_schedule 'cosin' is not one of constant, linear, cosine",
        ),
        ({"trial": {"warmup": 1.0}}, "warmup must be a fraction of the budget in [0, 1)"),
        (
            {
                "grid": {"estimators": ["fogzo"], "quantizers": ["lsq"]},
                "trial": {"quant_options": {"scale": "fixed"}},
            },
            "scale: fixed does not apply",
        ),
        ({"trial": {"quant_options": {"scale": "frozen"}}}, "scale"),
        ({"estimators": {"fogzo": {"beta_min": "auto", "kappa": 0}}}, "kappa"),
        ({"estimators": {"fogzo": {"zo_params": "some"}}}, "zo_params"),
        ({"estimators": {"ste": {"zo_params": "quantized"}}}, "ste: unknown option(s) zo_params"),
    ],
)
def test_bad_faithful_settings_are_one_spec_error_naming_the_field(sections, message):
    with pytest.raises(SpecError) as info:
        spec(**sections)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_validate_rejects_a_bad_schedule_with_one_line_and_exit_2(qsweep, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "trial": {"lr_schedule": "step"}}))
    error = user_error(qsweep("validate", path, timeout=120))
    assert (
        error.startswith("error: ")
        and "lr_schedule 'step' is not one of constant, linear, cosine" in error
    )
