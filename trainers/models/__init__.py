"""Model builders (pure torch, no ray): plain Linear/Conv2d nets that quantizers can swap."""

from .cnn import build_cnn
from .mlp import build_mlp
from .registry import MODELS, build_model, model_options

__all__ = ["MODELS", "build_cnn", "build_mlp", "build_model", "model_options"]
