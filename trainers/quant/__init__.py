"""Fake quantization: pure functions, quantizer modules, and ``quantize_model``."""

from trainers.quant.layers import (
    QUANT_KINDS,
    QuantConv2d,
    QuantLinear,
    QuantSpec,
    layer_precisions,
    precision_summary,
    quantize_model,
    quantized_layers,
    snap_to_grid,
)
from trainers.quant.quantizers import (
    ActQuantizer,
    FP8Quantizer,
    IntQuantizer,
    LSQQuantizer,
    Quantizer,
)

__all__ = [
    "QUANT_KINDS",
    "ActQuantizer",
    "FP8Quantizer",
    "IntQuantizer",
    "LSQQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "QuantSpec",
    "Quantizer",
    "layer_precisions",
    "precision_summary",
    "quantize_model",
    "quantized_layers",
    "snap_to_grid",
]
