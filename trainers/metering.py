"""Cost measurement: FLOPs of a forward/backward, and peak tensor memory of a step.

FLOPs are counted once per model with ``FlopCounterMode`` and multiplied by the pass
counts every estimator reports (docs/estimators.md). Peak memory counts live tensor bytes
(parameters, gradients, optimizer state, activations, temporaries) during one training
step, so it compares estimators rather than process overheads: CUDA's allocator stats on
GPU, a dispatch-mode storage tracker on CPU (the CPU allocator keeps no statistics).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode

from trainers.estimators.base import Batch, CostModel, LossFn

T = TypeVar("T")


def _register_cpu_attention_flops() -> None:
    """FlopCounterMode counts the CUDA attention kernels but not the fused CPU one, so a
    transformer's attention FLOPs would vanish on CPU and CPU/GPU budgets would disagree."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward.default in fc.flop_registry:
        return

    @fc.register_flop_formula(forward)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(backward)
    def _backward(
        grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
    ) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


try:
    _register_cpu_attention_flops()
except (
    AttributeError,
    RuntimeError,
    ValueError,
):  # another torch build without these ops: nothing to add
    pass


def measure_cost(model: nn.Module, loss_fn: LossFn, batch: Batch) -> CostModel:
    """FLOPs of one forward and one backward of ``model`` on ``batch``.

    The backward is measured too; if the counter sees none (no matmul/conv in it), it
    counts as two forwards.
    """
    inputs, targets = batch
    with FlopCounterMode(display=False) as forward_counter:
        with torch.no_grad():
            loss_fn(model(inputs), targets)
    with FlopCounterMode(display=False) as both_counter:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
    model.zero_grad(set_to_none=True)
    forward = float(forward_counter.get_total_flops())
    backward = float(both_counter.get_total_flops()) - forward
    if backward <= 0:
        backward = 2 * forward
    return CostModel(forward_flops=max(forward, 1.0), backward_flops=backward)


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages while active.

    Every op's outputs are recorded by storage and released through a weakref finalizer
    when the storage dies (storages keep their Python object alive as long as the C++ one,
    so tensors saved for backward are counted). Tensors that exist beforehand (parameters,
    gradients, optimizer state) are registered with ``track`` so they count too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.live or storage.nbytes() == 0 or tensor.device.type == "meta":
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out


def _existing_tensors(objects: list[object]) -> list[torch.Tensor]:
    tensors: list[torch.Tensor] = []
    for obj in objects:
        if isinstance(obj, nn.Module):
            tensors += [t for t in obj.parameters()] + [
                p.grad for p in obj.parameters() if p.grad is not None
            ]
            tensors += list(obj.buffers())
        elif isinstance(obj, torch.optim.Optimizer):
            tensors += [
                v
                for state in obj.state.values()
                for v in state.values()
                if isinstance(v, torch.Tensor)
            ]
    return tensors


def track_peak_memory(
    fn: Callable[[], T], objects: list[object], device: torch.device
) -> tuple[T, int]:
    """Run ``fn``; return its result and the peak bytes of live tensors while it ran.

    ``objects`` (modules, optimizers) contribute the tensors that already exist.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, int(torch.cuda.max_memory_allocated(device))
    tracker = PeakTensorMemory()
    for tensor in _existing_tensors(objects):
        tracker.track(tensor)
    with tracker:
        result = fn()
    return result, tracker.peak
