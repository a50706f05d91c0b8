"""MeZO: memory-efficient zeroth-order SGD (baseline of seed 001).

n-SPSA with Gaussian z done in place so memory equals inference: draw a seed;
theta += eps z; L+; theta -= 2 eps z; L-; then replay z from the seed once more to restore
and update together: theta += (eps - lr * (L+ - L-) / (2 eps)) * z. No optimizer state.

``master_weights`` is the storage of the weights, as for QuZO and qfo (docs/estimators.md,
QuZO, "Storage of θ̄"; ``seeded``): ``fp32`` (default) keeps the float latent weights in the
parameter tensor, perturbed and updated in float, and a quantized layer fake-quantizes them
in every forward; ``none`` (a quantized model only) snaps them onto their grid in ``prepare``
and, after each in-place update, rounds every quantized weight stochastically onto its grid
(coin flips from the estimator's generator). The perturbed forwards quantize theta +- eps z.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from trainers.estimators.base import (
    Batch,
    Estimator,
    LossFn,
    StepResult,
    draw_seed,
    trainable_parameters,
)
from trainers.estimators.seeded import (
    MASTER_WEIGHTS,
    MasterWeights,
    add_noise_,
    check_choice,
    gaussian_noise,
    round_onto_weight_grid_,
    two_point_in_place,
)
from trainers.quant.layers import quantized_layers, snap_to_grid


@dataclass(frozen=True)
class MeZOConfig:
    """``eps`` is larger than the paper's 1e-3 (float fine-tuning): on low-bit weights a rounding
    flip inside the +-eps probe, divided by 2 eps, made steps explode (docs/estimators.md,
    "Default learning rates"); 0.03 is a fraction of a 2-bit grid step of the MLP."""

    lr: float = 2e-3  # in place, no optimizer: the lr is the estimator's own
    n: int = 1
    eps: float = 0.03
    master_weights: MasterWeights = "fp32"  # docs/estimators.md, QuZO, "Storage of θ̄"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"mezo: n must be >= 1 (got {self.n})")
        if self.eps <= 0:
            raise ValueError(f"mezo: eps must be > 0 (got {self.eps})")
        check_choice("mezo", "master_weights", self.master_weights, MASTER_WEIGHTS)


class MeZO(Estimator):
    name = "mezo"
    config_class = MeZOConfig
    updates_in_place = True

    def prepare(self, model: nn.Module) -> None:
        if self.config.master_weights == "none":
            if not quantized_layers(model):
                raise ValueError("mezo: master_weights none needs a quantized model (a grid)")
            snap_to_grid(model)

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        cfg = self.config
        params = [p for _, p in trainable_parameters(model)]
        # All n directions are measured at the same theta, then applied: only seeds are kept.
        # The last direction is not restored: its restore (+eps z) and its update (-lr g z / n)
        # are one pass, so a step regenerates z 3 times for n = 1, not 4 (BENCHMARKS.md, section 1).
        measured = []
        loss_sum = 0.0
        for i in range(cfg.n):
            seed = draw_seed(self.generator)
            last = i == cfg.n - 1
            plus, minus = two_point_in_place(
                model, loss_fn, batch, params, gaussian_noise(seed), cfg.eps, restore=not last
            )
            measured.append((seed, (plus - minus) / (2 * cfg.eps)))
            loss_sum += plus + minus
        for i, (seed, projected_grad) in enumerate(measured):
            restore = cfg.eps if i == cfg.n - 1 else 0.0
            add_noise_(params, gaussian_noise(seed), restore - self.lr * projected_grad / cfg.n)
        if cfg.master_weights == "none":
            round_onto_weight_grid_(model, params, draw_seed(self.generator))
        return self.result(loss_sum / (2 * cfg.n), forwards=2 * cfg.n, backwards=0)
