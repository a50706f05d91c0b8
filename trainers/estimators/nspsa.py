"""n-SPSA: multi-direction zeroth-order estimate, no backward pass.

    c_i = [L(theta + eps u_i) - L(theta - eps u_i)] / (2 eps),   G = (1/n) sum_i c_i u_i

Unbiased for the gradient of the smoothed loss E_u L(theta + eps u). The 2n perturbed
losses are evaluated batched (vmap), ``chunk`` directions at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from trainers.estimators.base import Batch, Estimator, LossFn, StepResult, trainable_parameters
from trainers.estimators.perturb import EPS_MODES, perturbation_plan, sample_directions, zo_gradient


@dataclass(frozen=True)
class NSPSAConfig:
    """n directions; ``eps_mode='alpha'`` scales eps per layer by the grid step (see perturb.py)."""

    # lr when a trial sets none, per optimizer: SGD diverged at 3e-3 on 2-bit digits (and at
    # the old shared 0.05 everywhere), Adam degraded at 3e-2 (docs/estimators.md, "Default
    # learning rates").
    default_lr: ClassVar[dict[str, float]] = {"sgd": 5e-4, "adam": 3e-3}

    n: int = 1
    eps: float = 1e-3
    eps_mode: str = "alpha"
    chunk: int = 64

    def __post_init__(self) -> None:
        if self.n < 1 or self.chunk < 1:
            raise ValueError(
                f"nspsa: n and chunk must be >= 1 (got n={self.n}, chunk={self.chunk})"
            )
        if self.eps <= 0:
            raise ValueError(f"nspsa: eps must be > 0 (got {self.eps})")
        if self.eps_mode not in EPS_MODES:
            raise ValueError(
                f"nspsa: eps_mode {self.eps_mode!r} is not one of {', '.join(EPS_MODES)}"
            )


class NSPSA(Estimator):
    name = "nspsa"
    config_class = NSPSAConfig

    _d_zo: int | None = None

    def prepare(self, model: nn.Module) -> None:
        self._d_zo = sum(p.numel() for _, p in trainable_parameters(model))

    def describe(self) -> dict[str, float | int]:
        """``d_zo``: every trainable element is perturbed."""
        return {} if self._d_zo is None else {"d_zo": self._d_zo}

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        cfg = self.config
        plan = perturbation_plan(model, cfg.eps_mode, cfg.eps)
        grads, loss = zo_gradient(
            model,
            loss_fn,
            batch,
            plan,
            cfg.n,
            lambda k: sample_directions(plan, k, self.generator),
            cfg.chunk,
            forward_flops=self.cost.forward_flops,
        )
        for item, g in zip(plan, grads):
            item.param.grad = g
        # No unperturbed forward is paid for: report the mean perturbed loss.
        return self.result(loss, forwards=2 * cfg.n, backwards=0)
