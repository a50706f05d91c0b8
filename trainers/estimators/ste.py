"""STE: one forward with quantized weights, one backward through the STE surrogate."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from trainers.estimators.base import Batch, Estimator, LossFn, StepResult, first_order_loss


@dataclass(frozen=True)
class STEConfig:
    """The surrogate itself is chosen by the quantizer (``QuantSpec.surrogate``)."""


class STE(Estimator):
    name = "ste"
    config_class = STEConfig

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        loss = first_order_loss(model, loss_fn, batch)
        return self.result(loss, forwards=1, backwards=1)
