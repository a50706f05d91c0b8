"""A new estimator in one module, as a researcher would add one: its config dataclass and its
class. ``test_new_estimator`` adds the registry line (``register_estimator``) and checks that
its options reach the Parquet with nothing else edited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from trainers.estimators.base import Batch, Estimator, LossFn, StepResult, first_order_loss


@dataclass(frozen=True)
class DampedSTEConfig:
    default_lr: ClassVar[dict[str, float]] = {"sgd": 0.05, "adam": 0.001}

    damping: float = 0.5  # the STE gradient, scaled by this
    flavour: str = "plain"
    repeats: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.damping <= 1:
            raise ValueError(f"damped_ste: damping must be in (0, 1] (got {self.damping})")


class DampedSTE(Estimator):
    """STE with its gradient scaled by ``damping``: a stand-in for a new method."""

    name = "damped_ste"
    config_class = DampedSTEConfig

    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        loss = first_order_loss(model, loss_fn, batch)
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(self.config.damping)
        return self.result(loss, forwards=1, backwards=1)
