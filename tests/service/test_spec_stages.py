"""Which trials start from the pre-training stage (``pretrain.estimators``) and per-model
settings (``models:``): the regimes of quick.yaml and the repro presets, checked on the
expanded trials, and end to end on the weights a fine-tuning trial really starts from."""

import pyarrow.parquet as pq
import pytest
import yaml

from service.errors import SpecError
from service.plan import STAGE_PREFIX
from service.spec_loading import load_spec, parse_spec
from tests.service.harness import explain
from trainers import run_trial

FINE_TUNING = {"mezo", "quzo", "qfo"}
QAT = {"ste", "nspsa", "fogzo"}


def _spec(**extra) -> dict:
    return {"name": "p", "grid": {"estimators": ["ste", "mezo"]}, "budget": {"steps": 5}, **extra}


def test_quick_fine_tunes_the_zo_arms_and_trains_the_qat_arms_from_scratch():
    spec = load_spec("examples/quick.yaml")
    (stage,) = spec.pretrain
    trials = spec.trials
    assert {t.config["estimator"] for t in trials} == FINE_TUNING | QAT
    for t in trials:
        if t.config["estimator"] in FINE_TUNING:
            assert t.config["init_from"] == STAGE_PREFIX + stage.trial_id, t.trial_id
        else:
            assert "init_from" not in t.config, t.trial_id
    assert stage.config["quantizer"] == "none" and "estimators" not in stage.config


def test_without_estimators_the_stage_feeds_every_trial():
    spec = parse_spec(_spec(pretrain={"steps": 5}))
    assert all(t.config["init_from"].startswith(STAGE_PREFIX) for t in spec.trials)


@pytest.mark.parametrize(
    "value,message",
    [
        (["mezo", "quzo"], "pretrain.estimators: 'quzo' is not in grid.estimators ['ste', 'mezo']"),
        ("mezo", "estimators: expected a non-empty list of estimator names"),
        ([], "estimators: expected a non-empty list of estimator names"),
    ],
)
def test_pretrain_estimators_must_be_grid_estimators(value, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(_spec(pretrain={"steps": 5, "estimators": value}))


def test_a_bad_pretrain_estimator_is_one_line_and_exit_2(qsweep, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_spec(pretrain={"steps": 5, "estimators": ["qfo"]})))
    result = qsweep("validate", path)
    assert result.returncode == 2, explain(result)
    assert (
        len(result.stderr.strip().splitlines()) == 1
        and "pretrain.estimators: 'qfo'" in result.stderr
    )


def test_models_section_pairs_each_model_with_its_datasets_bits_and_settings():
    spec = parse_spec(
        {
            "name": "m",
            "grid": {"estimators": ["ste"], "models": ["mlp", "llama"], "bits": [2, 4]},
            "budget": {"steps": 5},
            "trial": {"batch_size": 8},
            "models": {
                "llama": {
                    "datasets": ["text"],
                    "bits": [2],
                    "model_options": {"size": "tiny"},
                    "steps": 7,
                }
            },
            "pretrain": {"steps": 3},
        }
    )
    cells = {
        (t.config["model"], t.config["dataset"], t.config["bits"], t.config["steps"])
        for t in spec.trials
    }
    assert cells == {("mlp", "digits", 2, 5), ("mlp", "digits", 4, 5), ("llama", "text", 2, 7)}
    stages = {t.config["model"]: t.config for t in spec.pretrain}
    assert stages["llama"]["dataset"] == "text" and stages["llama"]["model_options"] == {
        "size": "tiny"
    }
    assert stages["llama"]["steps"] == 3 and "model_options" not in stages["mlp"]


@pytest.mark.parametrize(
    "models,message",
    [
        ({"cnn": {}}, "models.cnn: not in grid.models"),
        ({"mlp": {"seed": 1}}, "models.mlp: unknown key 'seed'"),
        ({"mlp": {"datasets": ["nope"]}}, "models.mlp.datasets: unknown dataset 'nope'"),
        ({"mlp": {"bits": [9]}}, "models.mlp.bits: bits must be in 1..8"),
        ({"mlp": {"model_options": {"depth": 2}}}, "model_options"),
    ],
)
def test_bad_models_sections_are_one_line(models, message):
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(_spec(models=models))
    assert "\n" not in str(err.value)


def _step0(rows: list[dict], trial_id: str) -> float:
    return next(r["eval_loss"] for r in rows if r["trial_id"] == trial_id and r["step"] == 0)


@pytest.mark.slow  # a Ray sweep: ~1 min on 2 cores
def test_a_fine_tuning_trial_starts_from_the_stage_weights_and_a_qat_trial_does_not(
    qsweep, tmp_path
):
    spec = _spec(
        pretrain={"steps": 60, "optimizer": "adam", "lr": 0.01, "estimators": ["mezo"]},
        trial={"num_evals": 1, "threads": 1},
        grid={"estimators": ["ste", "mezo"], "bits": [4]},
    )
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = qsweep(
        "run", path, "--results", tmp_path, "--no-dashboard", "--num-cpus", 2, timeout=300
    )
    assert result.returncode == 0, explain(result)
    planned = {t.config["estimator"]: t for t in parse_spec(spec).trials}
    (stage,) = parse_spec(spec).pretrain
    checkpoint = tmp_path / "p" / "stages" / f"{stage.trial_id}.pt"
    assert checkpoint.is_file()
    curves = pq.read_table(tmp_path / "p" / "curves").to_pylist()

    def first_loss(config: dict) -> float:
        out: list[dict] = []
        run_trial({**config, "steps": 1, "num_evals": 1}, out.append)
        return out[0]["eval_loss"]

    mezo, ste = planned["mezo"].config, planned["ste"].config
    from_checkpoint = first_loss({**mezo, "init_from": str(checkpoint)})
    from_scratch = first_loss({k: v for k, v in mezo.items() if k != "init_from"})
    assert from_checkpoint < from_scratch - 0.5  # 60 Adam steps of float pre-training show
    assert _step0(curves, planned["mezo"].trial_id) == pytest.approx(from_checkpoint, rel=1e-6)
    assert _step0(curves, planned["ste"].trial_id) == pytest.approx(first_loss(ste), rel=1e-6)
