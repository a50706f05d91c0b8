"""Shared machinery of the zeroth-order estimators: per-tensor smoothing scales, direction
sampling, and batched evaluation of many perturbed losses with ``torch.func.vmap``.

Every perturbed forward runs in ``eval()`` mode (``base.eval_mode``): BatchNorm uses its
running statistics read-only and dropout is off, so the buffers need no per-evaluation
copies and the 2n losses of a step differ only by their perturbations.

A model whose forward cannot run under ``vmap`` says so with the class or instance
attribute ``supports_vmap = False`` (``vmap_allowed``): its perturbed losses are then always
evaluated in the loop of plain forwards, with no attempt and no warning. Without the
attribute vmap is tried, and a class it fails for falls back to the loop (with a warning,
once per class).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainers.estimators.base import Batch, LossFn, eval_mode, trainable_parameters
from trainers.quant import functional as qf
from trainers.quant.layers import quantized_layers

EPS_MODES = ("alpha", "fixed")


@dataclass
class Perturbable:
    """One trainable tensor: its smoothing scale ``eps`` (broadcastable) and noise shape."""

    name: str
    param: nn.Parameter
    eps: Tensor
    noise_kind: str


def perturbation_plan(
    model: nn.Module, eps_mode: str, eps: float, only: Collection[str] | None = None
) -> list[Perturbable]:
    """Per-tensor perturbation scales (of the trainable tensors named in ``only``, if given).

    ``alpha``: a quantized weight is perturbed by ``alpha_l * eps_bar * u`` with ``alpha_l``
    its grid step and ``u`` unit-variance noise matched to the STE surrogate (the table in
    docs/estimators.md); float tensors (biases, LSQ steps) use the mean of those scales.
    ``fixed``: every tensor uses ``eps`` with the same noise shapes.
    """
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode {eps_mode!r} is not one of {', '.join(EPS_MODES)}")
    # By tensor, not by name: a tied weight (embedding = LM head) is listed under its first
    # name only, and a wrapper (LoRA) renames the layer that quantizes it.
    quantized = {id(layer.weight): layer for _, layer in quantized_layers(model)}
    params = [(name, p) for name, p in trainable_parameters(model) if only is None or name in only]
    scales: dict[str, Tensor] = {}
    for name, p in params:
        layer = quantized.get(id(p))
        if layer is not None and eps_mode == "alpha":
            quantizer = layer.weight_quantizer
            scales[name] = quantizer.step_size(p.detach()) * quantizer.noise_std_per_step
    # Float tensors (biases, LSQ steps) join at the quantized tensors' mean scale: a much
    # smaller eps would divide every other tensor's loss change by it and blow up variance.
    total = sum(p.numel() for name, p in params if name in scales)
    float_eps = (
        sum(float(s.expand_as(dict(params)[n]).sum()) for n, s in scales.items()) / total
        if total
        else eps
    )
    plan = []
    for name, p in params:
        layer = quantized.get(id(p))
        kind = layer.weight_quantizer.noise_kind if layer is not None else "gaussian"
        scale = scales.get(name, torch.tensor(float_eps, dtype=p.dtype, device=p.device))
        plan.append(Perturbable(name, p, scale, kind))
    return plan


def sample_directions(plan: list[Perturbable], n: int, generator: torch.Generator) -> list[Tensor]:
    """``n`` unit-variance directions per tensor, shape ``[n, *param.shape]``."""
    return [
        qf.sample_unit_noise(
            item.noise_kind, (n, *item.param.shape), generator, item.param.dtype, item.param.device
        )
        for item in plan
    ]


def _loop_losses(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    names: list[str],
    base: dict[str, Tensor],
    deltas: list[Tensor],
) -> Tensor:
    """The reference (and fallback) evaluation: one eval-mode forward per row of ``deltas``.

    Each forward is the model's own, with every parameter's ``.data`` pointed at the
    perturbed tensor and pointed back afterwards: exact, and without ``functional_call``'s
    re-binding, which costs more than a small model's whole forward.
    """
    inputs, targets = batch
    m = deltas[0].shape[0]
    slots = {name: model.get_parameter(name) for name in names}
    originals = {name: t.data for name, t in slots.items()}
    out = []
    try:
        with torch.no_grad(), eval_mode(model):
            for j in range(m):
                for name, delta in zip(names, deltas):
                    slots[name].data = (
                        delta.added_to(base[name], j)
                        if isinstance(delta, _SignedRows)
                        else base[name] + delta[j]
                    )
                out.append(loss_fn(model(inputs), targets))
    finally:
        for name, t in slots.items():
            t.data = originals[name]
    return torch.stack(out)


def _attention_backends(device: torch.device) -> AbstractContextManager:
    """SDPA kernels usable under vmap: on CPU only the math kernel has a batching rule (the
    fused CPU flash kernel would fall back to a per-copy loop with a warning); CUDA's flash,
    memory-efficient and cuDNN kernels have batching rules, so they are left alone."""
    return nullcontext() if device.type == "cuda" else sdpa_kernel([SDPBackend.MATH])


_VMAP_UNSUPPORTED: set[type] = set()


def vmap_allowed(model: nn.Module) -> bool:
    """False when the model declares ``supports_vmap = False`` or vmap already failed for
    its class: its perturbed losses are evaluated in a loop."""
    return getattr(model, "supports_vmap", True) and type(model) not in _VMAP_UNSUPPORTED


# On CPU, batching pays off only while a forward is so small that Python overhead dominates
# it (the 2-layer MLP) and there are enough evaluations to amortise vmap's ~1 ms set-up. For
# a real network one forward on a mini-batch already keeps the core busy, the m stacked
# activations fall out of cache, and vmap turns each conv into a grouped conv: there m plain
# forwards are 2-3.5x faster than the vmapped ones (measured in BENCHMARKS.md, section 1).
CPU_VMAP_MAX_FORWARD_FLOPS = 1e7
CPU_VMAP_MIN_EVALS = 8


def batching_pays_off(device: torch.device, m: int, forward_flops: float | None) -> bool:
    """Whether to evaluate m perturbed losses with vmap (True) or a loop of forwards.

    Always vmap on accelerators, or when the forward's FLOPs are unknown."""
    if forward_flops is None or device.type != "cpu":
        return True
    return m >= CPU_VMAP_MIN_EVALS and forward_flops <= CPU_VMAP_MAX_FORWARD_FLOPS


def perturbed_losses(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    plan: list[Perturbable],
    deltas: list[Tensor],
    batched: bool = True,
) -> Tensor:
    """Loss at ``theta + delta_j`` for every row j of ``deltas`` (each ``[m, *shape]``).

    With ``batched`` all m evaluations are batched with ``vmap`` over ``functional_call``
    (one batched matmul per layer instead of m Python-level forwards); without, they run
    in a loop (``batching_pays_off`` says which is faster).
    Models vmap cannot handle fall back to a Python loop, with a warning, once per class;
    a model with ``supports_vmap = False`` always uses the loop, silently.

    All m forwards run in eval mode: BatchNorm reads the model's own running statistics
    (shared, unbatched, never written) and dropout is off; the model's train/eval mode is
    restored afterwards. Only a step's clean forward (FOGZO's STE pass) moves the stats.
    """
    names = [item.name for item in plan]
    base = {item.name: item.param.detach() for item in plan}
    inputs, targets = batch
    with torch.no_grad(), eval_mode(model):
        if batched and vmap_allowed(model):

            def one(*delta: Tensor) -> Tensor:
                state = {name: base[name] + d for name, d in zip(names, delta)}
                return loss_fn(functional_call(model, state, (inputs,)), targets)

            try:
                with _attention_backends(inputs.device):
                    return vmap(one)(*deltas)
            except (RuntimeError, NotImplementedError) as err:
                _VMAP_UNSUPPORTED.add(type(model))
                warnings.warn(
                    f"vmap failed for {type(model).__name__} ({err}); "
                    "evaluating directions in a loop",
                    stacklevel=2,
                )
        return _loop_losses(model, loss_fn, batch, names, base, deltas)


def symmetric_differences(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    plan: list[Perturbable],
    directions: list[Tensor],
    batched: bool = True,
) -> tuple[Tensor, Tensor]:
    """For each direction v_i: ``c_i = [L(theta + eps v_i) - L(theta - eps v_i)] / 2``, and the
    2n losses. Dividing ``c_i v_i`` by ``eps`` per tensor gives the estimate."""
    n = directions[0].shape[0]
    if batched:
        deltas = [torch.cat([item.eps * d, -item.eps * d]) for item, d in zip(plan, directions)]
    else:  # the loop reads one row at a time: never materialise all 2n model-sized deltas
        deltas = [_SignedRows(item.eps, d) for item, d in zip(plan, directions)]
    losses = perturbed_losses(model, loss_fn, batch, plan, deltas, batched)
    return (losses[:n] - losses[n:]) / 2, losses


class _SignedRows:
    """Row j of ``cat([eps * d, -eps * d])``, computed when indexed (for the loop path)."""

    def __init__(self, eps: Tensor, d: Tensor) -> None:
        self.eps, self.d, self.n = eps, d, d.shape[0]
        self.shape = (2 * self.n, *d.shape[1:])

    def __getitem__(self, j: int) -> Tensor:
        return self.eps * self.d[j] if j < self.n else -self.eps * self.d[j - self.n]

    def added_to(self, base: Tensor, j: int) -> Tensor:
        """``base + self[j]`` in one pass over the tensor."""
        i, sign = (j, 1.0) if j < self.n else (j - self.n, -1.0)
        return torch.addcmul(base, self.eps, self.d[i], value=sign)


def zo_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    plan: list[Perturbable],
    n: int,
    draw: Callable[[int], list[Tensor]],
    chunk: int,
    forward_flops: float | None = None,
) -> tuple[list[Tensor], float]:
    """``G = (1/n) sum_i c_i v_i / eps`` per tensor, over n directions drawn ``chunk`` at a time.

    Chunking bounds memory at ``2 * chunk`` model copies however large n is (n-SPSA is run
    with n up to d); within a chunk the 2k forwards are one vmapped call. Returns the
    per-tensor estimates and the mean of the 2n perturbed losses. The forwards run in eval
    mode (``perturbed_losses``): BatchNorm statistics never move here.
    ``forward_flops`` (of one forward on ``batch``) picks vmap or a loop per chunk.
    """
    sums = [torch.zeros_like(item.param) for item in plan]
    loss_total = 0.0
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        directions = draw(k)
        batched = vmap_allowed(model) and batching_pays_off(
            plan[0].param.device, 2 * k, forward_flops
        )
        c, losses = symmetric_differences(model, loss_fn, batch, plan, directions, batched)
        loss_total += float(losses.sum())
        weights = c.to(directions[0].dtype) / n
        for acc, d in zip(sums, directions):
            # acc += sum_i (c_i / n) d_i as one in-place matrix-vector product: a single read
            # of the [k, *shape] block and no model-sized temporary.
            acc.view(-1).addmv_(d.reshape(k, -1).t(), weights.to(acc.device))
    return [acc.div_(item.eps) for acc, item in zip(sums, plan)], loss_total / (2 * n)
