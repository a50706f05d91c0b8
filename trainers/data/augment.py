"""Batched image augmentation in torch, for the ``DataSplits.augment`` hook.

The trial loop indexes in-memory tensors, so augmentation runs on a whole mini-batch on
the training device, drawing every random choice from the trial's ``torch.Generator``:
the same seed gives the same crops and flips, which keeps trials reproducible and
resumable (the generator state is checkpointed with the trial).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def normalised_black(mean: Sequence[float], std: Sequence[float]) -> tuple[float, ...]:
    """Per-channel value of a black (0) pixel after ``(x - mean) / std``.

    torchvision pads the raw image with 0 before normalising; padding normalised
    tensors with this value gives exactly the same result.
    """
    return tuple(-m / s for m, s in zip(mean, std))


@dataclass(frozen=True)
class RandomCropFlip:
    """``RandomCrop(size, padding)`` + ``RandomHorizontalFlip(0.5)`` on ``[B, C, H, W]``.

    Each image gets its own offset in ``0..2*padding`` per axis and its own coin for the
    flip. ``fill`` (one value per channel) is what the padding border shows.
    """

    padding: int
    fill: tuple[float, ...]

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        if len(self.fill) != c:
            raise ValueError(f"RandomCropFlip: fill has {len(self.fill)} values for {c} channels")
        p = self.padding
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        # The generator may be a CPU one while x lives on the GPU: draw on CPU, then move.
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator, device=generator.device)
        flip = torch.randint(0, 2, (b, 1), generator=generator, device=generator.device).bool()
        rows = offsets[:, :1] + torch.arange(h, device=generator.device)
        cols = offsets[:, 1:] + torch.arange(w, device=generator.device)
        cols = torch.where(flip, cols.flip(1), cols)  # flipping the crop = reading it backwards
        rows, cols = rows.to(x.device), cols.to(x.device)
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        # Advanced indices around a slice put their dims first: [B, H, W, C].
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
