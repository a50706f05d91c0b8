"""A small BatchNorm-free CNN for (C, H, W) images."""

from __future__ import annotations

from torch import nn


def build_cnn(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16) -> nn.Sequential:
    """conv(C,w) -> ReLU -> conv(w,2w,stride 2) -> ReLU -> avgpool(4) -> Linear(2w*16, K).

    No BatchNorm on purpose: zeroth-order estimators evaluate perturbed parameter copies
    with `torch.func.vmap`, and BatchNorm's in-place running-stat updates break under vmap.
    The adaptive pool makes the head size independent of H and W (8x8 digits, 28x28 MNIST).
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"cnn needs a (C, H, W) input_shape, got {tuple(input_shape)}; "
            f"use 'mlp' for flat features"
        )
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(2 * width * 16, num_classes),
    )
