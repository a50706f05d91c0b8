"""MeZO's seed trick: a direction is never stored, only the seed that regenerates it.

Each parameter tensor k gets its own generator seeded with ``seed + k``, so the direction
can be replayed tensor by tensor (memory: one tensor of noise at a time, not a model copy).

Also the storage of the weights the in-place estimators (MeZO, QuZO, qfo) share, the
``master_weights`` option (docs/estimators.md, QuZO, "Storage of θ̄"): ``fp32`` keeps the
float latent weights in the parameter tensor and updates them in float (the layer
fake-quantizes them in every forward); ``none`` snaps them onto the grid in ``prepare`` and
rounds every update stochastically onto the weight grid (``round_onto_weight_grid_``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from trainers.estimators.base import eval_mode
from trainers.quant.layers import quantized_layers

NoiseFn = Callable[[int, nn.Parameter], Tensor]
MasterWeights = Literal["fp32", "none"]  # one annotation for every estimator: one column type
MASTER_WEIGHTS = ("fp32", "none")


def check_choice(estimator: str, option: str, value: object, valid: Sequence[str]) -> None:
    """A one-line error for a string option outside its ``Literal`` choices."""
    if value not in valid:
        raise ValueError(f"{estimator}: {option} must be one of {', '.join(valid)} (got {value!r})")


def tensor_generator(seed: int, k: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed + k) % (2**63))


def gaussian_noise(seed: int) -> NoiseFn:
    """z_k ~ N(0, I) for tensor k, replayable from ``seed``."""

    def noise(k: int, p: nn.Parameter) -> Tensor:
        return torch.randn(
            p.shape, generator=tensor_generator(seed, k, p.device), dtype=p.dtype, device=p.device
        )

    return noise


@torch.no_grad()
def add_noise_(params: Sequence[nn.Parameter], noise: NoiseFn, scale: float) -> None:
    """theta_k += scale * z_k for every tensor, in place."""
    for k, p in enumerate(params):
        p.add_(noise(k, p), alpha=scale)


@torch.no_grad()
def loss_at(model: nn.Module, loss_fn, batch) -> float:
    inputs, targets = batch
    return float(loss_fn(model(inputs), targets))


def two_point_in_place(
    model: nn.Module,
    loss_fn,
    batch,
    params: Sequence[nn.Parameter],
    noise: NoiseFn,
    eps: float,
    restore: bool = True,
) -> tuple[float, float]:
    """L(theta + eps z) and L(theta - eps z), restoring theta afterwards (up to float rounding).

    Both forwards run in eval mode (BatchNorm statistics read-only, dropout off; see
    ``base.eval_mode``). ``restore=False`` leaves theta at theta - eps z, so a caller about
    to move along the same z anyway folds the restore into its update: one noise pass fewer.
    """
    add_noise_(params, noise, eps)
    with eval_mode(model):
        plus = loss_at(model, loss_fn, batch)
        add_noise_(params, noise, -2 * eps)
        minus = loss_at(model, loss_fn, batch)
    if restore:
        add_noise_(params, noise, eps)
    return plus, minus


# Stochastic rounding needs several tensor-sized temporaries (FP8's about 9); on a model
# dominated by one tensor they would set the step's peak memory, so rounding runs on at most
# 1/CHUNKS of the model at a time (in a large model every tensor is smaller: one piece each).
CHUNKS = 16
Rounding = Callable[[Tensor, torch.Generator], Tensor]


def round_in_chunks_(t: Tensor, rounding: Rounding, generator: torch.Generator, chunk: int) -> None:
    """``t <- rounding(t)`` in place, ``chunk`` elements at a time."""
    pieces = t.view(-1).split(chunk) if t.is_contiguous() and chunk < t.numel() else (t,)
    for part in pieces:
        part.copy_(rounding(part, generator))


@torch.no_grad()
def round_onto_weight_grid_(model: nn.Module, params: Sequence[nn.Parameter], seed: int) -> None:
    """Round each quantized weight among ``params`` stochastically onto its layer's grid, in
    place (``master_weights: none``); tensor k's coin flips replay from ``seed + k``. The
    scales must be frozen (``snap_to_grid``): a piece of a tensor cannot recompute them."""
    quantizers = {id(layer.weight): layer.weight_quantizer for _, layer in quantized_layers(model)}
    chunk = -(-sum(p.numel() for p in params) // CHUNKS)
    for k, p in enumerate(params):
        q = quantizers.get(id(p))
        if q is not None:  # a per-channel scale needs whole rows: that tensor in one piece
            whole = q.scale(p).numel() > 1
            generator = tensor_generator(seed, k, p.device)
            round_in_chunks_(p, q.round_stochastic, generator, p.numel() if whole else chunk)
