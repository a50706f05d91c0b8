"""Tests for trainers.models: shapes, parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainers.models import MODELS, build_model


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", [(1, 8, 8), (32,)])
def test_mlp_output_shape(shape: tuple[int, ...]) -> None:
    model = build_model("mlp", shape, 10)
    assert model(torch.randn(5, *shape)).shape == (5, 10)


def test_mlp_parameter_count_matches_paper() -> None:
    model = build_model("mlp", (1, 8, 8), 10)
    assert _n_params(model) == 64 * 10 + 10 + 10 * 10 + 10
    no_bias = build_model("mlp", (64,), 10, bias=False)
    assert _n_params(no_bias) == 64 * 10 + 10 * 10
    assert _n_params(build_model("mlp", (64,), 3, hidden=7)) == 64 * 7 + 7 + 7 * 3 + 3


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 12, 10)])
def test_cnn_output_shape(shape: tuple[int, ...]) -> None:
    model = build_model("cnn", shape, 10)
    assert model(torch.randn(4, *shape)).shape == (4, 10)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear[-1].in_features == 512


def test_cnn_width_and_no_batchnorm() -> None:
    model = build_model("cnn", (1, 8, 8), 10, width=8)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    layer_types = {type(m) for m in model.modules()} - {nn.Sequential}
    allowed = {nn.Linear, nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten}
    assert layer_types <= allowed
    with pytest.raises(ValueError, match="C, H, W"):
        build_model("cnn", (32,), 10)


def test_init_uses_global_rng() -> None:
    torch.manual_seed(0)
    a = build_model("mlp", (8,), 3)
    torch.manual_seed(0)
    b = build_model("mlp", (8,), 3)
    torch.manual_seed(1)
    c = build_model("mlp", (8,), 3)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_models_work_under_vmap() -> None:
    """Zeroth-order estimators evaluate stacked perturbed parameters with vmap."""
    model = build_model("cnn", (1, 8, 8), 10, width=4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v + 0.01]) for k, v in params.items()}
    x = torch.randn(3, 1, 8, 8)
    out = torch.func.vmap(lambda p: torch.func.functional_call(model, p, (x,)))(stacked)
    assert out.shape == (2, 3, 10)
    torch.testing.assert_close(out[0], model(x))


def test_unknown_model_and_options() -> None:
    with pytest.raises(ValueError) as exc:
        build_model("resnet", (1, 8, 8), 10)
    for name in MODELS:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="depth") as exc:
        build_model("mlp", (1, 8, 8), 10, depth=3)
    assert "hidden" in str(exc.value)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", (1, 8, 8), 10, hidden=0)
    with pytest.raises(ValueError, match="bias"):
        build_model("mlp", (1, 8, 8), 10, bias="yes")
