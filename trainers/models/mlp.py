"""The FOGZO paper's 2-layer MLP, the reference model for estimator comparisons."""

from __future__ import annotations

import math

from torch import nn


def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 10, bias: bool = True
) -> nn.Sequential:
    """flatten -> Linear(in, hidden) -> ReLU -> Linear(hidden, num_classes).

    `hidden=10` matches the paper, keeping d small (64-10-10 on digits has 750 parameters)
    so zeroth-order estimators, whose variance grows with d, stay usable.
    """
    in_features = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden, bias=bias),
        nn.ReLU(),
        nn.Linear(hidden, num_classes, bias=bias),
    )
