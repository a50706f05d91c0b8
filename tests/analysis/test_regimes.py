"""The headline keeps training regimes apart: QAT from scratch, fine-tuning from the spec's
pre-training stage, and the stage itself are never ranked against each other; arms of
one estimator that differ in an option get their own rows; a fine-tuning arm already at
the compute target before training gives a sentence, not a division by zero."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from analysis.report_text import ratio_sentences
from analysis.summary import headline_table, regimes


def _trial(tid: str, estimator: str, metric: float, init_from: str | None = None, **extra) -> dict:
    config = {"estimator": estimator} | ({"init_from": init_from} if init_from else {})
    return {
        "sweep": "quick",
        "trial_id": tid,
        "status": "completed",
        "estimator": estimator,
        "quantizer": "int",
        "bits": 2,
        "final_eval_metric": metric,
        "final_eval_loss": 1 - metric,
        "flops": 1e6,
        "peak_memory_bytes": 1000,
        "metric_name": "accuracy",
        "config": json.dumps(config),
        "n": None,
        **extra,
    }


def frame() -> pd.DataFrame:
    stage = "stage:pretrain-mlp"
    rows = [_trial("pretrain-mlp", "ste", 0.95) | {"quantizer": "none", "bits": 8}]
    rows += [_trial(f"ste-s{s}", "ste", 0.80 + s / 100) for s in range(3)]
    rows += [_trial(f"nspsa-a-s{s}", "nspsa", 0.30 + s / 100, n=1) for s in range(3)]
    rows += [_trial(f"nspsa-b-s{s}", "nspsa", 0.40 + s / 100, n=760) for s in range(3)]
    rows += [_trial(f"mezo-s{s}", "mezo", 0.90 + s / 100, init_from=stage) for s in range(3)]
    rows += [_trial(f"qfo-s{s}", "qfo", 0.60 + s / 100, init_from=stage) for s in range(3)]
    return pd.DataFrame(rows)


def test_each_trial_gets_its_regime_from_its_id_and_config():
    trials = frame()
    found = dict(zip(trials["trial_id"], regimes(trials)))
    assert found["pretrain-mlp"] == "pre-training"
    assert found["ste-s0"] == found["nspsa-b-s2"] == "from scratch"
    assert found["mezo-s1"] == "fine-tune"


def test_the_best_arm_is_picked_within_its_regime_and_option_arms_are_split():
    table = headline_table(frame()).set_index(["regime", "estimator", "bits"])
    assert table.loc[("fine-tune", "mezo", 2), "vs_best"] == "best"
    assert table.loc[("fine-tune", "qfo", 2), "vs_best"] == ""
    assert (
        table.loc[("from scratch", "ste", 2), "vs_best"] == "best"
    )  # mezo's higher accuracy is another regime
    assert table.loc[("from scratch", "nspsa n=1", 2), "completed"] == 3
    assert table.loc[("from scratch", "nspsa n=760", 2), "metric_median"] == pytest.approx(0.41)
    assert table.loc[("pre-training", "float pre-training", 8), "completed"] == 1
    assert list(dict.fromkeys(table.index.get_level_values("regime"))) == [
        "from scratch",
        "fine-tune",
        "pre-training",
    ]


def test_an_arm_at_the_target_before_training_is_a_sentence_not_a_crash():
    ratios = pd.DataFrame(
        [
            {
                "model": "mlp",
                "dataset": "digits",
                "quantizer": "int",
                "bits": 8,
                "arm": "fogzo",
                "versus": "mezo",
                "flops": 0.0,
                "arm_reached": "2/2",
                "versus_reached": "2/2",
            },
            {
                "model": "mlp",
                "dataset": "digits",
                "quantizer": "int",
                "bits": 8,
                "arm": "fogzo",
                "versus": "ste",
                "flops": 2.0,
                "arm_reached": "2/2",
                "versus_reached": "2/2",
            },
        ]
    )
    sentences = ratio_sentences(SimpleNamespace(ratios=ratios, reference="ste"), "flops")
    assert "at 8 bits: mezo is at the target before any training" in sentences[-1]
    assert "no finite ratio vs fogzo" in sentences[-1]
    assert sentences[0] == "at 8 bits: fogzo needs 2.00x less compute (flops) than ste"
