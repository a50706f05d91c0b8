"""Shared machinery of the zeroth-order estimators: per-tensor smoothing scales, direction
sampling, and batched evaluation of many perturbed losses with ``torch.func.vmap``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from trainers.estimators.base import Batch, LossFn, trainable_parameters
from trainers.quant import functional as qf
from trainers.quant.layers import quantized_layers

EPS_MODES = ("alpha", "fixed")


@dataclass
class Perturbable:
    """One trainable tensor: its smoothing scale ``eps`` (broadcastable) and noise shape."""

    name: str
    param: nn.Parameter
    eps: Tensor
    noise_kind: str


def perturbation_plan(model: nn.Module, eps_mode: str, eps: float) -> list[Perturbable]:
    """Per-tensor perturbation scales.

    ``alpha``: a quantized weight is perturbed by ``alpha_l * eps_bar * u`` with ``alpha_l``
    its grid step and ``u`` unit-variance noise matched to the STE surrogate (the table in
    estimators.md); float tensors (biases, LSQ steps) use the mean of those scales.
    ``fixed``: every tensor uses ``eps`` with the same noise shapes.
    """
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode {eps_mode!r} is not one of {', '.join(EPS_MODES)}")
    quantized = {f"{name}.weight" if name else "weight": layer for name, layer in quantized_layers(model)}
    params = trainable_parameters(model)
    scales: dict[str, Tensor] = {}
    for name, p in params:
        layer = quantized.get(name)
        if layer is not None and eps_mode == "alpha":
            quantizer = layer.weight_quantizer
            scales[name] = quantizer.step_size(p.detach()) * quantizer.noise_std_per_step
    # Float tensors (biases, LSQ steps) join at the quantized tensors' mean scale: a much
    # smaller eps would divide every other tensor's loss change by it and blow up variance.
    total = sum(p.numel() for name, p in params if name in scales)
    float_eps = (sum(float(s.expand_as(dict(params)[n]).sum()) for n, s in scales.items()) / total
                 if total else eps)
    plan = []
    for name, p in params:
        layer = quantized.get(name)
        kind = layer.weight_quantizer.noise_kind if layer is not None else "gaussian"
        scale = scales.get(name, torch.tensor(float_eps, dtype=p.dtype, device=p.device))
        plan.append(Perturbable(name, p, scale, kind))
    return plan


def sample_directions(plan: list[Perturbable], n: int, generator: torch.Generator) -> list[Tensor]:
    """``n`` unit-variance directions per tensor, shape ``[n, *param.shape]``."""
    return [
        qf.sample_unit_noise(item.noise_kind, (n, *item.param.shape), generator, item.param.dtype, item.param.device)
        for item in plan
    ]


def _loop_losses(model, loss_fn, batch, names, base, deltas) -> Tensor:
    inputs, targets = batch
    out = []
    for j in range(deltas[0].shape[0]):
        params = {name: base[name] + delta[j] for name, delta in zip(names, deltas)}
        out.append(loss_fn(functional_call(model, params, (inputs,)), targets))
    return torch.stack(out)


_VMAP_UNSUPPORTED: set[type] = set()


def perturbed_losses(model: nn.Module, loss_fn: LossFn, batch: Batch, plan: list[Perturbable],
                     deltas: list[Tensor]) -> Tensor:
    """Loss at ``theta + delta_j`` for every row j of ``deltas`` (each ``[m, *shape]``).

    All m evaluations are batched with ``vmap`` over ``functional_call`` (one batched
    matmul per layer instead of m Python-level forwards).
    Models vmap cannot handle fall back to a Python loop, with a warning, once per class.
    """
    names = [item.name for item in plan]
    base = {item.name: item.param.detach() for item in plan}
    inputs, targets = batch
    with torch.no_grad():
        if type(model) not in _VMAP_UNSUPPORTED:
            def one(*delta: Tensor) -> Tensor:
                params = {name: base[name] + d for name, d in zip(names, delta)}
                return loss_fn(functional_call(model, params, (inputs,)), targets)

            try:
                return vmap(one)(*deltas)
            except (RuntimeError, NotImplementedError) as err:  # e.g. in-place BatchNorm stats
                _VMAP_UNSUPPORTED.add(type(model))
                warnings.warn(f"vmap failed for {type(model).__name__} ({err}); evaluating directions in a loop",
                              stacklevel=2)
        return _loop_losses(model, loss_fn, batch, names, base, deltas)


def symmetric_differences(model: nn.Module, loss_fn: LossFn, batch: Batch, plan: list[Perturbable],
                          directions: list[Tensor]) -> tuple[Tensor, Tensor]:
    """For each direction v_i: ``c_i = [L(theta + eps v_i) - L(theta - eps v_i)] / 2``, and the
    2n losses. Dividing ``c_i v_i`` by ``eps`` per tensor gives the estimate."""
    n = directions[0].shape[0]
    deltas = [torch.cat([item.eps * d, -item.eps * d]) for item, d in zip(plan, directions)]
    losses = perturbed_losses(model, loss_fn, batch, plan, deltas)
    return (losses[:n] - losses[n:]) / 2, losses


def zo_gradient(model: nn.Module, loss_fn: LossFn, batch: Batch, plan: list[Perturbable], n: int,
                draw: Callable[[int], list[Tensor]], chunk: int) -> tuple[list[Tensor], float]:
    """``G = (1/n) sum_i c_i v_i / eps`` per tensor, over n directions drawn ``chunk`` at a time.

    Chunking bounds memory at ``2 * chunk`` model copies however large n is (n-SPSA is run
    with n up to d); within a chunk the 2k forwards are one vmapped call. Returns the
    per-tensor estimates and the mean of the 2n perturbed losses.
    """
    sums = [torch.zeros_like(item.param) for item in plan]
    loss_total = 0.0
    for start in range(0, n, chunk):
        directions = draw(min(chunk, n - start))
        c, losses = symmetric_differences(model, loss_fn, batch, plan, directions)
        loss_total += float(losses.sum())
        for acc, d in zip(sums, directions):
            acc += (c.view(-1, *([1] * (d.dim() - 1))).to(d.dtype) * d).sum(0)
    return [acc / n / item.eps for acc, item in zip(sums, plan)], loss_total / (2 * n)
