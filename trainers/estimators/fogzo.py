"""FOGZO: First-Order-Guided Zeroth-Order descent (seed 000).

    g = STE gradient,  g_hat = g / ||g||
    v_i = sqrt(beta) s_i g_hat + sqrt(1 - beta) u_i          s_i Rademacher, u_i smoothing noise
    c_i = [L(theta + eps v_i) - L(theta - eps v_i)] / (2 eps),  G = (1/n) sum_i c_i v_i

beta decays linearly from ``beta_start`` to ``beta_min`` over the run. With per-layer eps
(``eps_mode='alpha'``) the directions live in eps-scaled coordinates z = theta / eps, so the
guide is the STE gradient of those coordinates, ``eps * g``, normalised: beta = 0 is then
exactly n-SPSA and beta = 1 gives exactly the STE direction with a magnitude measured on
the true quantized loss. (With one eps for all tensors this is the paper's formula.)

Which tensors get the mix (``zo_params``): rounding happens only in low-bit weights, so by
default (``quantized``) only weights whose quantizer has at most ``zo_max_bits`` bits are
covered; every other tensor (biases, norms, embeddings, LSQ steps, 8-bit first/last layers,
float layers) keeps its STE gradient bit for bit, since ZO noise there is pure variance.
g_hat and ``d_zo`` are taken over the covered tensors. ``all`` covers every tensor (the
old behaviour). With nothing covered (8 bits everywhere) a step is plain STE, so a sweep
over bits runs through; ``describe()`` then reports ``d_zo = 0``.

The noise-to-guide norm ratio is sqrt((1 - beta) d_zo), so a fixed beta_min means different
things on different models: ``beta_min: auto`` sets 1 - beta_min = kappa / d_zo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from trainers.estimators.base import (
    Batch,
    Estimator,
    LossFn,
    StepResult,
    first_order_loss,
    trainable_parameters,
)
from trainers.estimators.perturb import EPS_MODES, perturbation_plan, sample_directions, zo_gradient
from trainers.quant.layers import quantized_layers

ZO_PARAMS = ("quantized", "all")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class FOGZOConfig:
    """``warm_start`` is the fraction of the budget run as plain STE before FOGZO starts.
    ``beta_min`` is a number in [0, 1] or ``"auto"`` (1 - beta_min = ``kappa`` / d_zo)."""

    # lr when a trial sets none, per optimizer (as STE's: the guide dominates the direction).
    default_lr: ClassVar[dict[str, float]] = {"sgd": 0.02, "adam": 1e-3}

    n: int = 1
    beta_start: float = 1.0
    beta_min: float | str = 0.999
    kappa: float = 8.0
    zo_params: str = "quantized"
    zo_max_bits: int = 4
    eps: float = 1e-3
    eps_mode: str = "alpha"
    warm_start: float = 0.0
    chunk: int = 64

    def __post_init__(self) -> None:
        if self.n < 1 or self.chunk < 1:
            raise ValueError(
                f"fogzo: n and chunk must be >= 1 (got n={self.n}, chunk={self.chunk})"
            )
        if not (_is_number(self.beta_start) and 0 <= self.beta_start <= 1):
            raise ValueError(
                f"fogzo: beta_start must be a number in [0, 1] (got {self.beta_start!r})"
            )
        if self.beta_min != "auto" and not (_is_number(self.beta_min) and 0 <= self.beta_min <= 1):
            raise ValueError(
                f"fogzo: beta_min must be a number in [0, 1] or 'auto' (got {self.beta_min!r})"
            )
        if not (_is_number(self.kappa) and self.kappa > 0):
            raise ValueError(f"fogzo: kappa must be a number > 0 (got {self.kappa!r})")
        if self.zo_params not in ZO_PARAMS:
            raise ValueError(
                f"fogzo: zo_params {self.zo_params!r} is not one of {', '.join(ZO_PARAMS)}"
            )
        if (
            isinstance(self.zo_max_bits, bool)
            or not isinstance(self.zo_max_bits, int)
            or self.zo_max_bits < 1
        ):
            raise ValueError(
                f"fogzo: zo_max_bits must be an integer >= 1 (got {self.zo_max_bits!r})"
            )
        if not 0 <= self.warm_start < 1:
            raise ValueError(f"fogzo: warm_start is a fraction in [0, 1) (got {self.warm_start})")
        if self.eps <= 0:
            raise ValueError(f"fogzo: eps must be > 0 (got {self.eps})")
        if self.eps_mode not in EPS_MODES:
            raise ValueError(
                f"fogzo: eps_mode {self.eps_mode!r} is not one of {', '.join(EPS_MODES)}"
            )

    def resolved_beta_min(self, d_zo: int) -> float:
        """The numeric beta_min; for ``auto`` 1 - kappa / d_zo clamped to [0, 1], and 1 when
        nothing is covered (d_zo = 0: the step is then STE, the beta = 1 limit)."""
        if self.beta_min != "auto":
            return float(self.beta_min)
        if d_zo == 0:
            return 1.0
        return min(max(1.0 - self.kappa / d_zo, 0.0), 1.0)

    def beta(self, progress: float, beta_min: float | None = None) -> float:
        """Linear schedule ``beta(t) = beta_min + (beta_start - beta_min)(1 - t/T)``;
        ``beta_min`` is the resolved value (required when the config says ``auto``)."""
        if beta_min is None:
            if self.beta_min == "auto":
                raise ValueError(
                    "fogzo: beta_min 'auto' depends on d_zo; pass resolved_beta_min(d_zo)"
                )
            beta_min = float(self.beta_min)
        return beta_min + (self.beta_start - beta_min) * (1 - min(max(progress, 0.0), 1.0))


def covered_names(model: nn.Module, zo_params: str, max_bits: int) -> list[str]:
    """Names of the trainable tensors that get the ZO mix, in ``named_parameters`` order:
    all of them, or (``quantized``) the weights of layers quantized to at most ``max_bits``."""
    params = trainable_parameters(model)
    if zo_params == "all":
        return [name for name, _ in params]
    low = {
        id(layer.weight)
        for _, layer in quantized_layers(model)
        if getattr(layer.weight_quantizer, "bits", max_bits + 1) <= max_bits
    }
    return [name for name, p in params if id(p) in low]


class FOGZO(Estimator):
    name = "fogzo"
    config_class = FOGZOConfig

    # Set by ``prepare`` (by tensor name, so a deep copy of the model works too).
    _covered: frozenset[str] | None = None
    _d_zo: int = 0
    _beta_min: float = 1.0

    def prepare(self, model: nn.Module) -> None:
        cfg = self.config
        names = covered_names(model, cfg.zo_params, cfg.zo_max_bits)
        self._covered = frozenset(names)
        self._d_zo = sum(model.get_parameter(name).numel() for name in names)
        self._beta_min = cfg.resolved_beta_min(self._d_zo)

    def describe(self) -> dict[str, float | int]:
        if self._covered is None:
            return {}
        return {
            "d_zo": self._d_zo,
            "beta_min": self._beta_min,
            "noise_to_guide": math.sqrt((1.0 - self._beta_min) * self._d_zo),
        }

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        cfg = self.config
        if self._covered is None:  # a caller that skipped prepare
            self.prepare(model)
        loss = first_order_loss(
            model, loss_fn, batch
        )  # the clean train-mode forward: BN stats move here
        if progress < cfg.warm_start or not self._covered:
            return self.result(loss, forwards=1, backwards=1)  # plain STE

        plan = perturbation_plan(model, cfg.eps_mode, cfg.eps, only=self._covered)
        guide = [
            item.eps
            * (item.param.grad if item.param.grad is not None else torch.zeros_like(item.param))
            for item in plan
        ]
        # One host sync for the whole norm (not one per tensor: on a GPU each float() waits).
        norm = float(
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in guide]))
        )
        beta = cfg.beta(progress, self._beta_min)
        along = math.sqrt(beta) / norm if norm > 0 else 0.0  # the guide's 1/norm folded in

        def draw(k: int) -> list[torch.Tensor]:
            # v_j = sqrt(1 - beta) u_j + sqrt(beta) s_j g / ||g||, built in place on the noise
            # block (each pass over a model-sized tensor costs; see BENCHMARKS.md, section 1).
            signs = torch.randint(
                0, 2, (k,), generator=self.generator, device=self.generator.device
            )
            signs = (signs * 2 - 1).tolist()
            noise = sample_directions(plan, k, self.generator)
            for g, u in zip(guide, noise):
                if beta > 0:
                    u.mul_(math.sqrt(1 - beta))
                for j in range(k):
                    u[j].add_(g, alpha=along * signs[j])
            return noise

        # Eval-mode perturbed forwards; tensors outside the plan keep their STE p.grad.
        grads, _ = zo_gradient(
            model,
            loss_fn,
            batch,
            plan,
            cfg.n,
            draw,
            cfg.chunk,
            forward_flops=self.cost.forward_flops,
        )
        for item, g in zip(plan, grads):
            item.param.grad = g
        return self.result(loss, forwards=1 + 2 * cfg.n, backwards=1)
