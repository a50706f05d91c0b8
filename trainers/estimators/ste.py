"""STE: one forward with quantized weights, one backward through the STE surrogate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from trainers.estimators.base import Batch, Estimator, LossFn, StepResult, first_order_loss


@dataclass(frozen=True)
class STEConfig:
    """The surrogate itself is chosen by the quantizer (``QuantSpec.surrogate``)."""

    # lr when a trial sets none, per optimizer: measured on the MLP (digits, a 30-feature
    # table; 2/4/8 bits), >= 10x below where training degraded (docs/estimators.md, "Default
    # learning rates").
    default_lr: ClassVar[dict[str, float]] = {"sgd": 0.02, "adam": 1e-3}


class STE(Estimator):
    name = "ste"
    config_class = STEConfig

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        loss = first_order_loss(model, loss_fn, batch)
        return self.result(loss, forwards=1, backwards=1)
