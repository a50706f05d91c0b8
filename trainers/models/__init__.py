"""Model builders (pure torch, no ray): plain Linear/Conv2d nets that quantizers can swap."""

from .cnn import build_cnn
from .mlp import build_mlp
from .registry import MODELS, build_model, model_options
from .resnet import build_resnet18, build_resnet50
from .vit import build_deit_small, build_deit_tiny

__all__ = [
    "MODELS",
    "build_cnn",
    "build_deit_small",
    "build_deit_tiny",
    "build_mlp",
    "build_model",
    "build_resnet18",
    "build_resnet50",
    "model_options",
]
