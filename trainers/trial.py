"""``run_trial``: train one configuration and report its curve.

Reads top to bottom like a training script: build data, model, quantizer, estimator and
optimizer; loop until the step or FLOP budget is spent; evaluate at evenly spaced points
of the budget and hand every evaluation to ``report``. No Ray here — the sweep service
wraps this function, and anything else (a notebook, a test, ``python -m trainers.run``)
can call it directly.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from contract.errors import TrialDiverged  # noqa: F401 - raised here, defined torch-free
from contract.record import Evaluation
from trainers.checkpoints import load_model, save_model
from trainers.config import TrialConfig
from trainers.data import BatchSampler, load_dataset
from trainers.data.validation import hold_out_validation
from trainers.diagnostics import probe as diagnostics_probe
from trainers.estimators import build_estimator
from trainers.inputs import dataset_call_options, model_call_options
from trainers.metering import measure_cost, track_peak_memory
from trainers.models import build_model
from trainers.quant import precision_summary, quantize_model
from trainers.schedule import lr_at
from trainers.tasks import TASKS

Report = Callable[..., None]

# Seed offsets keep the model init, the batch order and the estimator's noise independent.
_SAMPLER_SEED, _ESTIMATOR_SEED, _AUGMENT_SEED = 1_000_003, 2_000_029, 3_000_017


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def make_optimizer(cfg: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def run_trial(
    config: TrialConfig | Mapping[str, Any],
    report: Report,
    *,
    resume_state: dict[str, Any] | None = None,
    save_state: bool = False,
) -> dict[str, Any]:
    """Train one configuration; call ``report(metrics)`` at every evaluation.

    Metrics: step, forwards, backwards, flops (cumulative), wall_s (training time, not
    evaluation), train_loss (mean since the previous evaluation), eval_loss, eval_metric
    (accuracy, or perplexity for language models; named by metric_name), peak_memory_bytes,
    num_params, progress in [0, 1], ``current_lr`` (the lr of the last step, after
    ``lr_schedule`` / ``warmup``; at step 0 the first step's), the estimator's ``describe()``
    figures when it has that method, and ``done`` on the last. The first report of each call
    also carries ``layer_bits``: every layer's effective precision as short JSON
    (``trainers.quant.precision_summary``).
    With ``cfg.diagnostics`` every ``every``-th evaluation also carries ``diagnostics``: the
    gradient-quality probe's flat dict of floats (``trainers.diagnostics``).

    With ``save_state`` the call is ``report(metrics, state=...)`` carrying everything
    needed to continue (model, optimizer, estimator RNG, batch order, counters); passing
    that dict back as ``resume_state`` continues the run exactly. Deterministic per seed.
    Returns the last metrics. Raises ``TrialDiverged`` on a NaN/inf loss.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    data = load_dataset(
        cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed, **dataset_call_options(cfg)
    )
    if cfg.eval_split == "validation":  # tuning: held-out training examples, never the test set
        data = hold_out_validation(data, cfg.validation_fraction)
    hints = getattr(data, "model_hints", None) or {}  # vocabulary, pad id, label-word ids
    with torch.random.fork_rng(devices=[]):  # model init is the only user of the global RNG
        torch.manual_seed(cfg.seed)
        model = build_model(
            cfg.model, data.input_shape, data.num_classes, **model_call_options(cfg, hints)
        )
    if cfg.init_from:  # pre-trained float weights, then quantize (a fixed scale is taken from them)
        load_model(model, cfg.init_from)
    quantize_model(model, cfg.quant_spec()).to(device)
    model.train()
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    sampler = BatchSampler(len(train_x), cfg.batch_size, cfg.seed + _SAMPLER_SEED)
    task = TASKS[data.task]
    loss_fn = task.loss_fn
    augment_gen = torch.Generator().manual_seed(cfg.seed + _AUGMENT_SEED)

    # Cost of one pass on a full training batch, measured once (docs/estimators.md).
    probe = torch.arange(min(cfg.batch_size, len(train_x)), device=device)
    cost = measure_cost(model, loss_fn, (train_x[probe], train_y[probe]))
    estimator = build_estimator(
        cfg.estimator, cfg.estimator_config, cost, cfg.seed + _ESTIMATOR_SEED, device=device
    )
    estimator.prepare(model)
    optimizer = None if estimator.updates_in_place else make_optimizer(cfg, model)

    num_params = sum(p.numel() for p in model.parameters())
    diagnostics = cfg.diagnostics_settings()  # None: no gradient-quality probe
    if diagnostics is not None:  # one fixed probe batch: the first batch_size training examples
        probe_batch = (train_x[: diagnostics["batch_size"]], train_y[: diagnostics["batch_size"]])
    counters = {"step": 0, "forwards": 0, "backwards": 0, "flops": 0.0, "wall_s": 0.0}
    peak_memory, next_eval, losses = 0, 1, []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
        estimator.load_state_dict(resume_state["estimator"])
        sampler.load_state_dict(resume_state["sampler"])
        augment_gen.set_state(resume_state["augment"])
        counters.update(resume_state["counters"])
        peak_memory, next_eval = resume_state["peak_memory"], resume_state["next_eval"]

    def progress() -> float:
        by_steps = counters["step"] / cfg.steps if cfg.steps else 0.0
        by_flops = counters["flops"] / cfg.flops if cfg.flops else 0.0
        return max(by_steps, by_flops)

    def set_lr() -> float:
        """The scheduled lr for the coming step, written where the update reads it."""
        lr = lr_at(cfg.lr, cfg.lr_schedule, cfg.warmup, progress())
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
        if estimator.updates_in_place:  # MeZO, QuZO, QFO: no optimizer, they read their own lr
            estimator.lr = lr
        return lr

    current_lr = lr_at(cfg.lr, cfg.lr_schedule, cfg.warmup, progress())
    layer_bits = precision_summary(
        model
    )  # reported once per call: first / last / exclude overrides

    def emit(done: bool) -> dict[str, Any]:
        nonlocal layer_bits
        eval_loss, eval_metric = task.evaluate(model, test_x, test_y, cfg.eval_batch_size)
        describe = getattr(estimator, "describe", None)
        metrics: Evaluation = {
            **(describe() if describe is not None else {}),  # never overrides the keys below
            **counters,
            "train_loss": sum(losses) / len(losses) if losses else math.nan,
            "eval_loss": eval_loss,
            "eval_metric": eval_metric,
            "peak_memory_bytes": peak_memory,
            "num_params": num_params,
            "metric_name": task.metric_name,
            "progress": min(progress(), 1.0),
            "current_lr": current_lr,
            "done": done,
        }
        if layer_bits is not None:
            metrics["layer_bits"], layer_bits = layer_bits, None
        losses.clear()
        if diagnostics is not None and (next_eval - 1) % diagnostics["every"] == 0:
            # Never touches the model, its buffers or the estimator's RNG; cost kept apart.
            metrics["diagnostics"] = diagnostics_probe(
                model,
                estimator,
                loss_fn,
                probe_batch,
                progress(),
                diagnostics,
                cfg.seed,
                counters["step"],
                len(probe),
            )
        if save_state:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer else None,
                "estimator": estimator.state_dict(),
                "sampler": sampler.state_dict(),
                "augment": augment_gen.get_state(),
                "counters": dict(counters),
                "peak_memory": peak_memory,
                "next_eval": next_eval,
            }
            report(
                metrics, state=copy.deepcopy(state)
            )  # a snapshot: training mutates these tensors
        else:
            report(metrics)
        return metrics

    metrics = emit(done=False) if resume_state is None else {}
    while progress() < 1.0:
        idx = sampler.next_indices().to(device)
        inputs = train_x[idx]
        if data.augment is not None:
            inputs = data.augment(inputs, augment_gen)
        batch = (inputs, train_y[idx])
        current_lr = set_lr()  # from progress, which the counters restore: a resume replays it

        def train_step(batch=batch):
            result = estimator.step(model, loss_fn, batch, progress())
            if optimizer is not None:
                optimizer.step()
            return result

        started = time.perf_counter()
        if counters["step"] < 2:
            # Peak memory over the first two steps: Adam-like optimizers create their state
            # inside the first step, so only from the second is it live through the backward.
            result, peak = track_peak_memory(
                train_step, [m for m in (model, optimizer) if m], device
            )
            peak_memory = max(peak_memory, peak)
        else:
            result = train_step()
        counters["wall_s"] += time.perf_counter() - started
        if not math.isfinite(result.loss):
            raise TrialDiverged(
                f"{cfg.estimator}: training loss became {result.loss} "
                f"at step {counters['step'] + 1}"
            )
        counters["step"] += 1
        counters["forwards"] += result.forwards
        counters["backwards"] += result.backwards
        counters["flops"] += result.flops
        losses.append(result.loss)
        finished = progress() >= 1.0
        if finished and cfg.save_model_to:
            # Before the last report: a runner may stop the trial as soon as it sees done.
            save_model(model, cfg.save_model_to)
        if finished or progress() * cfg.num_evals >= next_eval:
            next_eval = math.floor(progress() * cfg.num_evals) + 1
            metrics = emit(done=finished)
    return metrics
