"""What a trial optimises and reports: the loss and the evaluation metric of each task.

Classification reports accuracy; language modelling reports perplexity, ``exp`` of the
mean token cross-entropy. The metric's name travels with the results, and
``contract.metrics`` says which way it is better, so analysis never guesses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def classification_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits, targets)


def token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy; logits ``[B, T, V]``, targets ``[B, T]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclass(frozen=True)
class Task:
    name: str
    metric_name: str  # one of contract.metrics.METRIC_NAMES, which says which way is better

    @property
    def loss_fn(self):
        return token_loss if self.name == "language_modeling" else classification_loss

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int
    ) -> tuple[float, float]:
        """Mean loss and the task metric over a whole split, with the quantized forward."""
        was_training = model.training
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            flat_logits = logits.reshape(-1, logits.shape[-1])
            loss_sum += float(F.cross_entropy(flat_logits, target.reshape(-1), reduction="sum"))
            correct += int((flat_logits.argmax(-1) == target.reshape(-1)).sum())
            count += target.numel()
        model.train(was_training)
        loss = loss_sum / count
        if self.name == "language_modeling":
            return loss, math.exp(min(loss, 50.0))
        return loss, correct / count


TASKS = {
    "classification": Task("classification", "accuracy"),
    "language_modeling": Task("language_modeling", "perplexity"),
}
