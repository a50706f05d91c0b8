"""Gradient-quality probe: the statistics are right, FOGZO sits where it should, and a probe
never changes the trial it measures."""

import copy
import math

import pytest
import torch
from torch import nn

from trainers import ConfigError, TrialConfig, run_trial
from trainers.data import load_dataset
from trainers.diagnostics import FIGURES, estimate_stats, probe
from trainers.estimators import CostModel, build_estimator
from trainers.estimators.perturb import perturbation_plan, sample_directions, zo_gradient
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model

COST = CostModel(forward_flops=1.0, backward_flops=2.0)


def smooth_problem(d_in: int = 6, hidden: int = 5, rows: int = 64):
    """A smooth float model (tanh MLP, float64): STE is the exact gradient here."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, 1)).double()
    x = torch.randn(rows, d_in, dtype=torch.float64)
    y = torch.randn(rows, 1, dtype=torch.float64)
    return model, (lambda out, target: ((out - target) ** 2).mean()), (x, y)


def digits_problem(bits: int = 2, hidden: int = 4, rows: int = 256):
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=hidden)
    quantize_model(model, QuantSpec(kind="int", bits=bits))
    return model, nn.functional.cross_entropy, (data.train_x[:rows], data.train_y[:rows])


def run_probe(estimator, model, loss_fn, batch, repeats, reference_n, progress=0.5):
    settings = {
        "every": 1,
        "batch_size": len(batch[0]),
        "repeats": repeats,
        "reference_n": reference_n,
    }
    return probe(model, estimator, loss_fn, batch, progress, settings, seed=0, step=7)


def test_nspsa_mean_converges_to_reference_and_ste_is_exact_without_quantization():
    model, loss_fn, batch = smooth_problem()
    nspsa = build_estimator("nspsa", {"n": 8, "eps": 1e-4, "eps_mode": "fixed"}, COST, 1, 0.1)
    few = run_probe(nspsa, model, loss_fn, batch, repeats=3, reference_n=8000)
    many = run_probe(nspsa, model, loss_fn, batch, repeats=150, reference_n=8000)
    assert set(many) == set(FIGURES) and all(isinstance(v, float) for v in many.values())
    assert many["ref_noise"] < 0.1
    assert many["est_cosine"] > 0.95 and many["est_cosine"] > few["est_cosine"]
    assert many["est_rel_bias"] < few["est_rel_bias"]
    # No quantization, tiny eps: the smoothed gradient is the gradient, which STE computes.
    assert (
        many["ste_cosine"] > 0.995 and many["ste_variance"] == 0.0 and math.isinf(many["ste_snr"])
    )
    assert many["probe_forwards"] == 2 * 8000 + 1 + 150 * 16 and many["probe_backwards"] == 1


@pytest.mark.parametrize("kind, kurtosis", [("gaussian", 3.0), ("uniform", 9 / 5)])
def test_measured_variance_matches_the_analytic_value(kind, kurtosis):
    """G = (1/n) sum_i (g.u_i) u_i with iid unit-variance u of kurtosis k:
    E[(g.u)^2 ||u||^2] = sum_j g_j^2 (E u_j^4 + d - 1) = (d - 1 + k) ||g||^2, so
    trace Cov(G) = ((d - 1 + k) - 1) ||g||^2 / n = (d - 2 + k) ||g||^2 / n
    ((d + 1) ||g||^2 / n for Gaussian, (d - 1/5) ||g||^2 / n for uniform)."""
    d, n, repeats = 40, 8, 300
    torch.manual_seed(1)
    model = nn.Linear(d, 1, bias=False).double()
    x = torch.randn(16, d, dtype=torch.float64)
    loss_fn = lambda out, target: out.mean()  # noqa: E731 - linear in the weights: the ZO estimate is exact
    batch = (x, torch.zeros(16, 1, dtype=torch.float64))
    g = x.mean(0)
    plan = perturbation_plan(model, "fixed", 1e-2)
    for item in plan:
        item.noise_kind = kind
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack(
        [
            zo_gradient(
                model, loss_fn, batch, plan, n, lambda k: sample_directions(plan, k, gen), n
            )[0][0].reshape(-1)
            for _ in range(repeats)
        ]
    )
    stats = estimate_stats(draws, g)
    expected = (d - 2 + kurtosis) * float(g @ g) / n
    assert stats["variance"] == pytest.approx(expected, rel=0.12)
    assert stats["snr"] == pytest.approx(float(g @ g) / expected, rel=0.2)
    assert stats["cosine"] > 0.9


def test_fogzo_between_ste_and_nspsa():
    model, loss_fn, batch = digits_problem()
    common = {"n": 8, "eps_mode": "alpha"}
    ste = build_estimator("ste", {}, COST, 1, 0.1)
    fogzo1 = build_estimator(
        "fogzo", {**common, "beta_start": 1.0, "beta_min": 1.0, "zo_params": "all"}, COST, 1, 0.1
    )
    fogzo0 = build_estimator(
        "fogzo", {**common, "beta_start": 0.0, "beta_min": 0.0, "zo_params": "all"}, COST, 1, 0.1
    )
    nspsa = build_estimator("nspsa", common, COST, 1, 0.1)
    ref_n, repeats = 1000, 60
    s = run_probe(ste, model, loss_fn, batch, 2, ref_n)
    f1 = run_probe(fogzo1, model, loss_fn, batch, 8, ref_n)
    f0 = run_probe(fogzo0, model, loss_fn, batch, repeats, ref_n)
    ns = run_probe(nspsa, model, loss_fn, batch, repeats, ref_n)
    assert s["est_cosine"] == pytest.approx(s["ste_cosine"], abs=1e-9) and s["est_variance"] == 0.0
    # beta = 1: every draw points along STE, so the mean does too.
    assert f1["est_cosine"] == pytest.approx(f1["ste_cosine"], abs=1e-6)
    # beta = 0 is n-SPSA: same variance and cosine, up to sampling error.
    assert f0["est_variance"] == pytest.approx(ns["est_variance"], rel=0.25)
    assert f0["est_cosine"] == pytest.approx(ns["est_cosine"], abs=0.12)


def test_in_place_estimators_are_measured_on_a_copy():
    model, loss_fn, batch = digits_problem(bits=4)
    for name in ("mezo", "quzo"):
        est = build_estimator(name, {}, COST, 1, 1e-3)
        est.prepare(model)
        snapped = copy.deepcopy(model.state_dict())
        gen_state = est.generator.get_state()
        out = run_probe(est, model, loss_fn, batch, 16, 500)
        assert torch.equal(est.generator.get_state(), gen_state)
        assert all(torch.equal(v, snapped[k]) for k, v in model.state_dict().items())
        assert out["est_variance"] > 0 and math.isfinite(out["est_cosine"])


def strip(reports):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "diagnostics")} for r in reports]


@pytest.mark.parametrize("estimator", ["fogzo", "mezo"])
def test_probes_leave_the_trial_bit_for_bit_identical(tmp_path, estimator):
    base = {"estimator": estimator, "bits": 2, "steps": 24, "num_evals": 3, "lr": 0.01}
    plain, probed = [], []
    run_trial({**base, "save_model_to": str(tmp_path / "plain.pt")}, plain.append)
    run_trial(
        {
            **base,
            "save_model_to": str(tmp_path / "probed.pt"),
            "diagnostics": {"every": 2, "repeats": 3, "batch_size": 64, "reference_n": 64},
        },
        probed.append,
    )
    assert strip(plain) == strip(probed)
    assert [("diagnostics" in r) for r in probed] == [True, False, True, False]
    assert all(set(r["diagnostics"]) == set(FIGURES) for r in probed if "diagnostics" in r)
    a, b = torch.load(tmp_path / "plain.pt"), torch.load(tmp_path / "probed.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"evry": 2}, "unknown key(s) evry"),
        ({"repeats": 1}, "repeats must be an integer >= 2"),
        ({"batch_size": "x"}, "batch_size must be an integer"),
        ([1], "diagnostics must be a mapping"),
    ],
)
def test_bad_diagnostics_settings_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=None) as err:
        TrialConfig.from_dict({"diagnostics": bad})
    assert message in str(err.value) and "\n" not in str(err.value)
    assert TrialConfig.from_dict({"diagnostics": {}}).diagnostics_settings()["repeats"] == 16
