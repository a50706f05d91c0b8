"""MeZO's seed trick: a direction is never stored, only the seed that regenerates it.

Each parameter tensor k gets its own generator seeded with ``seed + k``, so the direction
can be replayed tensor by tensor (memory: one tensor of noise at a time, not a model copy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from trainers.estimators.base import eval_mode

NoiseFn = Callable[[int, nn.Parameter], Tensor]


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
