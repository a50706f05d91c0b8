"""Estimator math and the contract every registered estimator keeps."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.estimators import ESTIMATORS, CostModel, build_estimator, estimator_config
from trainers.estimators.quzo import rounded_noise
from trainers.metering import track_peak_memory
from trainers.quant import QuantSpec, quantize_model, quantized_layers

COST = CostModel(forward_flops=10.0, backward_flops=20.0)


class Quadratic(nn.Module):
    """L(theta) = 0.5 theta^T A theta - b^T theta, exposed through the (output, target) loss API."""

    def __init__(self, d: int = 12, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        m = torch.randn(d, d, generator=g)
        self.register_buffer("A", m @ m.T / d + torch.eye(d))
        self.register_buffer("b", torch.randn(d, generator=g))
        self.theta = nn.Parameter(torch.randn(d, generator=g))

    def forward(self, x):
        return 0.5 * self.theta @ self.A @ self.theta - self.b @ self.theta + 0 * x.sum()

    def true_grad(self):
        return (self.A @ self.theta - self.b).detach()


def quad_loss(out, target):
    return out


def quad_batch():
    return torch.zeros(1), torch.zeros(1)


def mlp(bits=2, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    return quantize_model(model, QuantSpec(kind="int", bits=bits))


def mlp_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)


def estimates(name, options, model, batch, loss_fn, count, seed=0):
    est = build_estimator(name, options, COST, seed, lr=0.0)
    out = []
    for _ in range(count):
        est.step(model, loss_fn, batch, progress=0.5)
        out.append(torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
    return torch.stack(out)


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


# --- contract, every registered estimator ------------------------------------------------


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_same_seed_gives_the_same_step(name):
    results = []
    for _ in range(2):
        model, batch = mlp(), mlp_batch()
        est = build_estimator(name, {}, COST, seed=7, lr=0.01)
        est.prepare(model)
        opt = None if est.updates_in_place else torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(3):
            est.step(model, F.cross_entropy, batch, 0.5)
            if opt:
                opt.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("n", [1, 3])
def test_cost_accounting_matches_the_table(name, n):
    expected = {  # (forwards, backwards) per step, docs/estimators.md
        "ste": (1, 1),
        "nspsa": (2 * n, 0),
        "fogzo": (1 + 2 * n, 1),
        "mezo": (2 * n, 0),
        "quzo": (2 * n, 0),
        "qfo": (1, 1),
    }[name]
    options = {} if name in ("ste", "qfo") else {"n": n}
    model = mlp()
    est = build_estimator(name, options, COST, 0, lr=0.0)
    est.prepare(model)
    result = est.step(model, F.cross_entropy, mlp_batch(), 0.5)
    assert (result.forwards, result.backwards) == expected
    assert result.flops == expected[0] * COST.forward_flops + expected[1] * COST.backward_flops


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="valid: ste, nspsa, fogzo, mezo, quzo, qfo"):
        build_estimator("adam", {}, COST, 0, 0.1)
    with pytest.raises(ValueError, match="unknown option.*betta"):
        estimator_config("fogzo", {"betta": 0.5})


# --- n-SPSA ---------------------------------------------------------------------------------


def test_nspsa_average_estimate_converges_to_the_true_gradient():
    model = Quadratic()
    g = estimates(
        "nspsa", {"n": 500, "eps": 1e-3, "eps_mode": "fixed"}, model, quad_batch(), quad_loss, 8
    )
    assert cosine(g.mean(0), model.true_grad()) > 0.99


def test_nspsa_single_direction_is_noisy_but_unbiased():
    model = Quadratic()
    g = estimates(
        "nspsa", {"n": 1, "eps": 1e-3, "eps_mode": "fixed"}, model, quad_batch(), quad_loss, 4000
    )
    assert cosine(g[0], model.true_grad()) < 0.9  # one direction alone is far off...
    assert cosine(g.mean(0), model.true_grad()) > 0.99  # ...the average is not


def test_nspsa_batched_matches_python_loop():
    from trainers.estimators.perturb import (
        _loop_losses,
        perturbation_plan,
        perturbed_losses,
        sample_directions,
    )

    model, batch = mlp(), mlp_batch()
    plan = perturbation_plan(model, "alpha", 1e-3)
    deltas = [
        item.eps * d
        for item, d in zip(plan, sample_directions(plan, 6, torch.Generator().manual_seed(0)))
    ]
    batched = perturbed_losses(model, F.cross_entropy, batch, plan, deltas)
    looped = _loop_losses(
        model,
        F.cross_entropy,
        batch,
        [i.name for i in plan],
        {i.name: i.param.detach() for i in plan},
        deltas,
    )
    assert torch.allclose(batched, looped, atol=1e-5)


# --- FOGZO ----------------------------------------------------------------------------------


def test_fogzo_beta_one_follows_ste_direction_exactly():
    model = Quadratic()  # float model: the STE gradient is the true gradient
    g = estimates(
        "fogzo",
        {"beta_start": 1.0, "beta_min": 1.0, "eps_mode": "fixed", "zo_params": "all"},
        model,
        quad_batch(),
        quad_loss,
        1,
    )
    assert torch.allclose(g[0], model.true_grad(), rtol=1e-3, atol=1e-4)


def test_fogzo_beta_one_aligns_with_ste_on_a_quantized_net():
    model, batch = mlp(bits=4), mlp_batch()
    ste = estimates("ste", {}, model, batch, F.cross_entropy, 1)[0]
    fog = estimates(
        "fogzo", {"beta_start": 1.0, "beta_min": 1.0}, model, batch, F.cross_entropy, 1
    )[0]
    assert abs(cosine(ste, fog)) > 0.999


def test_fogzo_beta_zero_matches_nspsa_statistically():
    model = Quadratic()
    opts = {"n": 1, "eps_mode": "fixed"}
    fog = estimates(
        "fogzo",
        {**opts, "beta_start": 0.0, "beta_min": 0.0, "zo_params": "all"},
        model,
        quad_batch(),
        quad_loss,
        3000,
    )
    spsa = estimates("nspsa", opts, model, quad_batch(), quad_loss, 3000, seed=1)
    truth = model.true_grad()
    assert cosine(fog.mean(0), truth) > 0.98 and cosine(spsa.mean(0), truth) > 0.98
    mse_fog = ((fog - truth) ** 2).sum(1).mean()
    mse_spsa = ((spsa - truth) ** 2).sum(1).mean()
    assert 0.85 < (mse_fog / mse_spsa).item() < 1.15  # same variance: same estimator


def test_fogzo_guidance_reduces_variance_versus_nspsa():
    model = Quadratic(d=40)
    opts = {"n": 1, "eps_mode": "fixed"}
    fog = estimates(
        "fogzo",
        {**opts, "beta_start": 0.9, "beta_min": 0.9, "zo_params": "all"},
        model,
        quad_batch(),
        quad_loss,
        500,
    )
    spsa = estimates("nspsa", opts, model, quad_batch(), quad_loss, 500)
    truth = model.true_grad()
    assert ((fog - truth) ** 2).sum(1).mean() < ((spsa - truth) ** 2).sum(1).mean()


def test_fogzo_beta_schedule_and_warm_start():
    cfg = estimator_config("fogzo", {"beta_start": 1.0, "beta_min": 0.9, "warm_start": 0.5})
    assert (
        cfg.beta(0.0) == 1.0
        and abs(cfg.beta(1.0) - 0.9) < 1e-12
        and abs(cfg.beta(0.5) - 0.95) < 1e-12
    )
    est = build_estimator("fogzo", {"warm_start": 0.5}, COST, 0, 0.0)
    assert est.step(mlp(), F.cross_entropy, mlp_batch(), 0.2).forwards == 1  # plain STE
    assert est.step(mlp(), F.cross_entropy, mlp_batch(), 0.7).forwards == 3


# --- MeZO -----------------------------------------------------------------------------------


def test_mezo_restores_parameters_with_zero_lr():
    model, batch = mlp(bits=8), mlp_batch()
    before = copy.deepcopy(model.state_dict())
    est = build_estimator("mezo", {"n": 3}, COST, 0, lr=0.0)
    for _ in range(5):
        est.step(model, F.cross_entropy, batch, 0.5)
    for name, value in model.state_dict().items():
        assert torch.allclose(value, before[name], atol=1e-6), name


def test_mezo_update_is_lr_times_projected_gradient_times_z():
    model = Quadratic()
    theta0 = model.theta.detach().clone()
    est = build_estimator("mezo", {"eps": 1e-3}, COST, 0, lr=0.1)
    est.step(model, quad_loss, quad_batch(), 0.5)
    step = model.theta.detach() - theta0
    # The update is a multiple of one direction z: projected gradient (grad . z) times -lr.
    z = step / step.norm()
    proj = model.true_grad() @ z  # ~ at theta0 (quadratic: exact up to the tiny step)
    assert abs(cosine(step, -proj * z)) > 0.999


def test_mezo_memory_stays_near_inference():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    quantize_model(model, QuantSpec(kind="int", bits=8))
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    cpu = torch.device("cpu")

    def inference():
        with torch.no_grad():
            F.cross_entropy(model(x), y)

    _, infer_peak = track_peak_memory(inference, [model], cpu)
    mezo = build_estimator("mezo", {}, COST, 0, lr=1e-4)
    _, mezo_peak = track_peak_memory(
        lambda: mezo.step(model, F.cross_entropy, (x, y), 0.5), [model], cpu
    )
    ste = build_estimator("ste", {}, COST, 0, lr=0.0)
    _, ste_peak = track_peak_memory(
        lambda: ste.step(model, F.cross_entropy, (x, y), 0.5), [model], cpu
    )
    assert mezo_peak <= 1.15 * infer_peak, (mezo_peak, infer_peak)
    assert ste_peak > 1.25 * infer_peak, (ste_peak, infer_peak)  # the tracker does see gradients


# --- QuZO -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,bits", [("int", 8), ("int", 4), ("fp8_e4m3", 8), ("fp8_e5m2", 8)])
@pytest.mark.parametrize("probe", ["quantized", "float"])
def test_quzo_weights_stay_exactly_on_grid(kind, bits, probe):
    """With ``master_weights: none`` (no float copy); fp32 is tests/trainers/test_zo_storage.py."""
    torch.manual_seed(0)
    model = quantize_model(
        nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)),
        QuantSpec(kind=kind, bits=bits),
    )
    options = {"n": 2, "master_weights": "none", "probe": probe}
    est = build_estimator("quzo", options, COST, 0, lr=0.5)
    est.prepare(model)
    start = [layer.weight.detach().clone() for _, layer in quantized_layers(model)]
    for _ in range(20):
        est.step(model, F.cross_entropy, mlp_batch(), 0.5)
    for (_, layer), w0 in zip(quantized_layers(model), start):
        assert torch.equal(
            layer.weight_quantizer.round_nearest(layer.weight), layer.weight.detach()
        )
        assert not torch.equal(layer.weight.detach(), w0), "the update must move some weights"


def test_quzo_two_roundings_are_independent_and_unbiased():
    p = nn.Parameter(torch.zeros(200_000))
    quantized = {id(p)}
    u = rounded_noise(11, 0, None, quantized)(0, p)
    u1 = rounded_noise(11, 1, 4, quantized)(0, p)
    u2 = rounded_noise(11, 2, 4, quantized)(0, p)
    again = rounded_noise(11, 1, 4, quantized)(0, p)
    assert torch.equal(u1, again), "a rounding is replayable from its seed"
    assert (u1 != u2).float().mean() > 0.2, "different rounding seeds round differently"
    e1, e2 = u1 - u, u2 - u
    assert abs(e1.mean()) < 0.01 and abs(e2.mean()) < 0.01  # unbiased
    corr = torch.corrcoef(torch.stack([e1, e2]))[0, 1]
    assert abs(corr) < 0.02, f"rounding errors must be independent, corr={corr:.3f}"


@pytest.mark.parametrize("same_rounding", [False, True])
def test_quzo_with_zero_lr_returns_the_weights_exactly(same_rounding):
    """The last direction's restore is folded into the update pass: with lr = 0 that pass
    must land on theta again, bit for bit for the on-grid weights (``master_weights: none``)."""
    torch.manual_seed(0)
    model = quantize_model(
        nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)),
        QuantSpec(kind="int", bits=4),
    )
    options = {"n": 2, "master_weights": "none", "same_rounding": same_rounding}
    est = build_estimator("quzo", options, COST, 0, lr=0.0)
    est.prepare(model)
    before = copy.deepcopy(model.state_dict())
    for _ in range(5):
        est.step(model, F.cross_entropy, mlp_batch(), 0.5)
    for name, layer in quantized_layers(model):
        assert torch.equal(layer.weight.detach(), before[f"{name}.weight"]), name
    for name, value in model.state_dict().items():
        assert torch.allclose(value, before[name], atol=1e-6), name


@pytest.mark.parametrize("name", ["mezo", "quzo"])
def test_seeded_estimators_regenerate_the_noise_three_times_per_step(name, monkeypatch):
    """+eps, -2eps, then restore and update in one pass: 3 Gaussian draws per tensor (n = 1)."""
    model, batch = mlp(bits=8), mlp_batch()
    est = build_estimator(name, {}, COST, 0, lr=1e-3)
    est.prepare(model)
    draws = []
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: draws.append(a[0]) or real_randn(*a, **k))
    est.step(model, F.cross_entropy, batch, 0.5)
    tensors = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    assert sorted(map(tuple, draws)) == sorted(tensors * 3)


def test_quzo_refuses_a_float_model():
    model = nn.Sequential(nn.Linear(4, 2))
    est = build_estimator("quzo", {}, COST, 0, lr=0.1)
    with pytest.raises(ValueError, match="quantized model"):
        est.prepare(model)
