"""Quantizers: grid membership, level counts, surrogate gradients, LSQ, FP8, stochastic rounding."""

import json
import math

import pytest
import torch
from torch import nn

from trainers.quant import (
    FP8Quantizer,
    IntQuantizer,
    LSQQuantizer,
    QuantLinear,
    QuantSpec,
    layer_precisions,
    precision_summary,
    quantize_model,
    quantized_layers,
    snap_to_grid,
)
from trainers.quant import functional as qf


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("per_channel", [False, True])
def test_int_quantizer_outputs_on_grid_with_at_most_2b_levels(bits, per_channel):
    w = torch.randn(16, 32, generator=_gen(bits)) * 3
    q = IntQuantizer(bits, per_channel)
    out = q(w)
    scale = q.step_size(w)
    qmin, qmax = qf.int_range(bits)
    assert torch.equal(qf.fake_quantize(out, scale, qmin, qmax), out), (
        "quantizing twice must change nothing"
    )
    levels = torch.round(out / scale)
    assert torch.allclose(out, levels * scale, atol=0, rtol=1e-6), (
        "outputs are integer multiples of the step"
    )
    assert levels.min() >= qmin and levels.max() <= qmax
    per_row = (
        [torch.unique(levels[i]).numel() for i in range(16)]
        if per_channel
        else [torch.unique(levels).numel()]
    )
    assert max(per_row) <= 2**bits
    if bits == 1:
        assert set(torch.unique(levels).tolist()) <= {-1.0, 1.0}


def test_per_channel_scale_has_one_value_per_output_channel():
    w = torch.randn(8, 4, 3, 3) * torch.arange(1, 9).view(8, 1, 1, 1)
    scale = IntQuantizer(8, per_channel=True).step_size(w)
    assert scale.shape == (8, 1, 1, 1)
    assert torch.allclose(scale.flatten(), w.abs().flatten(1).amax(1) / 127)


def test_fake_quantize_matches_naive_reference():
    x = torch.linspace(-3, 3, 1001)
    scale = torch.tensor(0.37)
    ref = torch.tensor([0.37 * min(max(round(v / 0.37), -8), 7) for v in x.tolist()])
    # torch.round is half-to-even like Python's round: bit-exact agreement expected.
    assert torch.allclose(qf.fake_quantize(x, scale, -8, 7), ref, atol=0, rtol=1e-6)


@pytest.mark.parametrize(
    "surrogate,expected",
    [
        ("identity", lambda x: torch.ones_like(x)),
        ("hardtanh", lambda x: (x.abs() <= 1).float()),
        ("tanh", lambda x: 1 - torch.tanh(x) ** 2),
        ("approxsign", lambda x: (2 - 2 * x.abs()).clamp(min=0)),
    ],
)
def test_one_bit_surrogate_gradients_are_the_textbook_ones(surrogate, expected):
    x = torch.linspace(-2, 2, 81, requires_grad=True)
    q = IntQuantizer(1, surrogate=surrogate)
    q.register_buffer("frozen_scale", torch.tensor(1.0))  # step 1 so dQ/dw = dQ/dx
    q(x).sum().backward()
    assert torch.allclose(x.grad, expected(x.detach()), atol=1e-6)


@pytest.mark.parametrize("surrogate", ["tanh", "approxsign", "clipped"])
def test_multibit_surrogates_average_to_one_inside_the_grid(surrogate):
    # The surrogate is the derivative of E[Q(x + noise)], which is x inside the range.
    x = torch.linspace(-6, 5, 110001)
    g = qf.surrogate_grad(x, surrogate, -8, 7)
    assert abs(g.mean().item() - 1.0) < 0.02
    assert qf.surrogate_grad(torch.tensor([20.0]), surrogate, -8, 7).item() < 1e-3


def test_clipped_surrogate_zero_outside_the_range():
    x = torch.tensor([-9.0, -8.0, 0.0, 7.0, 7.5], requires_grad=True)
    q = IntQuantizer(4, surrogate="clipped")
    q.register_buffer("frozen_scale", torch.tensor(1.0))
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_lsq_step_gradient_matches_the_paper_formula():
    torch.manual_seed(0)
    w = torch.randn(64) * 0.5
    q = LSQQuantizer(w, bits=3)
    w = w.clone().requires_grad_(True)
    out = q(w)
    grad_out = torch.randn(64)
    (out * grad_out).sum().backward()
    alpha = q.step.detach()
    x = w.detach() / alpha
    qmin, qmax = qf.int_range(3)
    inside = (x >= qmin) & (x <= qmax)
    d_alpha = torch.where(inside, torch.round(x) - x, torch.clamp(torch.round(x), qmin, qmax))
    expected = (grad_out * d_alpha).sum() / math.sqrt(64 * qmax)
    assert torch.allclose(q.step.grad, expected, rtol=1e-5)
    assert torch.allclose(w.grad, grad_out * inside.float())


def test_lsq_init_is_two_mean_abs_over_sqrt_qp():
    w = torch.randn(100)
    q = LSQQuantizer(w, bits=4)
    assert torch.allclose(q.step.detach(), 2 * w.abs().mean() / math.sqrt(7))


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_round_trip_matches_torch_float8(fmt):
    x = torch.randn(4096, generator=_gen(1)) * 10
    dtype = qf.FP8_FORMATS[fmt]
    assert torch.equal(qf.round_to_fp8(x, fmt), x.to(dtype).to(torch.float32))
    q = FP8Quantizer(fmt)
    out = q(x)
    scale = q.scale(x)
    assert torch.equal(q.round_nearest(out), out), "quantizer output on the scaled FP8 grid"
    assert torch.allclose(out / scale, (out / scale).to(dtype).float(), rtol=1e-6, atol=0)
    assert (out - x).abs().max() <= q.step_size(x).max()


@pytest.mark.parametrize("grid", ["int4", "int2", "sign", "fp8_e4m3", "fp8_e5m2"])
def test_stochastic_rounding_is_unbiased_and_on_grid(grid):
    x = torch.tensor([-1.3, -0.41, 0.0, 0.07, 0.5, 0.93, 2.6]).repeat(40000, 1)
    gen = _gen(3)
    if grid.startswith("fp8"):
        out = qf.stochastic_round_fp8(x, grid, gen)
        assert torch.equal(out, qf.round_to_fp8(out, grid))
        tol = 0.02
    else:
        qmin, qmax = {"int4": (-8, 7), "int2": (-2, 1), "sign": (-1, 1)}[grid]
        out = qf.stochastic_round_int(x, qmin, qmax, gen)
        assert torch.equal(out, torch.round(out)) and out.min() >= qmin and out.max() <= qmax
        x = x.clamp(qmin, qmax)
        tol = 0.02
    assert torch.allclose(out.mean(0), x[0], atol=tol)
    # Only the two bracketing grid values ever appear.
    assert max(torch.unique(out[:, j]).numel() for j in range(out.shape[1])) <= 2


def test_quantize_model_swaps_layers_and_keeps_parameters():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize_model(model, QuantSpec(kind="int", bits=4, act_bits=4))
    assert [type(m).__name__ for m in model] == ["QuantConv2d", "ReLU", "Flatten", "QuantLinear"]
    for name, value in before.items():
        assert torch.equal(model.state_dict()[name], value)
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    assert all(layer.act_quantizer is not None for _, layer in quantized_layers(model))


def test_quantize_model_first_last_and_exclusions():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    quantize_model(model, QuantSpec(kind="int", bits=2, first_last="8bit", exclude=("2",)))
    assert isinstance(model[0], QuantLinear) and model[0].weight_quantizer.bits == 8
    assert isinstance(model[1], QuantLinear) and model[1].weight_quantizer.bits == 2
    assert type(model[2]) is nn.Linear
    assert model[3].weight_quantizer.bits == 8
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    quantize_model(model, QuantSpec(kind="int", bits=2, first_last="float"))
    assert (
        type(model[0]) is nn.Linear
        and type(model[2]) is nn.Linear
        and isinstance(model[1], QuantLinear)
    )


def test_activation_quantization_limits_input_levels():
    layer = nn.Linear(8, 1, bias=False)
    quantize_model(nn.Sequential(layer), QuantSpec(kind="int", bits=8, act_bits=2))
    seen = []
    layer.register_forward_pre_hook(lambda m, args: seen.append(m.act_quantizer(args[0])))
    layer(torch.randn(32, 8))
    assert torch.unique(seen[0]).numel() <= 4


@pytest.mark.parametrize("kind", ["int", "fp8_e4m3", "lsq"])
def test_snap_to_grid_makes_quantization_idempotent(kind):
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    quantize_model(model, QuantSpec(kind=kind, bits=4))
    snap_to_grid(model)
    for _, layer in quantized_layers(model):
        assert torch.equal(layer.weight_quantizer(layer.weight), layer.weight)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(kind="int4"), "quant.kind"),
        (dict(bits=9), "bits must be in 1..8"),
        (dict(surrogate="relu"), "surrogate"),
        (dict(first_last="fp16"), "first_last"),
        (dict(kind="lsq", bits=1), "lsq"),
        (dict(scale="static"), "quant.scale 'static' is not one of dynamic, fixed"),
        (
            dict(kind="lsq", bits=4, scale="fixed"),
            "LSQ learns its step; scale: fixed does not apply",
        ),
    ],
)
def test_quant_spec_rejects_bad_values_with_a_clear_message(bad, match):
    with pytest.raises(ValueError, match=match):
        QuantSpec(**bad)


def _mlp(kind, bits, scale, seed=0, per_channel=False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    return quantize_model(
        model, QuantSpec(kind=kind, bits=bits, per_channel=per_channel, scale=scale)
    )


def _scales(model):
    return {
        name: layer.weight_quantizer.scale(layer.weight).detach().clone()
        for name, layer in quantized_layers(model)
    }


def _train(model, steps=5):
    """A few STE steps with a large lr: every weight moves."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = _gen(7)
    for _ in range(steps):
        x, y = torch.randn(32, 16, generator=gen), torch.randint(0, 4, (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize(
    "kind,bits,per_channel",
    [("int", 2, False), ("int", 8, True), ("int", 1, False), ("fp8_e4m3", 8, False)],
)
def test_fixed_scale_stays_put_while_the_weights_train_and_dynamic_follows_them(
    kind, bits, per_channel
):
    dynamic_start = _scales(_mlp(kind, bits, "dynamic", per_channel=per_channel))
    for scale in ("fixed", "dynamic"):
        model = _mlp(kind, bits, scale, per_channel=per_channel)
        weights = [p.detach().clone() for p in model.parameters()]
        before = _scales(model)
        _train(model)
        after = _scales(model)
        assert all(not torch.equal(w, p) for w, p in zip(weights, model.parameters())), (
            "weights must move"
        )
        for name in before:  # both modes start from the scale of the starting weights
            assert torch.equal(before[name], dynamic_start[name])
        if scale == "fixed":
            assert all(torch.equal(before[n], after[n]) for n in before)
        else:
            assert all(not torch.equal(before[n], after[n]) for n in before)


def test_fixed_scale_travels_in_the_state_dict():
    trained = _mlp("int", 2, "fixed", seed=0)
    _train(trained)
    other = _mlp("int", 2, "fixed", seed=1)  # other starting weights: another frozen scale
    assert any(
        not torch.equal(a, b) for a, b in zip(_scales(trained).values(), _scales(other).values())
    )
    other.load_state_dict(trained.state_dict())  # strict: the buffer exists before loading
    for name, value in _scales(trained).items():
        assert torch.equal(_scales(other)[name], value)
    assert not any(k.endswith("frozen_scale") for k in _mlp("int", 2, "dynamic").state_dict())


def test_layer_precisions_show_first_last_exclude_and_activation_overrides():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    quantize_model(
        model, QuantSpec(kind="int", bits=2, act_bits=4, first_last="8bit", exclude=("2",))
    )
    assert layer_precisions(model) == {"0": "int8/a4", "1": "int2/a4", "2": "float", "3": "int8/a4"}
    assert json.loads(precision_summary(model)) == {"*": "int8/a4", "1": "int2/a4", "2": "float"}
    for kind, label in (("fp8_e5m2", "fp8_e5m2"), ("lsq", "lsq3"), ("none", "float")):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        quantize_model(model, QuantSpec(kind=kind, bits=3))
        assert layer_precisions(model) == {"0": label, "2": label}
        assert json.loads(precision_summary(model)) == {"*": label}
