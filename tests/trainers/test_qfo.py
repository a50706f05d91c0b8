"""qfo, the QuZO paper's quantized first-order baseline: with ``master_weights: none`` weights
live on their grid (no float master copy); gradients on an 8-bit abs-max grid, an unbiased
update, no optimizer state; and QuZO's defaults as the authors'. The default storage
(``fp32``) is in tests/trainers/test_zo_storage.py."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.estimators import CostModel, build_estimator, estimator_config
from trainers.estimators.quzo import QuZOConfig, round_noise
from trainers.metering import track_peak_memory
from trainers.quant import QuantSpec, quantize_model, quantized_layers
from trainers.quant.layers import snap_to_grid

COST = CostModel(forward_flops=10.0, backward_flops=20.0)


def mlp(kind="int", bits=4, per_channel=False, sizes=(16, 12, 4), seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return quantize_model(
        nn.Sequential(nn.Flatten(), *layers[:-1]),
        QuantSpec(kind=kind, bits=bits, per_channel=per_channel),
    )


def batch(seed=0, n=32, d=16, classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def qfo(model, lr, seed=0, **options):
    options.setdefault("master_weights", "none")
    est = build_estimator("qfo", options, COST, seed, lr=lr)
    est.prepare(model)
    return est


@pytest.mark.parametrize(
    "kind,bits,per_channel",
    [
        ("int", 8, False),
        ("int", 4, False),
        ("int", 2, True),
        ("fp8_e4m3", 8, False),
        ("fp8_e5m2", 8, True),
    ],
)
def test_weights_are_exactly_on_their_grid_after_every_step(kind, bits, per_channel):
    model = mlp(kind, bits, per_channel)
    est = qfo(model, lr=0.5)
    start = [layer.weight.detach().clone() for _, layer in quantized_layers(model)]
    for step in range(8):
        est.step(model, F.cross_entropy, batch(step), 0.5)
        for name, layer in quantized_layers(model):
            w, q = layer.weight.detach(), layer.weight_quantizer
            assert torch.equal(q.round_nearest(w), w), (name, step)
            if kind == "int":  # w / alpha integer-valued inside [qmin, qmax]
                k = w / q.frozen_scale
                assert (k - k.round()).abs().max() < 1e-4, (name, step)
                assert k.round().min() >= q.qmin and k.round().max() <= q.qmax, (name, step)
    moved = [
        not torch.equal(layer.weight.detach(), w0)
        for (_, layer), w0 in zip(quantized_layers(model), start)
    ]
    assert all(moved), "the update must move the weights along the grid"


def test_no_float_copy_is_held_anywhere():
    model = mlp(bits=4)
    params = {id(p) for p in model.parameters()}
    est = qfo(model, lr=0.5)
    for step in range(3):
        est.step(model, F.cross_entropy, batch(step), 0.5)
    # The estimator: no tensor attribute, nothing in its state but the RNG.
    assert set(est.state_dict()) == {"generator"}
    assert not [
        k
        for k, v in vars(est).items()
        if isinstance(v, torch.Tensor)
        or (
            isinstance(v, (list, tuple, dict))
            and any(isinstance(x, torch.Tensor) for x in (v.values() if isinstance(v, dict) else v))
        )
    ]
    # The model: parameters (the on-grid weights themselves), one frozen scale per layer, no
    # gradient.
    for name, value in model.state_dict().items():
        if not name.endswith("frozen_scale"):
            assert any(value.data_ptr() == p.data_ptr() for p in model.parameters()), name
        else:
            assert value.numel() == 1, name
    assert all(p.grad is None for p in model.parameters()), "the gradient is freed once applied"
    assert len(params) == len({id(p) for p in model.parameters()})


class LinearLoss(nn.Module):
    """A quantized Linear whose loss sum(out * target) has a gradient independent of the weights."""

    def __init__(self, bits):
        super().__init__()
        torch.manual_seed(1)
        self.layer = quantize_model(
            nn.Sequential(nn.Linear(8, 6)), QuantSpec(kind="int", bits=bits)
        )[0]

    def forward(self, x):
        return self.layer(x)


def test_the_expected_update_is_minus_lr_times_the_gradient():
    model = LinearLoss(bits=4)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    target = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    loss_fn = lambda out, t: (out * t).sum()  # noqa: E731
    grad_w, grad_b = target.T @ x, target.sum(0)
    est = qfo(model, lr=0.0)
    alpha = model.layer.weight_quantizer.frozen_scale
    est.lr = 0.3 * float(
        alpha / grad_w.abs().max()
    )  # |lr g| <= 0.3 grid steps: nearest rounding would never move
    start = {k: v.clone() for k, v in model.state_dict().items()}
    draws = 4000
    delta_w, delta_b = torch.zeros_like(grad_w), torch.zeros_like(grad_b)
    for _ in range(draws):
        model.load_state_dict(start)
        est.step(model, loss_fn, (x, target), 0.5)
        delta_w += model.layer.weight.detach() - start["layer.weight"]
        delta_b += model.layer.bias.detach() - start["layer.bias"]
    mean_w, mean_b = delta_w / draws, delta_b / draws
    # Per draw each element's spread is at most half a weight step plus half a gradient step.
    grad_step_w, grad_step_b = grad_w.abs().max() / 127, grad_b.abs().max() / 127
    tol_w = 5 * (alpha / 2 + est.lr * grad_step_w / 2) / draws**0.5
    tol_b = 5 * (est.lr * grad_step_b / 2) / draws**0.5
    k = (start["layer.weight"] - est.lr * grad_w) / alpha
    inside = (k >= -8) & (k <= 7)  # the clamp at the grid's ends is the one (documented) bias
    assert inside.float().mean() > 0.8
    assert ((mean_w + est.lr * grad_w).abs() <= tol_w)[inside].all()
    assert ((mean_b + est.lr * grad_b).abs() <= tol_b).all()


def test_the_gradient_is_rounded_onto_a_grad_bits_abs_max_grid():
    """Seen through a bias (no weight grid: theta_new = theta - lr Q_SR(g) exactly)."""
    model = LinearLoss(bits=4)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    target = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    grad_b = target.sum(0)
    for bits, levels in ((8, 127), (2, 1)):
        est = qfo(model, lr=1.0, grad_bits=bits)
        before = model.layer.bias.detach().clone()
        est.step(model, lambda out, t: (out * t).sum(), (x, target), 0.5)
        g8 = (before - model.layer.bias.detach()) / (grad_b.abs().max() / levels)
        assert (g8 - g8.round()).abs().max() < 1e-3, bits  # on the grid of max|g| / Q_p
        assert g8.round().abs().max() == levels and g8.round().min() >= -levels - 1, bits
    with pytest.raises(ValueError, match="grad_bits"):
        estimator_config("qfo", {"grad_bits": 12})


def test_lr_is_read_every_step_and_zero_leaves_the_weights_exactly():
    model = mlp(bits=4)
    est = qfo(model, lr=0.0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(5):
        est.step(model, F.cross_entropy, batch(step), 0.5)
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    est.lr = 0.5  # a schedule sets estimator.lr between steps
    est.step(model, F.cross_entropy, batch(0), 0.5)
    assert not torch.equal(model.state_dict()["1.weight"], start["1.weight"])


def test_cost_is_one_forward_one_backward_and_a_float_model_is_refused():
    model = mlp()
    result = qfo(model, lr=0.1).step(model, F.cross_entropy, batch(), 0.5)
    assert (result.forwards, result.backwards, result.flops) == (1, 1, 30.0)
    with pytest.raises(ValueError, match="quantized model"):
        qfo(nn.Sequential(nn.Linear(4, 2)), lr=0.1)


@pytest.mark.parametrize("master_weights", ["none", "fp32"])
@pytest.mark.parametrize("kind", ["int", "fp8_e4m3"])
@pytest.mark.parametrize("sizes,n", [((64, 1024, 10), 8), ((32,) + (256,) * 6 + (10,), 1)])
def test_peak_memory_is_at_most_ste_with_sgd_momentum(kind, sizes, n, master_weights):
    """Measured as the trial loop does (metering's tracker around estimator + optimizer step):
    on the first step qfo's peak is at most STE + SGD with momentum's; from the second on,
    when STE's momentum buffers exist, below it by at least their size."""
    x, y = batch(0, n, sizes[0], sizes[-1])
    cpu = torch.device("cpu")
    peaks = {}
    for name in ("qfo", "ste"):
        model = mlp(kind, 8, sizes=sizes)
        options = {"master_weights": master_weights} if name == "qfo" else {}
        est = build_estimator(name, options, COST, 0, lr=0.01)
        snap_to_grid(model)  # the same model for both: on the grid, scales frozen (as with none)
        est.prepare(model)
        opt = (
            None
            if est.updates_in_place
            else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        )

        def train_step(est=est, model=model, opt=opt):
            est.step(model, F.cross_entropy, (x, y), 0.5)
            if opt is not None:
                opt.step()

        peaks[name] = [
            track_peak_memory(train_step, [m for m in (model, opt) if m], cpu)[1] for _ in range(2)
        ]
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert peaks["qfo"][0] <= peaks["ste"][0], peaks
    assert peaks["qfo"][1] <= peaks["ste"][1] - 0.9 * param_bytes, (peaks, param_bytes)


def test_quzo_defaults_are_the_authors():
    cfg = QuZOConfig()
    assert cfg.perturb_bits == 4 and cfg.eps == 1e-3 and cfg.n == 1
    # The authors' code: a float copy, quantized probes; two roundings as the paper says.
    assert (cfg.master_weights, cfg.probe, cfg.same_rounding) == ("fp32", "quantized", False)
    u = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    levels = round_noise(u, 0, 1, cfg.perturb_bits, rounded=True).unique()
    assert len(levels) <= 16  # a 4-bit perturbation grid
