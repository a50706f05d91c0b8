"""QuZO: quantized zeroth-order fine-tuning (seed 001).

Forwards on low-precision (INT8/INT4/FP8) weights only; no backward, no optimizer state:

    u_i ~ N(0, I);  u_i1 = Q_SR(u_i), u_i2 = Q_SR(u_i)     two INDEPENDENT stochastic roundings
    mu_i = [L(Q(theta + eps u_i1)) - L(Q(theta - eps u_i1))] / (2 eps)
    theta <- theta - sum_i (lr mu_i / n) u_i2               master_weights: fp32 (default)
    theta <- Q_SR(theta - sum_i (lr mu_i / n) u_i2)         master_weights: none

Defaults follow the authors' code (docs/estimators.md, QuZO, "Storage of θ̄ — a choice,
measured"), the alternatives are options named in the results:

- ``master_weights`` (as for MeZO and qfo, ``seeded``): ``fp32`` keeps the float latent
  weights in the parameter tensor and updates them in float; ``none`` snaps them onto the
  grid in ``prepare`` (frozen scales) and rounds every update stochastically onto the weight
  grid, which for a uniform INT grid equals ``theta - Q_SR(step)`` and is also exact for
  FP8's non-uniform grid. It multiplies the update's variance by about alpha / |step|.
- ``probe``: ``quantized`` lets the layer quantize the perturbed weights theta +- eps u1 in
  each probe forward (the authors' code fake-quantizes them); ``float`` bypasses the weight
  quantizer there and forwards on theta +- eps u1 as-is (with ``none``: on-grid theta plus a
  low-bit perturbation).
- ``same_rounding``: the ablation u_i2 = u_i1 (the authors' public code reuses one seed),
  which the paper says adds a bias term; default two independent roundings, as the paper.

The perturbation is rounded onto its own ``perturb_bits`` INT grid (abs-max scale).
Parameters that are not quantized (biases, norms) get the plain float update.
Only trained weights are snapped and evaluated as-is: a frozen quantized weight (a LoRA
model's base) keeps its latent value bit for bit and its layer quantizes it in every forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

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
    NoiseFn,
    check_choice,
    gaussian_noise,
    tensor_generator,
    two_point_in_place,
)
from trainers.quant import functional as qf
from trainers.quant.layers import quantized_layers, snap_to_grid, trainable_quantized_layers


@dataclass(frozen=True)
class QuZOConfig:
    # Measured with fp32 masters and quantized probes on the MLP (digits and a 30-feature
    # table, 2/4/8 bits, 3 seeds, 300 steps): 3e-4 lowers the loss in every case; 1e-3 raised
    # it at 2 bits on digits; 3e-3 diverged there (docs/estimators.md, "Default learning rates").
    lr: float = 3e-4  # in place, no optimizer: the lr is the estimator's own
    n: int = 1
    eps: float = 1e-3
    perturb_bits: int | None = 4  # the authors' scripts (docs/estimators.md, QuZO)
    master_weights: MasterWeights = "fp32"  # the authors' code: a float copy
    probe: Literal["quantized", "float"] = "quantized"  # the layer quantizes theta +- eps u1
    same_rounding: bool = False  # True: u2 = u1 (ablation; the paper's bias term)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"quzo: n must be >= 1 (got {self.n})")
        if self.eps <= 0:
            raise ValueError(f"quzo: eps must be > 0 (got {self.eps})")
        if self.perturb_bits is not None and not 2 <= self.perturb_bits <= 8:
            raise ValueError(
                f"quzo: perturb_bits must be in 2..8 or null (got {self.perturb_bits})"
            )
        check_choice("quzo", "master_weights", self.master_weights, MASTER_WEIGHTS)
        check_choice("quzo", "probe", self.probe, ("quantized", "float"))
        if not isinstance(self.same_rounding, bool):
            raise ValueError(f"quzo: same_rounding must be a bool (got {self.same_rounding!r})")


def round_noise(u: Tensor, k: int, rounding_seed: int, bits: int | None, rounded: bool) -> Tensor:
    """``Q_SR(u)`` onto a ``bits`` INT grid with abs-max scale, the coin flips replayable
    from ``rounding_seed`` (tensor ``k``); ``u`` itself when not ``rounded``."""
    if bits is None or not rounded:
        return u
    qmin, qmax = qf.int_range(bits)
    low, high = torch.aminmax(u)  # abs-max without an |u| temporary
    scale = (torch.maximum(-low, high) / qmax).clamp(min=1e-12)
    return qf.stochastic_round_int(
        u / scale, qmin, qmax, tensor_generator(rounding_seed, k, u.device)
    ).mul_(scale)


def rounded_noise(seed: int, rounding_seed: int, bits: int | None, quantized: set[int]) -> NoiseFn:
    """Replayable ``Q_SR(u)``: u from ``seed``, the rounding coin flips from ``rounding_seed``.

    Two calls with different rounding seeds give two independent roundings of the same u.
    Tensors not in ``quantized`` get the unrounded u.
    """
    base = gaussian_noise(seed)

    def noise(k: int, p: nn.Parameter) -> Tensor:
        return round_noise(base(k, p), k, rounding_seed, bits, id(p) in quantized)

    return noise


class QuZO(Estimator):
    name = "quzo"
    config_class = QuZOConfig
    updates_in_place = True

    def prepare(self, model: nn.Module) -> None:
        if not quantized_layers(model):
            raise ValueError(
                "quzo needs a quantized model (quant.kind int, lsq or fp8_*), got a float one"
            )
        if self.config.master_weights == "none":
            snap_to_grid(model)

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        cfg = self.config
        params = [p for _, p in trainable_parameters(model)]
        # The trained quantized layers (all, unless some weights are frozen); a tied weight
        # has several (all bypassed under probe: float) and one entry per tensor for its update.
        trained = [layer for _, layer in trainable_quantized_layers(model)]
        layers = {id(layer.weight): layer for layer in trained}
        quantized = set(layers)
        measured, loss_sum = [], 0.0
        self._bypass(trained, cfg.probe == "float")  # float: forward on theta + eps*u1 as-is
        try:
            for i in range(cfg.n):
                seed, r1, r2 = (draw_seed(self.generator) for _ in range(3))
                r2 = r1 if cfg.same_rounding else r2
                u1 = rounded_noise(seed, r1, cfg.perturb_bits, quantized)
                # The last direction stays at theta - eps*u1: the update pass below restores it.
                plus, minus = two_point_in_place(
                    model, loss_fn, batch, params, u1, cfg.eps, restore=i < cfg.n - 1
                )
                measured.append((seed, r1, r2, (plus - minus) / (2 * cfg.eps)))
                loss_sum += plus + minus
        finally:
            self._bypass(trained, False)
        self._update(params, layers, measured)
        return self.result(loss_sum / (2 * cfg.n), forwards=2 * cfg.n, backwards=0)

    @torch.no_grad()
    def _update(
        self, params: list[nn.Parameter], layers: dict, measured: list[tuple[int, int, int, float]]
    ) -> None:
        """theta <- theta - sum_i lr mu_i / n * u_i2 in place, one pass over the parameters;
        with ``master_weights: none`` each quantized weight is then rounded onto its grid.

        The same pass undoes the last direction's -eps*u1 (u1 and u2 are two roundings of one
        Gaussian draw u, so u is drawn once for both): one noise pass fewer than restoring
        first. Re-rounding onto the weight grid also removes the float residue of the
        +eps/-2eps moves; in fp32 that residue stays (a float rounding error).
        """
        cfg = self.config
        update_seed = draw_seed(self.generator)
        for k, p in enumerate(params):
            layer = layers.get(id(p))
            rounded = layer is not None
            for i, (seed, r1, r2, mu) in enumerate(measured):
                u = gaussian_noise(seed)(k, p)
                step = self.lr * mu / cfg.n
                restore = cfg.eps if i == len(measured) - 1 else 0.0
                if r1 == r2:  # same rounding: one rounded direction for both moves
                    p.add_(round_noise(u, k, r1, cfg.perturb_bits, rounded), alpha=restore - step)
                    continue
                p.sub_(round_noise(u, k, r2, cfg.perturb_bits, rounded), alpha=step)
                if restore:
                    p.add_(round_noise(u, k, r1, cfg.perturb_bits, rounded), alpha=restore)
            if rounded and cfg.master_weights == "none":
                generator = tensor_generator(update_seed, k, p.device)
                p.copy_(layer.weight_quantizer.round_stochastic(p, generator))

    @staticmethod
    def _bypass(layers: list, on: bool) -> None:
        for layer in layers:
            layer.bypass_weight_quant = on
