"""Every estimator's own default lr (and eps) trains the built-in MLP without diverging, on
digits and on a 30-feature table (scikit-learn's breast cancer), at 2 and 8 bits, over the
default budget: the trials below set neither lr, eps nor steps."""

import math

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from trainers import TrialConfig, TrialDiverged, run_trial
from trainers.config import ConfigError
from trainers.estimators import ESTIMATORS, default_eps, default_lr, estimator_config

# Cases that only have to stay bounded (none: QuZO with fp32 master weights learns at 2 bits
# too; the on-grid storage's 2-bit case did not, docs/estimators.md).
ONLY_BOUNDED: set[tuple[str, str, int]] = set()
BOUNDED = 1.25  # at most this times the initial loss (the old shared lr drove n-SPSA to inf)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    data = load_breast_cancer()
    path = tmp_path_factory.mktemp("table") / "breast_cancer.npz"
    np.savez(path, x=data.data, y=data.target)
    return str(path)


@pytest.mark.parametrize("bits", [2, 8])
@pytest.mark.parametrize("dataset", ["digits", "table"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_the_default_lr_and_eps_train_without_diverging(name, dataset, bits, table_path):
    config = {
        "estimator": name,
        "bits": bits,
        "dataset": dataset,
        "num_evals": 3,
        "threads": 1,
        "dataset_options": {"path": table_path} if dataset == "table" else {},
    }
    assert TrialConfig.from_dict(config).lr == default_lr(name)
    reports = []
    run_trial(config, reports.append)  # a NaN/inf loss raises TrialDiverged
    initial, final = reports[0]["eval_loss"], reports[-1]
    assert final["step"] == TrialConfig().steps
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["eval_loss"])
    if (name, dataset, bits) in ONLY_BOUNDED:
        assert final["train_loss"] < BOUNDED * initial and final["eval_loss"] < BOUNDED * initial, (
            initial,
            final,
        )
    else:
        assert final["train_loss"] < initial and final["eval_loss"] < initial, (initial, final)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_defaults_live_on_the_estimator_and_an_explicit_lr_wins(name):
    assert TrialConfig.from_dict({"estimator": name}).lr == default_lr(name) > 0
    assert TrialConfig.from_dict({"estimator": name, "lr": 0.123}).lr == 0.123
    eps = default_eps(name)
    assert eps == getattr(estimator_config(name), "eps", None)  # STE and qfo have none


def test_first_order_optimizers_get_their_own_default():
    for name in ("ste", "nspsa", "fogzo"):
        adam = TrialConfig.from_dict({"estimator": name, "optimizer": "adam"}).lr
        assert adam == default_lr(name, "adam") != default_lr(name, "sgd")
    for name in ("mezo", "quzo", "qfo"):  # in place: no optimizer, one default (their config's)
        cfg = TrialConfig.from_dict({"estimator": name})
        assert cfg.lr == default_lr(name) == cfg.estimator_config.lr
        assert cfg.optimizer is None and cfg.momentum is None and cfg.weight_decay is None


@pytest.mark.parametrize("name", ["mezo", "quzo", "qfo"])
@pytest.mark.parametrize(
    "setting", [{"optimizer": "adam"}, {"momentum": 0.5}, {"weight_decay": 0.0}]
)
def test_an_in_place_estimator_rejects_optimizer_settings(name, setting):
    with pytest.raises(
        ConfigError, match=f"{next(iter(setting))}: {name} updates the weights in place"
    ):
        TrialConfig.from_dict({"estimator": name, **setting})


def test_one_shared_lr_does_not_fit_every_estimator(table_path):
    """Why the defaults are per estimator: n-SPSA at STE's default lr blows up on the table."""
    config = {
        "estimator": "nspsa",
        "lr": default_lr("ste"),
        "dataset": "table",
        "threads": 1,
        "dataset_options": {"path": table_path},
        "num_evals": 1,
    }
    reports = []
    try:
        run_trial(config, reports.append)
    except TrialDiverged:
        return
    assert not reports[-1]["eval_loss"] < reports[0]["eval_loss"], reports
