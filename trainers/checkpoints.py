"""Model checkpoints between sweep stages (pre-train in float -> quantize -> fine-tune).

Stored through pyarrow's filesystem layer, so a stage hands its model to the next one
through the results location, local or ``s3://``. Loading keeps every tensor whose name
and shape match and reports the rest: a fine-tune may swap the classifier head.
"""

from __future__ import annotations

import io
import os

import pyarrow.fs as pafs
import torch
from torch import nn


def _resolve(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))


def save_model(model: nn.Module, location: str) -> None:
    """Write ``model.state_dict()`` to ``location`` all at once (temp name, then move)."""
    fs, path = _resolve(location)
    fs.create_dir(os.path.dirname(path), recursive=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    tmp = f"{path}.partial"
    with fs.open_output_stream(tmp) as out:
        out.write(buffer.getvalue())
    fs.move(tmp, path)


def load_model(model: nn.Module, location: str) -> list[str]:
    """Copy matching tensors from the checkpoint at ``location``; return the names skipped.

    Only tensors are unpickled (``weights_only=True``): a checkpoint is data, never code.
    """
    fs, path = _resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"init_from: no checkpoint at {location}")
    with fs.open_input_stream(path) as f:
        state = torch.load(io.BytesIO(f.readall()), map_location="cpu", weights_only=True)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
