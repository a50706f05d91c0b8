"""``run_trial``: train one configuration and report its curve.

Reads top to bottom like a training script: build data, model, quantizer, estimator and
optimizer; loop until the step or FLOP budget is spent; evaluate at evenly spaced points
of the budget and hand every evaluation to ``report``. The counters, the evaluation
schedule and the checkpoint format live in ``trainers.trial_state``. No Ray here — the sweep service
wraps this function, and anything else (a notebook, a test, ``python -m trainers.run``)
can call it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from contract.errors import TrialDiverged  # noqa: F401 - importable from here, defined torch-free
from contract.record import Evaluation
from trainers.checkpoints import load_model, save_model
from trainers.config import TrialConfig
from trainers.data import BatchSampler, load_dataset
from trainers.data.validation import hold_out_validation
from trainers.diagnostics import probe as diagnostics_probe
from trainers.estimators import build_estimator
from trainers.inputs import dataset_call_options, model_call_options
from trainers.metering import measure_cost
from trainers.models import build_model
from trainers.quant import quantize_model
from trainers.tasks import TASKS
from trainers.trial_state import TrialState

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

    diagnostics = cfg.diagnostics_settings()  # None: no gradient-quality probe
    if diagnostics is not None:  # one fixed probe batch: the first batch_size training examples
        probe_batch = (train_x[: diagnostics["batch_size"]], train_y[: diagnostics["batch_size"]])

    state = TrialState(cfg, model, optimizer, estimator, sampler, augment_gen)
    if resume_state is not None:
        state.restore(resume_state)

    def evaluate(done: bool) -> Evaluation:
        """Score the test split and hand the record (and, with save_state, a snapshot) on."""
        eval_loss, eval_metric = task.evaluate(model, test_x, test_y, cfg.eval_batch_size)
        metrics = state.metrics(eval_loss, eval_metric, task.metric_name, done=done)
        if diagnostics is not None and state.eval_point % diagnostics["every"] == 0:
            # Never touches the model, its buffers or the estimator's RNG; cost kept apart.
            metrics["diagnostics"] = diagnostics_probe(
                model,
                estimator,
                loss_fn,
                probe_batch,
                state.progress(),
                diagnostics,
                cfg.seed,
                state.counters["step"],
                len(probe),
            )
        if save_state:
            report(metrics, state=state.snapshot())
        else:
            report(metrics)
        return metrics

    metrics = evaluate(done=False) if resume_state is None else {}
    while state.progress() < 1.0:
        idx = sampler.next_indices().to(device)
        inputs = train_x[idx]
        if data.augment is not None:
            inputs = data.augment(inputs, augment_gen)
        batch = (inputs, train_y[idx])
        state.set_lr()
        result = state.step(loss_fn, batch, device)
        state.record(result)  # raises TrialDiverged on a NaN/inf loss
        finished = state.progress() >= 1.0
        if finished and cfg.save_model_to:
            # Before the last report: a runner may stop the trial as soon as it sees done.
            save_model(model, cfg.save_model_to)
        if finished or state.due_for_eval():
            state.schedule_next_eval()
            metrics = evaluate(done=finished)
    return metrics
