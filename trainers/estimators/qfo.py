"""Quantized first-order fine-tuning: the QuZO paper's first-order baseline.

Backprop through the STE (one forward, one backward), then an SGD step in low precision;
no fp32 master copy, no optimizer state:

    g8    = Q_SR(g)                   grad_bits INT grid, per-tensor abs-max scale (the authors' 8)
    theta <- Q_SR(theta - lr * g8)    stochastically rounded onto the weight grid

Weights are snapped onto their grid once with frozen scales, as QuZO does, so the parameter
tensor itself holds the on-grid value. Both roundings are unbiased, so E[update] = -lr g.
Gradients are rounded for every trainable tensor ("low-precision gradients"); tensors with
no weight quantizer (biases, norms) have no grid, so their update stays float.

This is the paper's baseline, not STE + Adam: that keeps fp32 masters and Adam state.
Frozen weights (a LoRA model's base) are neither snapped nor updated: bit for bit unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainers.estimators.base import (
    Batch,
    Estimator,
    LossFn,
    StepResult,
    draw_seed,
    first_order_loss,
    trainable_parameters,
)
from trainers.estimators.seeded import tensor_generator
from trainers.quant import functional as qf
from trainers.quant.layers import quantized_layers, snap_to_grid


@dataclass(frozen=True)
class QFOConfig:
    # In place, no optimizer: the lr is the estimator's own. Its default was measured on the
    # MLP (digits, a 30-feature table; 2/4/8 bits), 10x below where training stalled
    # (README, "Default learning rates").
    lr: float = 0.1
    grad_bits: int | None = 8  # None: float gradients (ablation)

    def __post_init__(self) -> None:
        if self.grad_bits is not None and not 2 <= self.grad_bits <= 8:
            raise ValueError(f"qfo: grad_bits must be in 2..8 or null (got {self.grad_bits})")


# Stochastic rounding needs several tensor-sized temporaries (FP8's about 9); on a model
# dominated by one tensor they would set the step's peak memory, so rounding runs on at most
# 1/_CHUNKS of the model at a time (in a large model every tensor is smaller: one piece each).
_CHUNKS = 16
Rounding = Callable[[Tensor, torch.Generator], Tensor]


def absmax_rounding(g: Tensor, bits: int) -> Rounding:
    """Q_SR onto the ``bits`` symmetric INT grid whose scale maps max|g| to Q_p (the same grid
    as QuZO's perturbation), for the pieces of ``g``."""
    qmin, qmax = qf.int_range(bits)
    low, high = torch.aminmax(g)
    scale = (torch.maximum(-low, high) / qmax).clamp(min=1e-12)
    return lambda part, generator: qf.stochastic_round_int(
        part / scale, qmin, qmax, generator
    ).mul_(scale)


def round_in_chunks_(t: Tensor, rounding: Rounding, generator: torch.Generator, chunk: int) -> None:
    """``t <- rounding(t)`` in place, ``chunk`` elements at a time."""
    pieces = t.view(-1).split(chunk) if t.is_contiguous() and chunk < t.numel() else (t,)
    for part in pieces:
        part.copy_(rounding(part, generator))


class QFO(Estimator):
    name = "qfo"
    config_class = QFOConfig
    updates_in_place = True

    def prepare(self, model: nn.Module) -> None:
        if not quantized_layers(model):
            raise ValueError(
                "qfo needs a quantized model (quant.kind int, lsq or fp8_*), got a float one"
            )
        snap_to_grid(model)

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        loss = first_order_loss(model, loss_fn, batch)
        self._update(model)
        return self.result(loss, forwards=1, backwards=1)

    @torch.no_grad()
    def _update(self, model: nn.Module) -> None:
        """theta <- Q_SR(theta - lr Q_SR(g)) in two passes: the first drops each gradient once
        applied, so the weight rounding runs with no gradient alive."""
        params = [p for _, p in trainable_parameters(model)]
        grad_seed, weight_seed = draw_seed(self.generator), draw_seed(self.generator)
        chunk = -(-sum(p.numel() for p in params) // _CHUNKS)
        bits = self.config.grad_bits
        for k, p in enumerate(params):
            if p.grad is not None:
                if bits is not None:
                    round_in_chunks_(
                        p.grad,
                        absmax_rounding(p.grad, bits),
                        tensor_generator(grad_seed, k, p.device),
                        chunk,
                    )
                p.sub_(p.grad, alpha=self.lr)
                p.grad = None
        quantizers = {
            id(layer.weight): layer.weight_quantizer for _, layer in quantized_layers(model)
        }
        for k, p in enumerate(params):
            if id(p) in quantizers:
                q = quantizers[id(p)]
                # A per-channel scale needs whole rows: that tensor is rounded in one piece.
                round_in_chunks_(
                    p,
                    q.round_stochastic,
                    tensor_generator(weight_seed, k, p.device),
                    chunk if q.scale(p).numel() == 1 else p.numel(),
                )
