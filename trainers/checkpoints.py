"""Model checkpoints between sweep stages (pre-train in float -> quantize -> fine-tune).

Stored through pyarrow's filesystem layer, so a stage hands its model to the next one
through the results location, local or ``s3://``. Loading keeps every tensor whose name
and shape match and reports the rest: a fine-tune may swap the classifier head.
"""

from __future__ import annotations

import io

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


def load_model(model: nn.Module, location: str) -> list[str]:
    """Copy matching tensors from the checkpoint at ``location``; return the names skipped.

    Only tensors are unpickled (``weights_only=True``): a checkpoint is data, never code.
    """
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"init_from: no checkpoint at {location}")
    with fs.open_input_stream(path) as f:
        state = torch.load(io.BytesIO(f.readall()), map_location="cpu", weights_only=True)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
