"""Model checkpoints between sweep stages (pre-train in float -> quantize -> fine-tune).

Stored through pyarrow's filesystem layer, so a stage hands its model to the next one
through the results location, local or ``s3://``. Loading keeps every tensor whose name
and shape match and reports the rest: a fine-tune may swap the classifier head.

Names are matched up to peft's LoRA wrapping (``canonical_name``), so a float stage saved
without LoRA loads into a LoRA fine-tune, whose base tensors peft renames
(``base_model.model.`` in front, ``.base_layer`` before a wrapped layer's tensors).
"""

from __future__ import annotations

import io
import re

import pyarrow.fs as pafs
import torch
from torch import nn

from contract.storage import resolve, write_bytes_atomic


def save_model(model: nn.Module, location: str) -> None:
    """Write ``model.state_dict()`` to ``location`` all at once (the contract's atomic writer)."""
    fs, path = resolve(location)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_bytes_atomic(fs, path, buffer.getvalue())


_PEFT_PREFIX = re.compile(r"(^|\.)base_model\.model\.")
_PEFT_BASE_LAYER = re.compile(r"\.base_layer(?=\.)")


def canonical_name(key: str) -> str:
    """A state-dict key without peft's LoRA wrapping: ``lm.base_model.model.model.x.q_proj.
    base_layer.weight`` -> ``lm.model.x.q_proj.weight``; other keys are returned as they are."""
    return _PEFT_BASE_LAYER.sub("", _PEFT_PREFIX.sub(r"\1", key))


def _match_names(own: dict, state: dict) -> dict[str, str]:
    """own key -> checkpoint key: the same name, else the same ``canonical_name`` when that
    is unambiguous on both sides."""
    matches = {k: k for k in own if k in state}

    def unique(keys) -> dict[str, str]:
        by_name: dict[str, list[str]] = {}
        for k in keys:
            by_name.setdefault(canonical_name(k), []).append(k)
        return {name: ks[0] for name, ks in by_name.items() if len(ks) == 1}

    taken = set(matches.values())
    theirs = unique(k for k in state if k not in taken)
    for name, k in unique(k for k in own if k not in matches).items():
        if name in theirs:
            matches[k] = theirs[name]
    return matches


def load_model(model: nn.Module, location: str) -> list[str]:
    """Copy matching tensors from the checkpoint at ``location``; return the names skipped.

    A tensor matches by name (up to LoRA wrapping, ``canonical_name``) and shape. Only
    tensors are unpickled (``weights_only=True``): a checkpoint is data, never code.
    """
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"init_from: no checkpoint at {location}")
    with fs.open_input_stream(path) as f:
        state = torch.load(io.BytesIO(f.readall()), map_location="cpu", weights_only=True)
    own = model.state_dict()
    usable = {
        k: state[theirs]
        for k, theirs in _match_names(own, state).items()
        if own[k].shape == state[theirs].shape
    }
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
