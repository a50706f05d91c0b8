"""``hf_causal_lm``: a Hugging Face causal LM (OPT, LLaMA, ...) fine-tuned offline.

The model comes from a local ``save_pretrained`` directory (``path``) or is built with
random weights from a config mapping (``config``: ``{model_type: opt, hidden_size: 32,
...}``); ``trainers.hf`` does the loading and turns every user mistake into one line.
transformers and peft (the ``llm`` extra) are imported only when a model is built.

The wrapper takes token ids ``[B, T]`` (int64), left-padded with ``pad_token_id``, and
returns float32 logits:

- with ``label_token_ids`` (prompt classification, as MeZO / QuZO fine-tune OPT): the
  next-token logits at the last position restricted to those ids, ``[B, C]``, so
  ``cross_entropy`` against the class index is the usual verbaliser loss;
- without: the full next-token logits ``[B, T, V]`` (language modelling).

Padding is the leading run of ``pad_token_id`` in a row (left padding): it is masked out
of attention and position ids count from the first real token (``cumsum(mask) - 1``), so a
padded row's logits equal the unpadded row's. A pad id inside a row (an EOS separator
when the tokenizer pads with EOS) is an ordinary token.

Quantization: ``quantize_model`` swaps every ``nn.Linear``; the wrapper's
``float_modules`` keeps the LM head and the LoRA adapters float, and the input embedding
is a lookup table that stays float too. ``quantize_embeddings: true`` quantizes the head
and the token embedding as well (``quantize_embeddings`` attribute, see
``trainers.quant.layers``); a tied embedding/head pair then shares one quantizer, so both
read the same on-grid matrix.

LoRA (``lora: {r: 8, alpha: 16, targets: [q_proj, v_proj], dropout: 0.0}``) wraps the
model with peft's ``get_peft_model``: only the adapters require grad, so the estimators
(which perturb / update trainable parameters only) never touch the base weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trainers.hf import causal_lm_from_config, load_causal_lm, require_llm

LORA_KEYS = ("r", "alpha", "targets", "dropout")


class HFCausalLM(nn.Module):
    """Token ids ``[B, T]`` -> logits ``[B, C]`` (``label_token_ids``) or ``[B, T, V]``."""

    #: perturb.py may evaluate perturbed copies with ``torch.func.vmap`` (checked: the HF
    #: forward, masks included, runs under it); a subclass for an architecture that cannot
    #: sets this False and gets the loop of forwards instead.
    supports_vmap = True

    def __init__(
        self,
        lm: nn.Module,
        pad_token_id: int | None = None,
        label_token_ids: Sequence[int] | None = None,
        quantize_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.pad_token_id = pad_token_id
        if label_token_ids is not None:
            ids = torch.tensor(list(label_token_ids), dtype=torch.int64)
            # Not persistent: a class -> token map, not a weight; checkpoints stay the LM's.
            self.register_buffer("label_token_ids", ids, persistent=False)
        else:
            self.label_token_ids = None
        self.quantize_embeddings = quantize_embeddings
        self.float_modules = self._float_module_names(quantize_embeddings)

    def _float_module_names(self, quantize_embeddings: bool) -> tuple[str, ...]:
        """Modules ``quantize_model`` leaves float: the adapters always (a LoRA B starts at
        zero, whose grid would have no step), the LM head unless ``quantize_embeddings``."""
        names = [name for name, _ in self.named_modules() if ".lora_" in f".{name}"]
        head = self.lm.get_output_embeddings()
        if not quantize_embeddings and head is not None:
            names += [name for name, m in self.named_modules() if m is head]
        return tuple(names)

    def attention_inputs(self, input_ids: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(attention_mask, position_ids) for left-padded ids; (None, None) without a pad id."""
        if self.pad_token_id is None:
            return None, None
        # 1 from a row's first real token on: only the leading pad run is padding.
        mask = ((input_ids != self.pad_token_id).cumsum(-1) > 0).long()
        return mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def forward(self, input_ids: Tensor) -> Tensor:
        mask, positions = self.attention_inputs(input_ids)
        kwargs: dict[str, Any] = {"attention_mask": mask, "position_ids": positions}
        if self.label_token_ids is not None:
            kwargs["logits_to_keep"] = 1  # the head on the last position only
        logits = self.lm(input_ids=input_ids, use_cache=False, **kwargs).logits
        if self.label_token_ids is not None:
            return logits[:, -1, self.label_token_ids].float()
        return logits.float()


def _lora_settings(lora: Mapping[str, Any]) -> dict[str, Any]:
    """peft ``LoraConfig`` arguments from the spec's ``lora`` mapping (checked)."""
    if not isinstance(lora, Mapping):
        raise ValueError(f"model_options.lora: expected a mapping of {', '.join(LORA_KEYS)}")
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ValueError(
            f"model_options.lora: unknown key(s) {', '.join(unknown)}; "
            f"valid: {', '.join(LORA_KEYS)}"
        )
    r, alpha = lora.get("r", 8), lora.get("alpha", 16)
    dropout, targets = lora.get("dropout", 0.0), lora.get("targets")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"model_options.lora.r: {r!r} must be a positive integer")
    for key, value in (("alpha", alpha), ("dropout", dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"model_options.lora.{key}: {value!r} must be a number >= 0")
    if dropout >= 1:
        raise ValueError(f"model_options.lora.dropout: {dropout!r} must be below 1")
    if targets is not None and (
        isinstance(targets, str)
        or not isinstance(targets, Sequence)
        or not targets
        or not all(isinstance(t, str) and t for t in targets)
    ):
        raise ValueError(
            f"model_options.lora.targets: {targets!r} must be a non-empty list of module "
            "names (e.g. [q_proj, v_proj]); leave it out for peft's default for the model"
        )
    return {
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": float(dropout),
        "target_modules": list(targets) if targets is not None else None,
        "bias": "none",
    }


def apply_lora(lm: nn.Module, lora: Mapping[str, Any]) -> nn.Module:
    """``get_peft_model`` with the spec's LoRA settings; only the adapters require grad."""
    settings = _lora_settings(lora)
    peft = require_llm("model_options.lora", "peft")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(lm, peft.LoraConfig(**settings))
    except Exception as err:  # noqa: BLE001 - peft raises ValueError/KeyError/... for bad targets
        detail = " ".join(str(err).split())[:200]
        raise ValueError(f"model_options.lora: cannot apply LoRA ({detail})") from None


def _optional_int(option: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model_options.{option}: {value!r} must be an integer >= {minimum}")
    return value


def build_hf_causal_lm(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    path: str | None = None,
    config: dict | None = None,
    dtype: str = "fp32",
    lora: dict | None = None,
    quantize_embeddings: bool = False,
    vocab_size: int | None = None,
    pad_token_id: int | None = None,
    label_token_ids: list | None = None,
) -> HFCausalLM:
    """A Hugging Face causal LM over ``input_shape == (T,)`` token ids.

    Exactly one of ``path`` (a ``save_pretrained`` directory, read offline) and ``config``
    (a mapping with ``model_type``; random init from the global torch RNG). ``dtype`` is
    ``fp32`` or ``bf16``. ``vocab_size``, ``pad_token_id`` and ``label_token_ids`` are the
    dataset's hints (its tokenizer); with ``config`` the vocabulary is ``vocab_size``, or
    ``num_classes`` for language modelling without that hint. With ``label_token_ids`` the
    output is ``[B, num_classes]`` and there must be one id per class.
    """
    if (path is None) == (config is None):
        raise ValueError(
            "model_options: hf_causal_lm needs exactly one of path (a save_pretrained "
            "directory) and config (a mapping with model_type)"
        )
    if len(input_shape) != 1:
        raise ValueError(
            f"hf_causal_lm: input_shape must be (seq_len,) token ids, got {tuple(input_shape)}"
        )
    vocab_size = _optional_int("vocab_size", vocab_size, 1)
    pad_token_id = _optional_int("pad_token_id", pad_token_id, 0)
    if label_token_ids is not None:
        label_token_ids = list(label_token_ids)
        if not label_token_ids or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in label_token_ids
        ):
            raise ValueError(
                f"model_options.label_token_ids: {label_token_ids!r:.100} must be a non-empty "
                "list of token ids"
            )
        if len(label_token_ids) != num_classes:
            raise ValueError(
                f"model_options.label_token_ids: {len(label_token_ids)} ids for "
                f"{num_classes} classes (one per class)"
            )
    if path is not None:
        lm = load_causal_lm(path, dtype)
        source = f"the checkpoint at {path}"
    else:
        if vocab_size is None and label_token_ids is None:
            vocab_size = num_classes  # language modelling: the classes are the tokens
        lm = causal_lm_from_config(config, dtype, vocab_size)
        source = "model_options.config"
    rows = lm.get_input_embeddings().num_embeddings
    fits = {  # option -> (its value, whether the model's vocabulary holds it)
        "vocab_size": (vocab_size, vocab_size is None or vocab_size <= rows),
        "pad_token_id": (pad_token_id, pad_token_id is None or pad_token_id < rows),
        "label_token_ids": (label_token_ids, not label_token_ids or max(label_token_ids) < rows),
        "num_classes": (num_classes, label_token_ids is not None or num_classes <= rows),
    }
    for option, (value, fine) in fits.items():
        if not fine:
            raise ValueError(
                f"model_options.{option}: {value!r:.100} does not fit {source}, whose "
                f"vocabulary has {rows} tokens"
            )
    max_positions = getattr(lm.config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and input_shape[0] > max_positions:
        raise ValueError(
            f"hf_causal_lm: sequences of {input_shape[0]} tokens exceed {source}'s "
            f"max_position_embeddings={max_positions}"
        )
    if lora is not None:
        lm = apply_lora(lm, lora)
    return HFCausalLM(lm, pad_token_id, label_token_ids, quantize_embeddings)
