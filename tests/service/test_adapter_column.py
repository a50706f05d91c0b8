"""A LoRA fine-tune and a full fine-tune of the same estimator are two arms: the trials
table records the adapter, and the analysis splits on it."""

from __future__ import annotations

import pandas as pd

from analysis.tradeoff import add_arms
from service.rows import adapter_label, config_columns

TINY = {"config": {"model_type": "opt", "hidden_size": 16, "num_hidden_layers": 1}}
LORA = {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}


def test_the_adapter_is_named_where_the_model_can_have_one():
    assert (
        adapter_label("hf_causal_lm", {**TINY, "lora": LORA}) == "lora r=8 alpha=16 q_proj+v_proj"
    )
    assert adapter_label("hf_causal_lm", TINY) == "none"
    assert adapter_label("mlp", {}) is None
    assert config_columns({"estimator": "mezo", "model": "mlp", "steps": 5})["adapter"] is None


def test_lora_and_full_fine_tuning_are_separate_arms():
    trials = pd.DataFrame(
        {
            "sweep": "s",
            "estimator": ["mezo"] * 4,
            "seed": [0, 1, 0, 1],
            "adapter": ["none", "none", "lora r=8", "lora r=8"],
        }
    )
    assert sorted(set(add_arms(trials)["arm"])) == ["mezo adapter=lora r=8", "mezo adapter=none"]
