"""Name -> model builder registry, so sweep configs pick models by a string."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..options import check_option_names
from .cnn import build_cnn
from .hf_causal_lm import build_hf_causal_lm
from .llama import build_llama
from .mlp import build_mlp
from .resnet import build_resnet18, build_resnet50
from .vit import build_deit_small, build_deit_tiny

#: Builders take (input_shape, num_classes, *, options...) and use the global torch RNG for
#: init, so the caller's `torch.manual_seed(trial_seed)` decides the initial weights.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "resnet18": build_resnet18,
    "resnet50": build_resnet50,
    "deit_tiny": build_deit_tiny,
    "deit_small": build_deit_small,
    "llama": build_llama,
    "hf_causal_lm": build_hf_causal_lm,
}


def model_options(name: str) -> list[str]:
    """Option names a model accepts (its builder's keyword-only parameters)."""
    params = inspect.signature(MODELS[name]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


#: Annotation (as written, ``from __future__ import annotations``) of an option that
#: defaults to None -> the types its value may have besides None, and how to say so.
_OPTIONAL_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str | None": ((str,), "must be a string or null"),
    "int | None": ((int,), "must be an integer or null"),
    "dict | None": ((Mapping,), "must be a mapping or null"),
    "list | None": ((list, tuple), "must be a list or null"),
}


def _option_problem(option: str, value: Any, default: Any, annotation: Any = None) -> str | None:
    """Why `value` is unfit for an option with this default (and, for a None default, this
    annotation), or None if it is fine. Values themselves are the builder's to check."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int) and (
        isinstance(value, bool) or not isinstance(value, int) or value <= 0
    ):
        return "must be a positive integer"
    if isinstance(default, str) and not isinstance(value, str):
        return "must be a string"
    if default is None and value is not None and annotation in _OPTIONAL_TYPES:
        types, problem = _OPTIONAL_TYPES[annotation]
        if isinstance(value, bool) or not isinstance(value, types):
            return problem
    return None


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build a fresh plain `nn.Module` whose weight layers are all Linear/Conv2d.

    The rest is norms, activations, pools and attention via `F.scaled_dot_product_attention`
    on Linear projections, so `quantize_model` swaps every weight layer. The global
    RNG is not seeded here: seeding is the trial's job.
    """
    check_option_names("model", name, options, MODELS, model_options)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"{name}: num_classes={num_classes!r} must be a positive integer")
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or min(input_shape) <= 0:
        raise ValueError(f"{name}: input_shape {input_shape} must be non-empty and positive")
    params = inspect.signature(MODELS[name]).parameters
    for option, value in options.items():
        # ValueError (not TypeError) throughout: options come from sweep configs, and
        # callers catch one exception type for every bad config entry.
        problem = _option_problem(option, value, params[option].default, params[option].annotation)
        if problem:
            raise ValueError(f"{name}: option {option}={value!r} {problem}")
    return MODELS[name](input_shape, num_classes, **options)
