"""Pure quantization functions: grids, rounding, FP8, stochastic rounding.

Everything here is a plain tensor -> tensor function (no modules, no state) so it can be
tested bit-exactly against naive references and used inside ``torch.func.vmap``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FP8_FORMATS: dict[str, torch.dtype] = {
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def int_range(bits: int) -> tuple[int, int]:
    """Integer levels of a symmetric b-bit grid: ``(-Q_n, Q_p) = (-2^(b-1), 2^(b-1) - 1)``.

    1-bit is the sign quantizer, whose levels are {-1, +1} (no zero level).
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def round_to_int_grid(x: Tensor, qmin: int, qmax: int) -> Tensor:
    """Round-to-nearest onto the integer grid ``qmin..qmax`` (x already divided by the step).

    With ``(qmin, qmax) == (-1, 1)`` this is the sign quantizer (0 maps to +1).
    """
    if (qmin, qmax) == (-1, 1):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return torch.clamp(torch.round(x), qmin, qmax)


def fake_quantize(x: Tensor, scale: Tensor, qmin: int, qmax: int) -> Tensor:
    """``Q(x) = scale * clamp(round(x / scale), qmin, qmax)`` (sign for 1 bit)."""
    return round_to_int_grid(x / scale, qmin, qmax) * scale


def stochastic_round_int(
    x: Tensor, qmin: int, qmax: int, generator: torch.Generator | None
) -> Tensor:
    """Unbiased stochastic rounding onto the integer grid: ``E[SR(x)] = x`` inside the range.

    For the sign grid {-1, 1} the two neighbours are -1 and +1 for every x in [-1, 1].
    """
    if (qmin, qmax) == (-1, 1):
        x = x.clamp(-1, 1)
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return torch.where(noise < (x + 1) / 2, torch.ones_like(x), -torch.ones_like(x))
    # floor(x + U[0, 1)) rounds up with probability frac(x): stochastic rounding in three
    # in-place passes on two tensor-sized buffers (QuZO runs it four times a step, so every
    # pass and temporary shows in its step time and memory; BENCHMARKS.md, sections 1-2).
    y = x.clamp(qmin, qmax)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return y.add_(noise).floor_().clamp_(qmin, qmax)


def fp8_max(fmt: str) -> float:
    return float(torch.finfo(FP8_FORMATS[fmt]).max)


def round_to_fp8(x: Tensor, fmt: str) -> Tensor:
    """Round-to-nearest-even onto the FP8 grid (saturating), returned in x's dtype."""
    limit = fp8_max(fmt)
    return x.clamp(-limit, limit).to(FP8_FORMATS[fmt]).to(x.dtype)


def _fp8_neighbour(q: Tensor, away_from_zero: Tensor, fmt: str) -> Tensor:
    """The adjacent FP8 value of on-grid ``q``, one code further from (or nearer to) zero.

    FP8 codes of one sign are ordered by magnitude, so +-1 on the uint8 view steps to the
    neighbouring representable value; this is exact, unlike any float formula.
    """
    dtype = FP8_FORMATS[fmt]
    codes = q.to(dtype).view(torch.uint8).to(torch.int16)
    magnitude = codes & 0x7F
    sign = codes & 0x80
    max_code = int(torch.tensor(fp8_max(fmt)).to(dtype).view(torch.uint8).item()) & 0x7F
    step = torch.where(away_from_zero, 1, -1).to(torch.int16)
    magnitude = (magnitude + step).clamp(0, max_code)
    neighbour = (sign | magnitude).to(torch.uint8).view(dtype)
    return neighbour.to(q.dtype)


def stochastic_round_fp8(x: Tensor, fmt: str, generator: torch.Generator | None) -> Tensor:
    """Unbiased stochastic rounding onto the FP8 grid: pick one of the two bracketing values."""
    limit = fp8_max(fmt)
    x = x.clamp(-limit, limit)
    nearest = round_to_fp8(x, fmt)
    # The other bracketing value lies on the far side of x from `nearest`.
    away = nearest.abs() < x.abs()
    other = _fp8_neighbour(nearest, away, fmt)
    # At x == nearest there is nothing to randomise; avoid 0/0 in the probability.
    lo, hi = torch.minimum(nearest, other), torch.maximum(nearest, other)
    gap = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    p_hi = ((x - lo) / gap).clamp(0, 1)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    rounded = torch.where(noise < p_hi, hi, lo)
    return torch.where(nearest == x, nearest, rounded)


def fp8_spacing(x: Tensor, fmt: str) -> Tensor:
    """Local grid spacing of the FP8 format at |x| (distance to the next larger code)."""
    nearest = round_to_fp8(x.abs(), fmt)
    up = _fp8_neighbour(nearest, torch.ones_like(nearest, dtype=torch.bool), fmt)
    down = _fp8_neighbour(nearest, torch.zeros_like(nearest, dtype=torch.bool), fmt)
    spacing = torch.where(up > nearest, up - nearest, nearest - down)
    return spacing


# --- STE surrogates -------------------------------------------------------------------
#
# A surrogate is the derivative of E[Q(x + t)] for a noise t matched to it (docs/estimators.md):
# identity <-> uniform noise of one grid step (exactly 1 inside the grid), clipped/hardtanh
# <-> the same but zero outside the grid, tanh <-> logistic noise, approxsign <-> triangular
# noise. On the 1-bit sign grid (gap 2 between the levels) these are the textbook
# 1, 1[|x|<=1], 1 - tanh(x)^2 and 2 - 2|x|; for b > 1 the same noise shape is scaled to
# one grid step and summed over every rounding threshold.

SURROGATES = ("identity", "clipped", "hardtanh", "tanh", "approxsign")

# Standard deviation of the matched noise in units of the gap between adjacent levels.
NOISE_STD_PER_GAP = {
    "identity": 1 / (2 * math.sqrt(3)),
    "clipped": 1 / (2 * math.sqrt(3)),
    "hardtanh": 1 / (2 * math.sqrt(3)),
    "tanh": math.pi / (4 * math.sqrt(3)),
    "approxsign": 1 / (2 * math.sqrt(6)),
}

# Shape of the unit-variance noise each surrogate is matched to.
NOISE_KIND = {
    "identity": "uniform",
    "clipped": "uniform",
    "hardtanh": "uniform",
    "tanh": "logistic",
    "approxsign": "triangular",
}


def level_gap(qmin: int, qmax: int) -> float:
    """Distance between adjacent levels in units of the step: 2 for sign, else 1."""
    return 2.0 if (qmin, qmax) == (-1, 1) else 1.0


def _thresholds(qmin: int, qmax: int, like: Tensor) -> Tensor:
    if (qmin, qmax) == (-1, 1):
        return torch.zeros(1, dtype=like.dtype, device=like.device)
    return torch.arange(qmin, qmax, dtype=like.dtype, device=like.device) + 0.5


def surrogate_grad(x: Tensor, surrogate: str, qmin: int, qmax: int) -> Tensor:
    """dQ/dx used by the backward pass, x in units of the step."""
    if surrogate == "identity":
        return torch.ones_like(x)
    gap = level_gap(qmin, qmax)
    if surrogate in ("clipped", "hardtanh"):
        # Uniform noise of one gap moves E[Q] only between the outermost levels.
        return ((x >= qmin) & (x <= qmax)).to(x.dtype)
    distance = x.unsqueeze(-1) - _thresholds(qmin, qmax, x)
    if surrogate == "tanh":
        return (1 - torch.tanh(2 * distance / gap) ** 2).sum(-1)
    if surrogate == "approxsign":
        return (2 * (1 - 2 * distance.abs() / gap)).clamp(min=0).sum(-1)
    raise ValueError(f"unknown STE surrogate {surrogate!r}; valid: {', '.join(SURROGATES)}")


def sample_unit_noise(
    kind: str,
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Zero-mean, unit-variance noise of the given shape (uniform, triangular, logistic, gaussian).

    Transforms work in place on the draw: for a model-sized [n, *shape] block every extra
    pass over memory shows up in n-SPSA's step time (BENCHMARKS.md, section 1)."""
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if kind == "uniform":
        root3 = math.sqrt(3)
        return torch.empty(shape, dtype=dtype, device=device).uniform_(
            -root3, root3, generator=generator
        )
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    if kind == "triangular":
        v = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        return u.add_(v).sub_(1).mul_(math.sqrt(6))
    if kind == "logistic":
        u = u.clamp_(1e-7, 1 - 1e-7)
        return torch.log(u / (1 - u)).mul_(math.sqrt(3) / math.pi)
    raise ValueError(f"unknown noise kind {kind!r}; valid: gaussian, uniform, triangular, logistic")
