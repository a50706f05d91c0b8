"""``TrialState``: what one trial carries from step to step, and what a checkpoint holds.

Kept out of ``run_trial`` so that function reads as a training script: the counters, the
peak memory, the evaluation schedule and the losses since the last evaluation live here,
with the only code that writes them. ``snapshot`` / ``restore`` define the checkpoint
format; its keys are fixed, since checkpoints written by earlier versions must still load.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from contract.errors import TrialDiverged
from contract.record import Evaluation
from trainers.config import TrialConfig
from trainers.data import BatchSampler
from trainers.estimators.base import Batch, Estimator, LossFn, StepResult
from trainers.metering import track_peak_memory
from trainers.quant import precision_summary
from trainers.schedule import lr_at


def _zero_counters() -> dict[str, float]:
    return {"step": 0, "forwards": 0, "backwards": 0, "flops": 0.0, "wall_s": 0.0}


@dataclass(eq=False)
class TrialState:
    """The trial's resumable parts (held by reference) and its running figures.

    ``counters`` are cumulative over the whole trial, across resumes; ``losses`` only since
    the previous evaluation (``train_loss`` is their mean); ``next_eval`` is the index of the
    next evenly spaced evaluation point of the budget.
    """

    cfg: TrialConfig = field(repr=False)
    model: nn.Module = field(repr=False)
    optimizer: torch.optim.Optimizer | None = field(repr=False)
    estimator: Estimator = field(repr=False)
    sampler: BatchSampler = field(repr=False)
    augment_gen: torch.Generator = field(repr=False)
    counters: dict[str, float] = field(default_factory=_zero_counters, init=False)
    peak_memory: int = field(default=0, init=False)
    next_eval: int = field(default=1, init=False)
    losses: list[float] = field(default_factory=list, init=False)
    num_params: int = field(init=False)
    layer_bits: str | None = field(init=False)  # pending: sent with the first report, then None
    current_lr: float = field(init=False)  # the lr of the last step (before any, the first's)

    def __post_init__(self) -> None:
        # Both depend on the model's structure only, so a restore leaves them as they are.
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.layer_bits = precision_summary(self.model)  # every layer's first/last/exclude
        self.current_lr = self._scheduled_lr()

    def progress(self) -> float:
        """The fraction of the budget spent: steps or FLOPs, whichever runs out first."""
        by_steps = self.counters["step"] / self.cfg.steps if self.cfg.steps else 0.0
        by_flops = self.counters["flops"] / self.cfg.flops if self.cfg.flops else 0.0
        return max(by_steps, by_flops)

    def restore(self, resume_state: Mapping[str, Any]) -> None:
        """Load a ``snapshot``: weights, optimizer, estimator RNG, batch order, counters."""
        self.model.load_state_dict(resume_state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(resume_state["optimizer"])
        self.estimator.load_state_dict(resume_state["estimator"])
        self.sampler.load_state_dict(resume_state["sampler"])
        self.augment_gen.set_state(resume_state["augment"])
        self.counters.update(resume_state["counters"])
        self.peak_memory, self.next_eval = resume_state["peak_memory"], resume_state["next_eval"]
        self.current_lr = self._scheduled_lr()

    def snapshot(self) -> dict[str, Any]:
        """Everything ``restore`` needs, deep-copied: training goes on mutating these tensors."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "estimator": self.estimator.state_dict(),
            "sampler": self.sampler.state_dict(),
            "augment": self.augment_gen.get_state(),
            "counters": dict(self.counters),
            "peak_memory": self.peak_memory,
            "next_eval": self.next_eval,
        }
        return copy.deepcopy(state)

    def _scheduled_lr(self) -> float:
        return lr_at(self.cfg.lr, self.cfg.lr_schedule, self.cfg.warmup, self.progress())

    def set_lr(self) -> float:
        """The scheduled lr for the coming step, written where the update reads it.

        Computed from progress, which the counters restore: a resume replays the schedule.
        """
        self.current_lr = lr = self._scheduled_lr()
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if self.estimator.updates_in_place:  # MeZO, QuZO, QFO: no optimizer, they read their own
            self.estimator.lr = lr
        return lr

    def step(self, loss_fn: LossFn, batch: Batch, device: torch.device) -> StepResult:
        """One update (estimator, then optimizer), timed into ``wall_s``.

        Peak memory is taken over the first two steps: Adam-like optimizers create their state
        inside the first step, so only from the second is it live through the backward.
        """
        progress = self.progress()

        def train_step() -> StepResult:
            result = self.estimator.step(self.model, loss_fn, batch, progress)
            if self.optimizer is not None:
                self.optimizer.step()
            return result

        started = time.perf_counter()
        if self.counters["step"] < 2:
            tracked = [m for m in (self.model, self.optimizer) if m]
            result, peak = track_peak_memory(train_step, tracked, device)
            self.peak_memory = max(self.peak_memory, peak)
        else:
            result = train_step()
        self.counters["wall_s"] += time.perf_counter() - started
        return result

    def record(self, result: StepResult) -> None:
        """Count a finished step; a NaN/inf loss ends the trial with ``TrialDiverged``."""
        if not math.isfinite(result.loss):
            raise TrialDiverged(
                f"{self.cfg.estimator}: training loss became {result.loss} "
                f"at step {self.counters['step'] + 1}"
            )
        self.counters["step"] += 1
        self.counters["forwards"] += result.forwards
        self.counters["backwards"] += result.backwards
        self.counters["flops"] += result.flops
        self.losses.append(result.loss)

    def due_for_eval(self) -> bool:
        """Whether progress has reached the next of ``num_evals`` evenly spaced points."""
        return self.progress() * self.cfg.num_evals >= self.next_eval

    def schedule_next_eval(self) -> None:
        """Aim at the first evenly spaced point past the current progress (none is repeated)."""
        self.next_eval = math.floor(self.progress() * self.cfg.num_evals) + 1

    @property
    def eval_point(self) -> int:
        """The evenly spaced point the latest evaluation reached: 0 at the start."""
        return self.next_eval - 1

    def metrics(
        self, eval_loss: float, eval_metric: float, metric_name: str, *, done: bool
    ) -> Evaluation:
        """One evaluation's record (see ``run_trial``); starts a new ``train_loss`` window.

        ``layer_bits`` rides on the first record of each call only: it never changes.
        """
        describe = getattr(self.estimator, "describe", None)
        metrics: Evaluation = {
            **(describe() if describe is not None else {}),  # never overrides the keys below
            **self.counters,
            "train_loss": sum(self.losses) / len(self.losses) if self.losses else math.nan,
            "eval_loss": eval_loss,
            "eval_metric": eval_metric,
            "peak_memory_bytes": self.peak_memory,
            "num_params": self.num_params,
            "metric_name": metric_name,
            "progress": min(self.progress(), 1.0),
            "current_lr": self.current_lr,
            "done": done,
        }
        if self.layer_bits is not None:
            metrics["layer_bits"], self.layer_bits = self.layer_bits, None
        self.losses.clear()
        return metrics
