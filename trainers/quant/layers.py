"""Quantized Linear/Conv layers and ``quantize_model``, which swaps them into any float model.

A quantized model stays an ordinary ``nn.Module`` with the same parameter names, so the
estimators, optimizers, ``state_dict`` and torchvision-style models work unchanged.

A model can say which of its layers stay float, besides the spec's ``exclude``, with two
module attributes that ``quantize_model`` reads on any module of the tree:

- ``float_modules``: fnmatch patterns of module names, relative to the module carrying the
  attribute, left float (a wrapped language model's head, its LoRA adapters);
- ``quantize_embeddings = True``: its ``nn.Embedding`` descendants (exact type) are
  quantized too, as ``QuantEmbedding`` (otherwise a lookup table always stays float).

A weight shared by several layers (an embedding tied to the LM head) gets one quantizer,
that of its first layer, so every use reads the same on-grid tensor.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.quant import functional as qf
from trainers.quant.quantizers import (
    ActQuantizer,
    FP8Quantizer,
    IntQuantizer,
    LSQQuantizer,
    Quantizer,
)

QUANT_KINDS = ("none", "int", "lsq", "fp8_e4m3", "fp8_e5m2")
FIRST_LAST_MODES = ("same", "8bit", "float")
SCALE_MODES = ("dynamic", "fixed")


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize a model.

    Attributes:
        kind: ``none`` (float baseline), ``int`` (uniform symmetric), ``lsq`` (learned
            step), ``fp8_e4m3`` or ``fp8_e5m2``.
        bits: weight bits for int/lsq (1..8); FP8 is always 8.
        per_channel: one scale per output channel instead of per tensor.
        surrogate: STE backward surrogate (identity, clipped, hardtanh, tanh, approxsign).
        act_bits: quantize every quantized layer's input to this many bits (None = float).
        first_last: keep the first and last layer at the same precision, 8-bit int, or float.
        exclude: fnmatch patterns of module names to leave in float.
        scale: ``dynamic`` recomputes each weight scale from the weights at every forward;
            ``fixed`` computes it once from the starting weights (after ``init_from``) and
            freezes it, the setting of FOGZO's largest gains. Activation scales stay dynamic.
    """

    kind: str = "int"
    bits: int = 8
    per_channel: bool = False
    surrogate: str = "identity"
    act_bits: int | None = None
    first_last: str = "same"
    exclude: tuple[str, ...] = field(default_factory=tuple)
    scale: str = "dynamic"

    def __post_init__(self) -> None:
        if self.kind not in QUANT_KINDS:
            raise ValueError(f"quant.kind {self.kind!r} is not one of {', '.join(QUANT_KINDS)}")
        if self.kind in ("int", "lsq"):
            qf.int_range(self.bits)  # raises with the valid range
        if self.kind == "lsq" and self.bits == 1:
            raise ValueError("quant.kind 'lsq' needs bits >= 2 (1-bit sign has no step to learn)")
        if self.surrogate not in qf.SURROGATES:
            raise ValueError(
                f"quant.surrogate {self.surrogate!r} is not one of {', '.join(qf.SURROGATES)}"
            )
        if self.act_bits is not None:
            qf.int_range(self.act_bits)
        if self.first_last not in FIRST_LAST_MODES:
            raise ValueError(
                f"quant.first_last {self.first_last!r} is not one of {', '.join(FIRST_LAST_MODES)}"
            )
        if self.scale not in SCALE_MODES:
            raise ValueError(f"quant.scale {self.scale!r} is not one of {', '.join(SCALE_MODES)}")
        if self.scale == "fixed" and self.kind == "lsq":
            raise ValueError("quant.scale: LSQ learns its step; scale: fixed does not apply")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def is_quantized(self) -> bool:
        return self.kind != "none"


def make_weight_quantizer(spec: QuantSpec, weight: Tensor, bits: int | None = None) -> Quantizer:
    bits = spec.bits if bits is None else bits
    if spec.kind.startswith("fp8"):
        return FP8Quantizer(spec.kind, spec.per_channel)
    if spec.kind == "lsq":
        return LSQQuantizer(
            weight,
            bits,
            spec.per_channel,
            spec.surrogate if spec.surrogate != "identity" else "clipped",
        )
    return IntQuantizer(bits, spec.per_channel, spec.surrogate)


class _QuantMixin:
    """Shared forward pieces: optional input quantization, then a quantized weight."""

    weight_quantizer: Quantizer
    act_quantizer: ActQuantizer | None
    bypass_weight_quant: bool = (
        False  # QuZO evaluates on-grid weights + a low-bit perturbation as-is
    )

    def quantized_weight(self) -> Tensor:
        if self.bypass_weight_quant:
            return self.weight
        return self.weight_quantizer(self.weight)

    def quantized_input(self, x: Tensor) -> Tensor:
        return x if self.act_quantizer is None else self.act_quantizer(x)


class QuantLinear(_QuantMixin, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantEmbedding(_QuantMixin, nn.Embedding):
    """A lookup into the quantized table (its input is token ids: never quantized)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(
            x,
            self.quantized_weight(),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )


_SWAPS: dict[type, type] = {nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d}
#: Swapped only below a module with ``quantize_embeddings = True``.
_EMBEDDING_SWAPS: dict[type, type] = {nn.Embedding: QuantEmbedding}


def _swap(layer: nn.Module, weight_q: Quantizer, act_q: ActQuantizer | None) -> nn.Module:
    """Turn a float layer into its quantized class in place, sharing its parameters."""
    layer.__class__ = {**_SWAPS, **_EMBEDDING_SWAPS}[type(layer)]
    layer.add_module("weight_quantizer", weight_q)
    layer.add_module("act_quantizer", act_q)
    return layer


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def model_float_patterns(model: nn.Module) -> tuple[str, ...]:
    """The ``float_modules`` patterns of every module in ``model``, as full module names."""
    return tuple(
        _prefixed(prefix, pattern)
        for prefix, m in model.named_modules()
        for pattern in getattr(m, "float_modules", ())
    )


def _swap_candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear/Conv2d layers, and embeddings under a ``quantize_embeddings`` module, in order."""
    embedding_roots = [
        prefix for prefix, m in model.named_modules() if getattr(m, "quantize_embeddings", False)
    ]
    out = []
    for name, m in model.named_modules():
        if type(m) in _SWAPS:
            out.append((name, m))
        elif type(m) in _EMBEDDING_SWAPS and any(
            not root or name.startswith(f"{root}.") for root in embedding_roots
        ):
            out.append((name, m))
    return out


def quantize_model(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Swap every ``nn.Linear``/``nn.Conv2d`` of ``model`` for its fake-quant twin (in place).

    Returns the same model object. Layers matching ``spec.exclude`` or a module's
    ``float_modules`` stay float (both count as layers for ``first_last``); the first and
    last swappable layers follow ``spec.first_last``. Embeddings are swapped only below a
    module with ``quantize_embeddings = True``. A tied weight keeps one quantizer. With
    ``spec.scale == "fixed"`` each weight scale is frozen here from the current weights (a
    buffer, so a resumed trial's ``load_state_dict`` finds it and restores the saved value):
    load pre-trained weights first.
    """
    if not spec.is_quantized:
        return model
    candidates = _swap_candidates(model)
    ends = {candidates[0][0], candidates[-1][0]} if candidates else set()
    floats = spec.exclude + model_float_patterns(model)
    shared: dict[int, Quantizer] = {}  # id(weight) -> its quantizer (tied weights)
    for name, layer in candidates:
        if any(fnmatch.fnmatch(name, pattern) for pattern in floats):
            continue
        bits = None
        if name in ends and spec.first_last == "float":
            continue
        if name in ends and spec.first_last == "8bit" and spec.kind in ("int", "lsq"):
            bits = 8
        embedding = type(layer) in _EMBEDDING_SWAPS
        act_q = ActQuantizer(spec.act_bits) if spec.act_bits is not None and not embedding else None
        weight_q = shared.get(id(layer.weight))
        if weight_q is None:
            weight_q = make_weight_quantizer(spec, layer.weight, bits)
            if spec.scale == "fixed":
                weight_q.freeze(layer.weight)
            shared[id(layer.weight)] = weight_q
        _swap(layer, weight_q, act_q)
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, _QuantMixin]]:
    """(name, layer) for every quantized layer, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _QuantMixin)]


def layer_precisions(model: nn.Module) -> dict[str, str]:
    """Effective precision of every Linear/Conv layer (and quantized embedding), by module
    name: ``int2``, ``lsq4``, ``fp8_e4m3`` or ``float``, plus ``/a4`` when its input is
    quantized. Makes the ``first_last`` / ``exclude`` / ``float_modules`` overrides visible
    in the results."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, _QuantMixin):
            q = m.weight_quantizer
            if isinstance(q, FP8Quantizer):
                label = q.fmt
            else:
                label = f"{'lsq' if isinstance(q, LSQQuantizer) else 'int'}{q.bits}"
            out[name] = label + (f"/a{m.act_quantizer.bits}" if m.act_quantizer is not None else "")
        elif type(m) in _SWAPS:
            out[name] = "float"
    return out


def precision_summary(model: nn.Module) -> str:
    """``layer_precisions`` as short JSON: the most common precision under ``"*"`` and only
    the layers that differ by name, e.g. ``{"*": "int2", "0": "int8", "fc": "float"}``."""
    precisions = layer_precisions(model)
    if not precisions:
        return "{}"
    common = Counter(precisions.values()).most_common(1)[0][0]
    return json.dumps({"*": common, **{k: v for k, v in precisions.items() if v != common}})


def trainable_quantized_layers(model: nn.Module) -> list[tuple[str, _QuantMixin]]:
    """``quantized_layers`` whose weight is trained (``requires_grad``): all of them unless
    part of the model is frozen (LoRA's base weights)."""
    return [(name, m) for name, m in quantized_layers(model) if m.weight.requires_grad]


def snap_to_grid(model: nn.Module) -> None:
    """Freeze the scale of every trained quantized weight and replace the latent weight by
    its on-grid value (each tensor once, if tied).

    Afterwards ``Q(w) == w`` exactly, which is how QuZO and qfo keep their weights
    low-precision. Frozen weights (``requires_grad`` False: a LoRA model's base) are left
    bit for bit as they are, scale included: they never move, and their layers keep
    quantizing them in the forward.
    """
    done: set[int] = set()
    with torch.no_grad():
        for _, layer in trainable_quantized_layers(model):
            if id(layer.weight) in done:
                continue
            done.add(id(layer.weight))
            layer.weight_quantizer.freeze(layer.weight)
            layer.weight.copy_(layer.weight_quantizer.round_nearest(layer.weight))
