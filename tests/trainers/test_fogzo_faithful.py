"""Faithful FOGZO settings (issue 15): the ZO mix covers low-bit weights only, beta_min: auto
scales with d_zo, and every zeroth-order forward runs in eval mode."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.estimators import CostModel, build_estimator, estimator_config, perturb
from trainers.quant import QuantSpec, quantize_model

COST = CostModel(forward_flops=10.0, backward_flops=20.0)  # small: the vmap path
LOOP_COST = CostModel(forward_flops=1e9, backward_flops=2e9)  # large: the loop path
MIDDLE = "2.weight"  # the only 2-bit tensor of ``bn_net``
ZO = ("nspsa", "fogzo", "mezo", "quzo")


def bn_net(
    kind: str = "int", hidden: int = 6, dropout: float = 0.0, smooth: bool = False, seed: int = 0
) -> nn.Sequential:
    """8-bit first layer -> ReLU -> 2-bit middle layer -> BatchNorm -> [dropout] -> 8-bit last.

    ``smooth`` skips the middle layer's rounding, so in eval mode the MSE loss is exactly
    quadratic in the middle weight: a symmetric difference then measures v . grad exactly.
    """
    torch.manual_seed(seed)
    layers = [nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden)]
    layers += [nn.Dropout(dropout)] if dropout else []
    layers.append(nn.Linear(hidden, 3))
    model = quantize_model(nn.Sequential(*layers), QuantSpec(kind=kind, bits=2, first_last="8bit"))
    model[2].bypass_weight_quant = smooth
    return model.train()


def batch(seed: int = 0, rows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 5, generator=g), torch.randn(rows, 3, generator=g)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def ste_grads(model: nn.Module, data) -> dict[str, torch.Tensor]:
    twin = copy.deepcopy(model)
    build_estimator("ste", {}, COST, 0, 0.0).step(twin, F.mse_loss, data, 0.5)
    return grads(twin)


def flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in d.values()])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


# --- zo_params: quantized ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["int", "lsq"])
@pytest.mark.parametrize("cost", [COST, LOOP_COST], ids=["vmap", "loop"])
def test_uncovered_tensors_keep_their_ste_gradient_bit_for_bit(kind, cost):
    model, data = bn_net(kind), batch()
    expected = ste_grads(model, data)
    est = build_estimator("fogzo", {"n": 3, "beta_start": 0.5, "beta_min": 0.5}, cost, 0, 0.0)
    est.prepare(model)
    est.step(model, F.mse_loss, data, 0.5)
    got = grads(model)
    assert set(got) == set(expected) and len(got) >= 8  # biases, BN affine, 8-bit ends (LSQ steps)
    for name in got:
        if name == MIDDLE:
            assert not torch.equal(got[name], expected[name]), "the mix must reach the 2-bit weight"
        else:
            assert torch.equal(got[name], expected[name]), name
    assert est.describe()["d_zo"] == model[2].weight.numel()


def test_covered_estimate_is_beta_ghat_ghat_plus_one_minus_beta_in_expectation():
    """E[G] = (beta g_hat g_hat^T + (1 - beta) I) grad, with g_hat from the train-mode STE pass
    and grad the gradient of the eval-mode loss its perturbed forwards measure (after the STE
    pass moved the BatchNorm statistics once)."""
    beta, n, repeats = 0.5, 400, 10
    model, data = bn_net(smooth=True), batch()
    start = copy.deepcopy(model.state_dict())
    g_train = ste_grads(model, data)[MIDDLE]
    evaluated = copy.deepcopy(model)
    with torch.no_grad():
        evaluated(data[0])  # what FOGZO's STE forward does to the running statistics
    evaluated.eval()
    F.mse_loss(evaluated(data[0]), data[1]).backward()
    g_eval = evaluated[2].weight.grad
    g_hat = g_train / g_train.norm()

    est = build_estimator(
        "fogzo", {"n": n, "chunk": n, "beta_start": beta, "beta_min": beta}, COST, 0, 0.0
    )
    est.prepare(model)
    draws = []
    for _ in range(repeats):
        model.load_state_dict(start)  # every draw from the same point and the same BN statistics
        est.step(model, F.mse_loss, data, 0.5)
        draws.append(model[2].weight.grad.flatten().clone())
    draws = torch.stack(draws)
    mean = draws.mean(0)
    # E||mean - E[G]||^2 = trace Cov / repeats; allow three standard errors of the norm.
    bound = 3 * math.sqrt(float(((draws - mean) ** 2).sum()) / (repeats - 1) / repeats)

    def distance(grad: torch.Tensor) -> float:
        expected = (
            beta * (g_hat.flatten() @ grad.flatten()) * g_hat.flatten()
            + (1 - beta) * grad.flatten()
        )
        return float((mean - expected).norm())

    assert distance(g_eval) < bound
    assert distance(g_train) > bound, "a train-mode gradient must be told apart"
    assert float((mean - g_eval.flatten()).norm()) > bound, (
        "so must n-SPSA's expectation (no guide)"
    )


# --- beta_min: auto ---------------------------------------------------------------------------


def test_beta_min_auto_is_one_minus_kappa_over_d_zo():
    model = bn_net()
    d_zo = model[2].weight.numel()
    est = build_estimator("fogzo", {"beta_min": "auto"}, COST, 0, 0.0)
    assert est.describe() == {}  # nothing is known before the model
    est.prepare(model)
    out = est.describe()
    assert out["d_zo"] == d_zo and isinstance(out["d_zo"], int)
    assert out["beta_min"] == 1 - 8 / d_zo
    assert math.isclose(out["noise_to_guide"], math.sqrt(8), rel_tol=1e-12)

    est = build_estimator("fogzo", {"beta_min": "auto", "kappa": 2.5}, COST, 0, 0.0)
    est.prepare(model)
    assert est.describe()["beta_min"] == 1 - 2.5 / d_zo
    est = build_estimator("fogzo", {"beta_min": "auto", "kappa": 10 * d_zo}, COST, 0, 0.0)
    est.prepare(model)  # clamped at 0: noise only
    assert est.describe()["beta_min"] == 0.0 and math.isclose(
        est.describe()["noise_to_guide"], math.sqrt(d_zo)
    )


def test_fixed_beta_min_reports_its_ratio_and_all_covers_every_tensor():
    model = bn_net()
    est = build_estimator("fogzo", {"beta_min": 0.99}, COST, 0, 0.0)
    est.prepare(model)
    d_zo = model[2].weight.numel()
    assert est.describe()["beta_min"] == 0.99
    assert math.isclose(
        est.describe()["noise_to_guide"], math.sqrt((1 - 0.99) * d_zo), rel_tol=1e-12
    )
    every = build_estimator("fogzo", {"beta_min": "auto", "zo_params": "all"}, COST, 0, 0.0)
    every.prepare(model)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert every.describe()["d_zo"] == total > d_zo
    assert every.describe()["beta_min"] == 1 - 8 / total
    eight = build_estimator("fogzo", {"zo_max_bits": 8}, COST, 0, 0.0)
    eight.prepare(model)
    assert eight.describe()["d_zo"] == sum(model[i].weight.numel() for i in (0, 2, 4))


def test_the_step_uses_the_resolved_beta_min():
    """At the end of the schedule beta = beta_min: near 1 the estimate follows the guide,
    at 0 (kappa >= d_zo) it is n-SPSA noise."""
    model, data = bn_net(), batch()
    guide = ste_grads(model, data)[MIDDLE]
    d_zo = guide.numel()
    for kappa, along in ((1e-9, True), (d_zo, False)):
        est = build_estimator("fogzo", {"beta_min": "auto", "kappa": kappa}, COST, 0, 0.0)
        est.prepare(model)
        est.step(model, F.mse_loss, data, 1.0)
        c = abs(cosine(model[2].weight.grad, guide))
        assert (c > 0.9999) if along else (c < 0.9), (kappa, c)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_nothing_covered_is_exactly_ste(bits):
    """A sweep over bits must not fail at 8: with no weight at <= zo_max_bits a step is STE."""
    torch.manual_seed(0)
    model = quantize_model(
        nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)), QuantSpec(bits=bits)
    )
    data = batch()
    expected = ste_grads(model, data)
    est = build_estimator("fogzo", {"beta_min": "auto"}, COST, 0, 0.0)
    est.prepare(model)
    result = est.step(model, F.mse_loss, data, 0.5)
    covered = bits <= 4
    assert (result.forwards, result.backwards) == ((3, 1) if covered else (1, 1))
    assert est.describe()["d_zo"] == (30 + 18 if covered else 0)
    if not covered:
        assert est.describe() == {"d_zo": 0, "beta_min": 1.0, "noise_to_guide": 0.0}
        assert all(torch.equal(g, expected[name]) for name, g in grads(model).items())


# --- zo_params: all (the former behaviour) ----------------------------------------------------


def test_all_mixes_every_tensor_and_beta_one_is_the_ste_direction():
    model, data = bn_net(), batch()
    expected = ste_grads(model, data)
    est = build_estimator(
        "fogzo",
        {"zo_params": "all", "beta_start": 1.0, "beta_min": 1.0, "eps_mode": "fixed"},
        COST,
        0,
        0.0,
    )
    est.prepare(model)
    est.step(model, F.mse_loss, data, 0.5)
    got = grads(model)
    assert all(
        not torch.equal(got[name], expected[name]) for name in got
    )  # every tensor is re-measured
    assert abs(cosine(flat(got), flat(expected))) > 0.9999  # ...along the one STE direction


# --- eval-mode zeroth-order forwards ---------------------------------------------------------


@pytest.mark.parametrize("cost", [COST, LOOP_COST], ids=["vmap", "loop"])
@pytest.mark.parametrize("name", ZO)
def test_batchnorm_statistics_move_only_with_a_clean_forward(name, cost):
    model, data = bn_net(kind="int"), batch()
    est = build_estimator(name, {"n": 4} if name in ("nspsa", "fogzo") else {}, cost, 0, 1e-3)
    est.prepare(model)
    before, clean = buffers(model), copy.deepcopy(model)
    with torch.no_grad():
        clean(data[0])  # one ordinary train-mode forward
    moved = buffers(clean)
    assert not torch.equal(moved["3.running_mean"], before["3.running_mean"])
    est.step(model, F.mse_loss, data, 0.5)
    target = moved if name == "fogzo" else before
    for key, value in buffers(model).items():
        assert torch.equal(value, target[key]), key


@pytest.mark.parametrize("name", ZO)
def test_dropout_is_off_in_perturbed_forwards(name):
    """p = 0.9 dropout would make two runs of the same perturbations differ (train mode draws
    a fresh mask from the global RNG each forward); in eval mode they agree bit for bit."""
    model, data = bn_net(dropout=0.9), batch()
    if name == "fogzo":  # its STE forward is a training forward (dropout on): check its ZO part
        plan = perturb.perturbation_plan(model, "alpha", 1e-3, only={MIDDLE})
        direction = perturb.sample_directions(plan, 1, torch.Generator().manual_seed(0))[0]
        deltas = [plan[0].eps * direction.expand(8, *direction.shape[1:]).clone()]
        for batched in (True, False):
            out = perturb.perturbed_losses(model, F.mse_loss, data, plan, deltas, batched=batched)
            assert len(set(out.tolist())) == 1, "identical perturbations, identical losses"
        return
    losses, estimates = [], []
    for _ in range(2):
        twin = copy.deepcopy(model)
        est = build_estimator(name, {"n": 4} if name == "nspsa" else {}, COST, 0, 1e-3)
        est.prepare(twin)
        losses.append(est.step(twin, F.mse_loss, data, 0.5).loss)
        estimates.append(
            torch.cat(
                [
                    p.detach().flatten() if est.updates_in_place else p.grad.flatten()
                    for p in twin.parameters()
                ]
            )
        )
    assert losses[0] == losses[1] and torch.equal(estimates[0], estimates[1])


@pytest.mark.parametrize("name", ZO)
def test_each_module_gets_its_own_mode_back(name):
    data = batch()
    for setup in ("train", "eval", "frozen_bn"):
        model = bn_net(dropout=0.5)
        if setup == "eval":
            model.eval()
        elif setup == "frozen_bn":
            model[3].eval()
        modes = [m.training for m in model.modules()]
        est = build_estimator(name, {}, LOOP_COST if setup == "frozen_bn" else COST, 0, 1e-3)
        est.prepare(model)
        est.step(model, F.mse_loss, data, 0.5)
        assert [m.training for m in model.modules()] == modes, setup


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, field",
    [
        ({"kappa": 0}, "kappa"),
        ({"kappa": -1.0}, "kappa"),
        ({"kappa": "big"}, "kappa"),
        ({"zo_params": "weights"}, "zo_params"),
        ({"beta_min": "x"}, "beta_min"),
        ({"beta_min": 1.5}, "beta_min"),
        ({"beta_min": True}, "beta_min"),
        ({"zo_max_bits": 0}, "zo_max_bits"),
        ({"zo_max_bits": 2.5}, "zo_max_bits"),
        ({"beta_start": "auto"}, "beta_start"),
    ],
)
def test_bad_options_are_one_line_errors_naming_the_field(options, field):
    with pytest.raises(ValueError, match=field) as err:
        estimator_config("fogzo", options)
    assert "\n" not in str(err.value) and str(err.value).startswith("fogzo:")


def test_auto_schedule_needs_the_resolved_value():
    cfg = estimator_config("fogzo", {"beta_min": "auto", "beta_start": 1.0})
    assert cfg.beta(0.5, cfg.resolved_beta_min(100)) == pytest.approx(1 - 0.5 * 8 / 100)
    with pytest.raises(ValueError, match="beta_min"):
        cfg.beta(0.5)
