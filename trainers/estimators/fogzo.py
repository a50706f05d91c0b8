"""FOGZO: First-Order-Guided Zeroth-Order descent (seed 000).

    g = STE gradient,  g_hat = g / ||g||
    v_i = sqrt(beta) s_i g_hat + sqrt(1 - beta) u_i          s_i Rademacher, u_i smoothing noise
    c_i = [L(theta + eps v_i) - L(theta - eps v_i)] / (2 eps),  G = (1/n) sum_i c_i v_i

beta decays linearly from ``beta_start`` to ``beta_min`` over the run. With per-layer eps
(``eps_mode='alpha'``) the directions live in eps-scaled coordinates z = theta / eps, so the
guide is the STE gradient of those coordinates, ``eps * g``, normalised: beta = 0 is then
exactly n-SPSA and beta = 1 gives exactly the STE direction with a magnitude measured on
the true quantized loss. (With one eps for all tensors this is the paper's formula.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from trainers.estimators.base import Batch, Estimator, LossFn, StepResult, first_order_loss
from trainers.estimators.perturb import EPS_MODES, perturbation_plan, sample_directions, zo_gradient


@dataclass(frozen=True)
class FOGZOConfig:
    """``warm_start`` is the fraction of the budget run as plain STE before FOGZO starts."""

    # lr when a trial sets none, per optimizer (as STE's: the guide dominates the direction).
    default_lr: ClassVar[dict[str, float]] = {"sgd": 0.02, "adam": 1e-3}

    n: int = 1
    beta_start: float = 1.0
    beta_min: float = 0.999
    eps: float = 1e-3
    eps_mode: str = "alpha"
    warm_start: float = 0.0
    chunk: int = 64

    def __post_init__(self) -> None:
        if self.n < 1 or self.chunk < 1:
            raise ValueError(f"fogzo: n and chunk must be >= 1 (got n={self.n}, chunk={self.chunk})")
        if not (0 <= self.beta_min <= 1 and 0 <= self.beta_start <= 1):
            raise ValueError(f"fogzo: beta_start/beta_min must be in [0, 1] (got {self.beta_start}, {self.beta_min})")
        if not 0 <= self.warm_start < 1:
            raise ValueError(f"fogzo: warm_start is a fraction in [0, 1) (got {self.warm_start})")
        if self.eps <= 0:
            raise ValueError(f"fogzo: eps must be > 0 (got {self.eps})")
        if self.eps_mode not in EPS_MODES:
            raise ValueError(f"fogzo: eps_mode {self.eps_mode!r} is not one of {', '.join(EPS_MODES)}")

    def beta(self, progress: float) -> float:
        """Linear schedule ``beta(t) = beta_min + (beta_start - beta_min)(1 - t/T)``."""
        return self.beta_min + (self.beta_start - self.beta_min) * (1 - min(max(progress, 0.0), 1.0))


class FOGZO(Estimator):
    name = "fogzo"
    config_class = FOGZOConfig

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        cfg = self.config
        loss = first_order_loss(model, loss_fn, batch)
        if progress < cfg.warm_start:
            return self.result(loss, forwards=1, backwards=1)

        plan = perturbation_plan(model, cfg.eps_mode, cfg.eps)
        guide = [item.eps * (item.param.grad if item.param.grad is not None else torch.zeros_like(item.param))
                 for item in plan]
        # One host sync for the whole norm (not one per tensor: on a GPU each float() waits).
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in guide])))
        beta = cfg.beta(progress)
        along = math.sqrt(beta) / norm if norm > 0 else 0.0  # the guide's 1/norm folded in

        def draw(k: int) -> list[torch.Tensor]:
            # v_j = sqrt(1 - beta) u_j + sqrt(beta) s_j g / ||g||, built in place on the noise
            # block (each pass over a model-sized tensor costs; see BENCHMARKS.md, section 1).
            signs = (torch.randint(0, 2, (k,), generator=self.generator) * 2 - 1).tolist()
            noise = sample_directions(plan, k, self.generator)
            for g, u in zip(guide, noise):
                if beta > 0:
                    u.mul_(math.sqrt(1 - beta))
                for j in range(k):
                    u[j].add_(g, alpha=along * signs[j])
            return noise

        # The STE forward above already advanced any BatchNorm running stats this step.
        grads, _ = zo_gradient(model, loss_fn, batch, plan, cfg.n, draw, cfg.chunk, update_buffers=False,
                               forward_flops=self.cost.forward_flops)
        for item, g in zip(plan, grads):
            item.param.grad = g
        return self.result(loss, forwards=1 + 2 * cfg.n, backwards=1)
