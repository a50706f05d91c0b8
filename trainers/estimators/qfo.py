"""Quantized first-order fine-tuning: the QuZO paper's first-order baseline.

Backprop through the STE (one forward, one backward), then an SGD step with low-precision
gradients and no optimizer state:

    g8    = Q_SR(g)                   grad_bits INT grid, per-tensor abs-max scale (the authors' 8)
    theta <- theta - lr * g8          master_weights: fp32 (default)
    theta <- Q_SR(theta - lr * g8)    master_weights: none, stochastically rounded onto the grid

``master_weights`` is the storage of the weights, as for QuZO and MeZO (docs/estimators.md,
QuZO, "Storage of θ̄"; ``seeded``): ``fp32`` keeps the float latent weights in the parameter
tensor and the layer fake-quantizes them in every forward (the default, as the QuZO authors'
code, so the arms are compared with equal storage); ``none`` snaps them onto their grid once
with frozen scales, so the parameter tensor itself holds the on-grid value, and rounds each
update onto the grid. Both roundings are unbiased, so E[update] = -lr g. Gradients are
rounded for every trainable tensor ("low-precision gradients"); tensors with no weight
quantizer (biases, norms) have no grid, so their update stays float.

This is the paper's baseline, not STE + Adam: that keeps Adam state on top.
Frozen weights (a LoRA model's base) are neither snapped nor updated: bit for bit unchanged.
"""

from __future__ import annotations

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
from trainers.estimators.seeded import (
    CHUNKS,
    MASTER_WEIGHTS,
    MasterWeights,
    Rounding,
    check_choice,
    round_in_chunks_,
    round_onto_weight_grid_,
    tensor_generator,
)
from trainers.quant import functional as qf
from trainers.quant.layers import quantized_layers, snap_to_grid


@dataclass(frozen=True)
class QFOConfig:
    # In place, no optimizer: the lr is the estimator's own. Its default was measured on the
    # MLP (digits, a 30-feature table; 2/4/8 bits), 10x below where training stalled
    # (docs/estimators.md, "Default learning rates").
    lr: float = 0.1
    grad_bits: int | None = 8  # None: float gradients (ablation)
    master_weights: MasterWeights = "fp32"  # docs/estimators.md, QuZO, "Storage of θ̄"

    def __post_init__(self) -> None:
        if self.grad_bits is not None and not 2 <= self.grad_bits <= 8:
            raise ValueError(f"qfo: grad_bits must be in 2..8 or null (got {self.grad_bits})")
        check_choice("qfo", "master_weights", self.master_weights, MASTER_WEIGHTS)


def absmax_rounding(g: Tensor, bits: int) -> Rounding:
    """Q_SR onto the ``bits`` symmetric INT grid whose scale maps max|g| to Q_p (the same grid
    as QuZO's perturbation), for the pieces of ``g``."""
    qmin, qmax = qf.int_range(bits)
    low, high = torch.aminmax(g)
    scale = (torch.maximum(-low, high) / qmax).clamp(min=1e-12)
    return lambda part, generator: qf.stochastic_round_int(
        part / scale, qmin, qmax, generator
    ).mul_(scale)


class QFO(Estimator):
    name = "qfo"
    config_class = QFOConfig
    updates_in_place = True

    def prepare(self, model: nn.Module) -> None:
        if not quantized_layers(model):
            raise ValueError(
                "qfo needs a quantized model (quant.kind int, lsq or fp8_*), got a float one"
            )
        if self.config.master_weights == "none":
            snap_to_grid(model)

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        loss = first_order_loss(model, loss_fn, batch)
        self._update(model)
        return self.result(loss, forwards=1, backwards=1)

    @torch.no_grad()
    def _update(self, model: nn.Module) -> None:
        """theta <- theta - lr Q_SR(g), then (master_weights none) theta <- Q_SR(theta) in a
        second pass: the first drops each gradient once applied, so the weight rounding runs
        with no gradient alive."""
        params = [p for _, p in trainable_parameters(model)]
        grad_seed, weight_seed = draw_seed(self.generator), draw_seed(self.generator)
        chunk = -(-sum(p.numel() for p in params) // CHUNKS)
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
        if self.config.master_weights == "none":
            round_onto_weight_grid_(model, params, weight_seed)
