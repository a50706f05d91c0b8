"""Storage of the weights (``master_weights``) for MeZO, QuZO and qfo, and QuZO's ``probe`` and
``same_rounding`` options (docs/estimators.md, QuZO, "Storage of θ̄ — a choice, measured")."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contract.schema import arrow_type
from trainers import run_trial
from trainers.config import TrialConfig
from trainers.estimators import CostModel, build_estimator, estimator_config, option_fields
from trainers.metering import track_peak_memory
from trainers.quant import QuantSpec, quantize_model, quantized_layers
from trainers.quant.layers import snap_to_grid

COST = CostModel(forward_flops=10.0, backward_flops=20.0)
LR = {"quzo": 0.05, "mezo": 0.05, "qfo": 0.1}


def mlp(bits=4, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    return quantize_model(model, QuantSpec(kind="int", bits=bits))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)


def grid_levels(w, scale):
    """``w / scale`` and whether it is integer-valued (float tolerance)."""
    k = w / scale
    return k, bool((k - k.round()).abs().max() < 1e-4)


def on_grid(layer):
    """The layer's weight is exactly a grid value of its frozen scale, inside the range."""
    q, w = layer.weight_quantizer, layer.weight.detach()
    k, integer = grid_levels(w, q.frozen_scale)
    inside = k.round().min() >= q.qmin and k.round().max() <= q.qmax
    return torch.equal(q.round_nearest(w), w) and integer and bool(inside)


# --- options ---------------------------------------------------------------------------------


def test_options_are_typed_columns_with_the_authors_defaults():
    hints = dict(option_fields())
    assert str(arrow_type(hints["master_weights"])) == "string"
    assert str(arrow_type(hints["probe"])) == "string"
    assert str(arrow_type(hints["same_rounding"])) == "bool"
    for name in ("quzo", "mezo", "qfo"):
        assert estimator_config(name).master_weights == "fp32"
        with pytest.raises(ValueError, match="master_weights must be one of fp32, none"):
            estimator_config(name, {"master_weights": "fp16"})
    with pytest.raises(ValueError, match="probe must be one of quantized, float"):
        estimator_config("quzo", {"probe": "int"})
    with pytest.raises(ValueError, match="same_rounding"):
        estimator_config("quzo", {"same_rounding": "yes"})
    with pytest.raises(ValueError, match="mezo: master_weights none needs a quantized model"):
        build_estimator("mezo", {"master_weights": "none"}, COST, 0, 0.1).prepare(nn.Linear(3, 2))


# --- master_weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quzo", "mezo", "qfo"])
def test_master_none_keeps_the_weights_exactly_on_the_grid(name):
    model = mlp()
    est = build_estimator(name, {"master_weights": "none"}, COST, 0, lr=LR[name])
    est.prepare(model)
    start = [layer.weight.detach().clone() for _, layer in quantized_layers(model)]
    for step in range(10):
        est.step(model, F.cross_entropy, batch(step), 0.5)
        assert all(on_grid(layer) for _, layer in quantized_layers(model)), step
    moved = [
        not torch.equal(layer.weight, w0) for (_, layer), w0 in zip(quantized_layers(model), start)
    ]
    assert all(moved), "the updates must move the weights along the grid"


@pytest.mark.parametrize("name", ["quzo", "mezo", "qfo"])
def test_master_fp32_updates_in_float_off_the_grid(name):
    """Weights that start on the grid (snapped, scales frozen) leave it: float updates, no
    rounding of theta; ``prepare`` does not snap."""
    model = mlp()
    latent = mlp()
    est = build_estimator(name, {"master_weights": "fp32"}, COST, 0, lr=LR[name])
    est.prepare(latent)
    assert all(torch.equal(a, b) for a, b in zip(latent.parameters(), mlp().parameters()))
    assert not any(hasattr(q.weight_quantizer, "frozen_scale") for _, q in quantized_layers(latent))
    snap_to_grid(model)
    est.prepare(model)
    assert all(on_grid(layer) for _, layer in quantized_layers(model))
    for step in range(5):
        est.step(model, F.cross_entropy, batch(step), 0.5)
    assert not any(on_grid(layer) for _, layer in quantized_layers(model))


@pytest.mark.parametrize("master", ["fp32", "none"])
@pytest.mark.parametrize("name", ["quzo", "mezo", "qfo"])
def test_zero_lr_leaves_the_weights(name, master):
    """On the grid bit for bit; in float within a rounding error (theta + eps z - 2 eps z +
    eps z), exactly for qfo (theta - 0 * g)."""
    model = mlp()
    options = {"master_weights": master, **({} if name == "qfo" else {"n": 2})}
    est = build_estimator(name, options, COST, 0, lr=0.0)
    est.prepare(model)
    before = copy.deepcopy(model.state_dict())
    for step in range(5):
        est.step(model, F.cross_entropy, batch(step), 0.5)
    for key, value in model.state_dict().items():
        if (master == "none" and key.endswith("weight")) or name == "qfo":
            assert torch.equal(value, before[key]), key
        else:
            torch.testing.assert_close(value, before[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("master", ["fp32", "none"])
def test_peak_memory_counts_the_weights(master):
    """The trial's tracker counts the parameter tensors that exist before the step: the
    weights (the float latent ones under ``fp32``) are in the peak, and no second copy of them
    is. Many small tensors and a tiny batch: a step's temporaries (a few tensors' worth) stay
    below the weights, so a peak that missed them would fail the first assertion."""
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(128, 128), nn.ReLU())])
    quantize_model(model, QuantSpec(kind="int", bits=4))
    x, y = torch.randn(2, 128), torch.randint(0, 10, (2,))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    est = build_estimator("quzo", {"master_weights": master}, COST, 0, lr=1e-3)
    est.prepare(model)
    step = lambda: est.step(model, F.cross_entropy, (x, y), 0.5)  # noqa: E731
    _, peak = track_peak_memory(step, [model], torch.device("cpu"))
    assert weights <= peak < 2 * weights, (peak, weights)


# --- QuZO's probe and same_rounding --------------------------------------------------------------


def record_effective_weights(model):
    """Per forward of each quantized layer: (effective weight / scale, qmin, qmax)."""
    seen = []

    def hook(layer, _inputs):
        q = layer.weight_quantizer
        with torch.no_grad():
            seen.append((layer.quantized_weight() / q.scale(layer.weight), q.qmin, q.qmax))

    handles = [layer.register_forward_pre_hook(hook) for _, layer in quantized_layers(model)]
    return seen, handles


@pytest.mark.parametrize("master", ["fp32", "none"])
@pytest.mark.parametrize("probe", ["quantized", "float"])
def test_quantized_probes_forward_only_on_grid_weights(probe, master):
    model = mlp()
    est = build_estimator("quzo", {"probe": probe, "master_weights": master, "n": 2}, COST, 0, 0.05)
    est.prepare(model)
    seen, handles = record_effective_weights(model)
    for step in range(3):
        est.step(model, F.cross_entropy, batch(step), 0.5)
    for h in handles:
        h.remove()
    assert len(seen) == 3 * 2 * 2 * 2  # steps x directions x (+, -) x layers
    grid = [
        integer and k.round().min() >= qmin and k.round().max() <= qmax
        for k, qmin, qmax in seen
        for _, integer in [grid_levels(k, 1.0)]
    ]
    if probe == "quantized":
        assert all(grid)
    else:  # theta + eps u1 as-is: a 4-bit perturbation of size 1e-3 is off the weight grid
        assert not any(grid)


def step_parts(same_rounding):
    """(u1, update) of one QuZO step with float master weights: u1 read from the + probe's
    weight, the update from the weights after the step."""
    model = mlp()
    layer = model[1]
    est = build_estimator("quzo", {"same_rounding": same_rounding}, COST, 3, lr=0.5)
    est.prepare(model)
    theta = layer.weight.detach().clone()
    plus = []
    handle = layer.register_forward_pre_hook(lambda m, _: plus.append(m.weight.detach().clone()))
    est.step(model, F.cross_entropy, batch(), 0.5)
    handle.remove()
    return (plus[0] - theta) / est.config.eps, layer.weight.detach() - theta


def test_same_rounding_updates_along_the_probe_direction():
    u1, update = step_parts(same_rounding=True)
    zero = u1 == 0  # Q_SR(u) is exactly 0 on many coordinates of a 4-bit grid
    assert zero.float().mean() > 0.1 and u1.abs().max() > 0
    cos = F.cosine_similarity(u1.flatten(), update.flatten(), dim=0).abs()
    assert cos > 0.9999 and torch.equal(update == 0, zero)  # update = -lr mu u1


def test_two_roundings_update_along_another_rounding():
    u1, update = step_parts(same_rounding=False)
    zero = u1 == 0
    # u2 = Q_SR(u) with other coin flips: zero on other coordinates, the float residue of
    # the +eps/-2eps/+eps moves (~1e-10) where only u1 is non-zero.
    moved = update.abs() > 1e-6
    assert (moved & zero).any() and (~moved & ~zero).any()
    cos = F.cosine_similarity(u1.flatten(), update.flatten(), dim=0).abs()
    assert 0.8 < cos < 0.999  # two roundings of the same Gaussian u


# --- the tiny LM at INT4 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The tiny LLaMA pre-trained in float (examples/repro_quzo.yaml's pre-training stage)."""
    path = tmp_path_factory.mktemp("pretrain") / "pre.pt"
    run_trial(
        {
            "estimator": "ste",
            "quantizer": "none",
            "model": "llama",
            "model_options": {"size": "tiny"},
            "dataset": "text",
            "dataset_options": {"seq_len": 64, "n_train": 2048, "n_test": 64},
            "optimizer": "adam",
            "lr": 0.003,
            "steps": 300,
            "batch_size": 16,
            "num_evals": 1,
            "threads": 1,
            "save_model_to": str(path),
        },
        lambda metrics: None,
    )
    return str(path)


def fine_tune(init_from, **options):
    config = {
        "estimator": "quzo",
        "estimator_options": {"n": 1, "eps": 1e-3, "perturb_bits": 4, **options},
        "lr": 1e-4,
        "lr_schedule": "linear",
        "bits": 4,
        "model": "llama",
        "model_options": {"size": "tiny"},
        "dataset": "text",
        "dataset_options": {"seq_len": 64, "n_train": 1024, "n_test": 64, "include": "email/*"},
        "batch_size": 16,
        "steps": 100,
        "num_evals": 1,
        "threads": 1,
        "init_from": init_from,
    }
    reports = []
    run_trial(config, reports.append)
    return config, reports


def test_quzo_fp32_lowers_int4_tiny_lm_perplexity(pretrained):
    """QuZO as its authors run it (float copy, quantized probes) learns at INT4 in 100 steps."""
    _, reports = fine_tune(pretrained, master_weights="fp32")
    start, end = reports[0]["eval_metric"], reports[-1]["eval_metric"]
    assert reports[0]["step"] == 0 and reports[-1]["step"] == 100
    assert math.isfinite(end) and end < start, (start, end)
    assert reports[-1]["peak_memory_bytes"] >= 4 * reports[-1]["num_params"]  # fp32 weights


def test_quzo_master_none_runs_and_is_recorded(pretrained):
    from service.rows import config_columns  # Ray-free: the trials table's row of a config

    config, reports = fine_tune(pretrained, master_weights="none")
    assert TrialConfig.from_dict(config).estimator_config.master_weights == "none"
    assert config_columns(config)["master_weights"] == "none"  # its trials-table column
    assert reports[-1]["done"] and math.isfinite(reports[-1]["eval_metric"])
