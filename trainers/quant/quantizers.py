"""Fake-quantizer modules: uniform INT (per-tensor / per-channel), LSQ, FP8, activations.

Each quantizer maps a float tensor to its on-grid value in the forward pass and lets the
chosen STE surrogate through in the backward pass. Besides ``forward`` every quantizer
answers the questions the estimators ask of a grid:

- ``step_size(w)``  the local grid step alpha (per tensor, per channel or per element),
  used to scale zeroth-order perturbations layer by layer (FOGZO);
- ``round_nearest(w)`` / ``round_stochastic(w, gen)`` onto the grid (QuZO keeps its
  weights there);
- ``freeze(w)`` pins the scale so repeated rounding is idempotent.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from trainers.quant import functional as qf


class _RoundSTE(torch.autograd.Function):
    """Round x (in step units) onto an integer grid; backward = the surrogate's dQ/dx."""

    generate_vmap_rule = True  # lets torch.func.vmap batch perturbed forwards (n-SPSA)

    @staticmethod
    def forward(x: Tensor, qmin: int, qmax: int, surrogate: str) -> Tensor:
        return qf.round_to_int_grid(x, qmin, qmax)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, qmin, qmax, surrogate = inputs
        ctx.save_for_backward(x)
        ctx.grid = (qmin, qmax, surrogate)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        qmin, qmax, surrogate = ctx.grid
        return grad * qf.surrogate_grad(x, surrogate, qmin, qmax), None, None, None


class _FP8STE(torch.autograd.Function):
    """Round onto FP8 (x already divided by the scale); identity gradient (no clipping occurs)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, fmt: str) -> Tensor:
        return qf.round_to_fp8(x, fmt)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient multiplied by a constant (LSQ's step-size gradient scale)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, scale: float) -> Tensor:
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def _channel_reduce(w: Tensor, per_channel: bool, fn) -> Tensor:
    """Reduce |w| per output channel (dim 0, kept broadcastable) or over the whole tensor."""
    if per_channel and w.dim() > 1:
        return fn(w.abs().flatten(1), dim=1).view(-1, *([1] * (w.dim() - 1)))
    return fn(w.abs().flatten(), dim=0)


class Quantizer(nn.Module):
    """Common interface; subclasses define the grid."""

    noise_kind = "uniform"  # smoothing noise matched to the surrogate (docs/estimators.md)
    noise_std_per_step = 1 / (2 * math.sqrt(3))

    def step_size(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def round_nearest(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def round_stochastic(self, w: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def freeze(self, w: Tensor) -> None:
        """Pin the scale to its value for ``w`` (used once the weights live on the grid)."""
        self.register_buffer("frozen_scale", self._scale(w).detach().clone())

    def _scale(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def scale(self, w: Tensor) -> Tensor:
        frozen = getattr(self, "frozen_scale", None)
        return frozen if frozen is not None else self._scale(w)


class IntQuantizer(Quantizer):
    """Uniform symmetric b-bit fake-quant ``alpha * clamp(round(w / alpha), -Q_n, Q_p)``.

    The scale is recomputed from the weights (not learned): for b >= 5 the abs-max rule
    uses the whole range; for 2..4 bits abs-max would round most weights to zero, so the
    LSQ initialisation ``2 mean|w| / sqrt(Q_p)`` is used; 1 bit uses XNOR-Net's mean|w|.
    """

    def __init__(self, bits: int, per_channel: bool = False, surrogate: str = "identity"):
        super().__init__()
        if surrogate not in qf.SURROGATES:
            raise ValueError(
                f"unknown STE surrogate {surrogate!r}; valid: {', '.join(qf.SURROGATES)}"
            )
        self.bits, self.per_channel, self.surrogate = bits, per_channel, surrogate
        self.qmin, self.qmax = qf.int_range(bits)
        self.noise_kind = qf.NOISE_KIND[surrogate]
        self.noise_std_per_step = (
            qf.level_gap(self.qmin, self.qmax) * qf.NOISE_STD_PER_GAP[surrogate]
        )

    def _scale(self, w: Tensor) -> Tensor:
        w = w.detach()
        if self.bits == 1:
            scale = _channel_reduce(w, self.per_channel, torch.mean)
        elif self.bits >= 5:
            scale = _channel_reduce(w, self.per_channel, torch.amax) / self.qmax
        else:
            scale = 2 * _channel_reduce(w, self.per_channel, torch.mean) / math.sqrt(self.qmax)
        return scale.clamp(min=1e-12)

    def forward(self, w: Tensor) -> Tensor:
        scale = self.scale(w)
        return _RoundSTE.apply(w / scale, self.qmin, self.qmax, self.surrogate) * scale

    def step_size(self, w: Tensor) -> Tensor:
        return self.scale(w).detach()

    def round_nearest(self, w: Tensor) -> Tensor:
        return qf.fake_quantize(w.detach(), self.scale(w), self.qmin, self.qmax)

    def round_stochastic(self, w: Tensor, generator: torch.Generator | None) -> Tensor:
        scale = self.scale(w)
        return qf.stochastic_round_int(w.detach() / scale, self.qmin, self.qmax, generator) * scale

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, surrogate={self.surrogate}"


class LSQQuantizer(IntQuantizer):
    """Learned Step-size Quantization: alpha is a parameter, init ``2 mean|w| / sqrt(Q_p)``,
    its gradient scaled by ``1 / sqrt(N * Q_p)`` (N = elements of the weight tensor)."""

    def __init__(
        self, weight: Tensor, bits: int, per_channel: bool = False, surrogate: str = "clipped"
    ):
        super().__init__(bits, per_channel, surrogate)
        init = 2 * _channel_reduce(weight.detach(), per_channel, torch.mean) / math.sqrt(self.qmax)
        self.step = nn.Parameter(init.clamp(min=1e-8).clone())
        self.grad_scale = 1.0 / math.sqrt(weight.numel() * self.qmax)

    def _scale(self, w: Tensor) -> Tensor:
        return _ScaleGrad.apply(self.step, self.grad_scale)

    def freeze(self, w: Tensor) -> None:
        self.step.requires_grad_(False)


class FP8Quantizer(Quantizer):
    """FP8 (e4m3 / e5m2) fake-quant with an abs-max scale onto the format's largest value."""

    def __init__(self, fmt: str, per_channel: bool = False):
        super().__init__()
        if fmt not in qf.FP8_FORMATS:
            raise ValueError(f"unknown FP8 format {fmt!r}; valid: {', '.join(qf.FP8_FORMATS)}")
        self.fmt, self.per_channel, self.bits = fmt, per_channel, 8

    def _scale(self, w: Tensor) -> Tensor:
        return (
            _channel_reduce(w.detach(), self.per_channel, torch.amax) / qf.fp8_max(self.fmt)
        ).clamp(min=1e-12)

    def forward(self, w: Tensor) -> Tensor:
        scale = self.scale(w)
        return _FP8STE.apply(w / scale, self.fmt) * scale

    def step_size(self, w: Tensor) -> Tensor:
        scale = self.scale(w)
        return (qf.fp8_spacing(w.detach() / scale, self.fmt) * scale).detach()

    def round_nearest(self, w: Tensor) -> Tensor:
        scale = self.scale(w)
        return qf.round_to_fp8(w.detach() / scale, self.fmt) * scale

    def round_stochastic(self, w: Tensor, generator: torch.Generator | None) -> Tensor:
        scale = self.scale(w)
        return qf.stochastic_round_fp8(w.detach() / scale, self.fmt, generator) * scale

    def extra_repr(self) -> str:
        return f"fmt={self.fmt}, per_channel={self.per_channel}"


class ActQuantizer(nn.Module):
    """Dynamic per-tensor symmetric b-bit activation fake-quant, clipped STE.

    Scale rule as for weights: abs-max for >= 5 bits; for 2..4 bits abs-max would send
    most activations to zero (W2A2 barely trains), so ``2 mean|x| / sqrt(Q_p)`` is used.
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        self.qmin, self.qmax = qf.int_range(bits)

    def forward(self, x: Tensor) -> Tensor:
        magnitude = x.detach().abs()
        if self.bits >= 5:
            scale = magnitude.amax() / self.qmax
        elif self.bits == 1:
            scale = magnitude.mean()
        else:
            scale = 2 * magnitude.mean() / math.sqrt(self.qmax)
        return _RoundSTE.apply(
            x / scale.clamp(min=1e-12), self.qmin, self.qmax, "clipped"
        ) * scale.clamp(min=1e-12)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
