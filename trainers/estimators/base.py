"""The one small interface every gradient estimator implements, and its cost accounting."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class CostModel:
    """FLOPs of one forward and one backward pass on a training mini-batch.

    Measured once per model with ``FlopCounterMode``; a backward that could not be
    measured counts as two forwards (docs/estimators.md).
    """

    forward_flops: float
    backward_flops: float

    def flops(self, forwards: int, backwards: int) -> float:
        return forwards * self.forward_flops + backwards * self.backward_flops


@dataclass(frozen=True)
class StepResult:
    """What one estimator step cost and the mini-batch loss it saw."""

    loss: float
    forwards: int
    backwards: int
    flops: float


class Estimator(ABC):
    """A gradient estimator.

    ``step`` either fills ``p.grad`` for an ordinary torch optimizer to apply, or (when
    ``updates_in_place``) applies the update itself and keeps no optimizer state. An in-place
    estimator says so, and its config has the ``lr`` field: the trial's optimizer settings
    (optimizer, momentum, weight_decay) would not take effect, so a trial rejects them.
    Randomness comes only from ``self.generator`` so a trial is reproducible and resumable.
    A new estimator is one module (its config dataclass and this class) plus its line in
    ``trainers.estimators.ESTIMATORS``; its options become Parquet columns by themselves.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    updates_in_place: ClassVar[bool] = False

    def __init__(self, config: Any, cost: CostModel, generator: torch.Generator):
        self.config = config
        self.cost = cost
        self.generator = generator
        # In-place estimators read their step size here; the trial's lr schedule moves it.
        self.lr: float | None = getattr(config, "lr", None)

    def prepare(self, model: nn.Module) -> None:
        """Called once before training (QuZO snaps its weights onto the grid here)."""

    def describe(self) -> dict[str, float | int]:
        """Settings that exist only once the model is known (after ``prepare``), for the
        trial's reports: e.g. FOGZO's ``d_zo`` and its effective ``beta_min`` under ``auto``."""
        return {}

    @abstractmethod
    def step(self, model: nn.Module, loss_fn: LossFn, batch: Batch, progress: float) -> StepResult:
        """One step on ``batch``; ``progress`` in [0, 1] is the fraction of the budget used."""

    def result(self, loss: float, forwards: int, backwards: int) -> StepResult:
        return StepResult(float(loss), forwards, backwards, self.cost.flops(forwards, backwards))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def first_order_loss(model: nn.Module, loss_fn: LossFn, batch: Batch) -> Tensor:
    """Forward + backward with the STE surrogate; leaves the gradient in ``p.grad``."""
    model.zero_grad(set_to_none=True)
    inputs, targets = batch
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    return loss.detach()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with every module in ``eval()``, then give each module back its own mode.

    Perturbed (zeroth-order) forwards run here, as MeZO's reference code does: BatchNorm
    reads its running statistics and never writes them, dropout is off, so the 2n losses of
    a step differ only by their perturbations (docs/estimators.md).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def draw_seed(generator: torch.Generator) -> int:
    """A fresh 62-bit seed from the estimator's generator (for regenerate-from-seed tricks)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
