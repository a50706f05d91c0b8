"""Gradient-quality diagnostics: how biased and how noisy is a trial's estimator?

At a probe, on one fixed probe batch, three things are compared in the flat parameter space:

- the reference: the gradient of the *smoothed quantized loss* ``E_u L(theta + eps u)``, as a
  large-n two-sided zeroth-order estimate with the trial's smoothing distribution
  (``perturbation_plan`` / ``zo_gradient``; eps_mode and eps of the trial's estimator when
  it has them, else ``alpha``);
- the STE gradient (deterministic);
- the trial's own estimator, drawn ``repeats`` times (p.grad for optimizer estimators; for
  in-place ones, MeZO/QuZO, the parameter change divided by ``-lr``).

For an estimate with mean ``m`` over the draws and reference ``r``: ``cosine(m, r)``,
``rel_bias = ||m - r|| / ||r||``, ``variance`` = trace of the covariance (squared deviation
from the mean summed over coordinates, averaged over draws with the unbiased ``R - 1``), and
``snr = ||m||^2 / variance``. ``ref_noise`` is the reference's own estimated relative error
``sqrt(trace Cov(ref)) / ||ref||`` (from its chunk means): cosines cannot exceed about
``1 / sqrt(1 + ref_noise^2)``.

Nothing here touches the trial: the probe runs on a deep copy of the model (parameters,
grads and BatchNorm buffers of the real model are never written), a shallow copy of the
estimator whose generator is replaced by the probe's own (seeded from the trial seed and
step), and its cost is reported under ``probe_*`` keys, never added to the trial's counters.
Pure torch, no Ray.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from contract.schema import DIAGNOSTIC_FIGURES
from trainers.estimators.base import (
    Batch,
    Estimator,
    LossFn,
    first_order_loss,
    trainable_parameters,
)
from trainers.estimators.perturb import perturbation_plan, sample_directions, zo_gradient

DEFAULTS: dict[str, Any] = {"every": 1, "batch_size": 256, "repeats": 16, "reference_n": None}
REFERENCE_CHUNKS = 8  # the reference is the mean of this many chunk means (for ref_noise)
_PROBE_SEED = 4_000_037

# Every figure a probe reports: the columns of the diagnostics table, in their order.
FIGURES = DIAGNOSTIC_FIGURES


def diagnostics_settings(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The validated settings (defaults filled in), or None when diagnostics are off."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise ValueError(f"diagnostics must be a mapping of {', '.join(DEFAULTS)}, got {options!r}")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"diagnostics: unknown key(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}"
        )
    settings = {**DEFAULTS, **options}
    for key, least in (("every", 1), ("batch_size", 1), ("repeats", 2), ("reference_n", 1)):
        value = settings[key]
        if value is None and key == "reference_n":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"diagnostics: {key} must be an integer >= {least}, got {value!r}")
    return settings


def default_reference_n(dim: int) -> int:
    return min(4 * dim, 4096)


def flatten(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def estimate_stats(draws: Tensor, reference: Tensor) -> dict[str, float]:
    """Figures of ``draws`` (``[R, d]``, R >= 1) against ``reference`` (``[d]``)."""
    draws, reference = draws.double(), reference.double()
    mean = draws.mean(0)
    r = draws.shape[0]
    variance = float(((draws - mean) ** 2).sum() / (r - 1)) if r > 1 else 0.0
    ref_norm, mean_norm = float(reference.norm()), float(mean.norm())
    cosine = (
        float(mean @ reference) / (mean_norm * ref_norm)
        if mean_norm > 0 and ref_norm > 0
        else math.nan
    )
    return {
        "cosine": cosine,
        "rel_bias": float((mean - reference).norm()) / ref_norm if ref_norm > 0 else math.nan,
        "variance": variance,
        "snr": mean_norm**2 / variance if variance > 0 else math.inf,
        "norm": mean_norm,
    }


def reference_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    n: int,
    generator: torch.Generator,
    eps_mode: str = "alpha",
    eps: float = 1e-3,
    chunk: int = 256,
    forward_flops: float | None = None,
) -> tuple[Tensor, float]:
    """Large-n two-sided ZO estimate of the smoothed loss's gradient (flat) and its relative
    noise. Eval-mode forwards: buffers are never updated. Spends ``2n`` forwards."""
    plan = perturbation_plan(model, eps_mode, eps)
    parts = max(1, min(REFERENCE_CHUNKS, n))
    sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    means = []
    for size in sizes:
        grads, _ = zo_gradient(
            model,
            loss_fn,
            batch,
            plan,
            size,
            lambda k: sample_directions(plan, k, generator),
            min(chunk, size),
            forward_flops=forward_flops,
        )
        means.append(flatten(grads) * size)
    reference = torch.stack(means).sum(0) / n
    if (
        parts > 1
    ):  # chunk means, weighted by size: variance of the mean ~ var of chunk means / parts
        chunk_means = torch.stack([m / s for m, s in zip(means, sizes)])
        noise = float(((chunk_means - reference) ** 2).sum() / (parts - 1) / parts)
        ref_noise = (
            math.sqrt(noise) / float(reference.norm()) if float(reference.norm()) > 0 else math.nan
        )
    else:
        ref_noise = math.nan
    return reference, ref_noise


def ste_gradient(model: nn.Module, loss_fn: LossFn, batch: Batch) -> Tensor:
    """The STE gradient (flat); leaves it in ``p.grad`` of ``model`` (use a copy)."""
    first_order_loss(model, loss_fn, batch)
    return flatten(
        [
            p.grad if p.grad is not None else torch.zeros_like(p)
            for _, p in trainable_parameters(model)
        ]
    )


def estimator_draws(
    estimator: Estimator,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    progress: float,
    repeats: int,
    generator: torch.Generator,
) -> tuple[Tensor, int, int]:
    """``repeats`` estimates (``[R, d]``) of the estimator at ``model``'s current point.

    Each draw runs on a fresh deep copy of ``model`` (which is never written) with a shallow
    copy of the estimator that draws from ``generator``. In-place estimators: the estimate
    is the parameter change divided by ``-lr`` (``lr`` 1 if the trial's is 0). Returns the
    draws and the forwards/backwards spent."""
    probe_est = copy.copy(estimator)
    probe_est.generator = generator
    if estimator.updates_in_place and not estimator.lr:
        probe_est.lr = 1.0
    draws, forwards, backwards = [], 0, 0
    for _ in range(repeats):
        work = copy.deepcopy(model)
        work.zero_grad(set_to_none=True)
        params = [p for _, p in trainable_parameters(work)]
        before = flatten(params)
        result = probe_est.step(work, loss_fn, batch, progress)
        forwards, backwards = forwards + result.forwards, backwards + result.backwards
        if estimator.updates_in_place:
            draws.append((flatten(params) - before) / -probe_est.lr)
        else:
            draws.append(
                flatten([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
            )
    return torch.stack(draws), forwards, backwards


def probe(
    model: nn.Module,
    estimator: Estimator,
    loss_fn: LossFn,
    batch: Batch,
    progress: float,
    settings: Mapping[str, Any],
    seed: int,
    step: int,
    train_batch_size: int | None = None,
) -> dict[str, float]:
    """One probe at ``model``'s current point: a flat dict of floats (``FIGURES``).

    The model, its grads and buffers, and the estimator's generator are left untouched.
    ``train_batch_size`` (the batch the estimator's FLOP costs were measured on) rescales
    the probe's FLOPs to its own batch size."""
    with torch.random.fork_rng(devices=[]):  # belt and braces: the global RNG is left as it was
        return _probe(
            model, estimator, loss_fn, batch, progress, settings, seed, step, train_batch_size
        )


def _probe(
    model: nn.Module,
    estimator: Estimator,
    loss_fn: LossFn,
    batch: Batch,
    progress: float,
    settings: Mapping[str, Any],
    seed: int,
    step: int,
    train_batch_size: int | None,
) -> dict[str, float]:
    started = time.perf_counter()
    device = next(model.parameters()).device  # a CUDA model's noise needs a CUDA generator
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step + _PROBE_SEED) % (2**62))
    work = copy.deepcopy(model)
    dim = sum(p.numel() for _, p in trainable_parameters(work))
    ref_n = settings.get("reference_n") or default_reference_n(dim)
    cfg = estimator.config
    eps_mode, eps = getattr(cfg, "eps_mode", "alpha"), getattr(cfg, "eps", 1e-3)
    cost = estimator.cost
    reference, ref_noise = reference_gradient(
        work, loss_fn, batch, ref_n, generator, eps_mode, eps, forward_flops=cost.forward_flops
    )
    ste = ste_gradient(work, loss_fn, batch).unsqueeze(0)
    draws, forwards, backwards = estimator_draws(
        estimator, model, loss_fn, batch, progress, int(settings["repeats"]), generator
    )
    forwards += 2 * ref_n + 1
    backwards += 1
    figures: dict[str, float] = {}
    for prefix, samples in (("est", draws), ("ste", ste)):
        figures.update({f"{prefix}_{k}": v for k, v in estimate_stats(samples, reference).items()})
    # The probe batch can differ in size from a training batch: scale the per-pass FLOPs.
    scale = len(batch[0]) / train_batch_size if train_batch_size else 1.0
    figures.update(
        ref_norm=float(reference.norm()),
        ref_noise=ref_noise,
        ref_n=float(ref_n),
        repeats=float(settings["repeats"]),
        probe_batch_size=float(len(batch[0])),
        dim=float(dim),
        probe_forwards=float(forwards),
        probe_backwards=float(backwards),
        probe_flops=float(cost.flops(forwards, backwards) * scale),
        probe_wall_s=time.perf_counter() - started,
    )
    return {k: float(figures[k]) for k in FIGURES}
