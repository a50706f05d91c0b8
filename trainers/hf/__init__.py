"""Hugging Face models, offline (the optional ``llm`` extra: transformers, peft, safetensors).

Importing this package imports none of them: they load inside the functions that need
them, so ``trainers`` works without the extra and a spec naming an HF model fails with a
one-line install hint instead.
"""

from trainers.hf.checkpoint import (
    DTYPES,
    causal_lm_from_config,
    check_checkpoint,
    load_causal_lm,
    parse_dtype,
    require_llm,
)

__all__ = [
    "DTYPES",
    "causal_lm_from_config",
    "check_checkpoint",
    "load_causal_lm",
    "parse_dtype",
    "require_llm",
]
