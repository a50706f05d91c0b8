"""Hugging Face causal LMs, offline: load one saved with ``save_pretrained`` from a local
directory, or build a randomly initialised one from a config mapping.

transformers, peft and safetensors are the optional ``llm`` extra, so they are imported
inside the functions here, never when ``trainers`` (or this module) is imported. Nothing is
downloaded: loading passes ``local_files_only=True`` and reads safetensors weights only (a
``pytorch_model.bin`` is a pickle, i.e. code, and is refused).

Every user mistake is raised as a one-line ``ValueError`` that names the option
(``model_options.path`` / ``model_options.config``), the path and what was expected, so a
spec check or a failed trial says what to fix. ``check_checkpoint`` is the cheap part of
that (files present, config parseable, safetensors headers readable), for spec validation
before anything runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # a sharded save_pretrained
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
INSTALL_HINT = "pip install -e '.[llm]'"
_EXPECTED = f"expected {CONFIG_FILE} and {WEIGHTS_FILE} saved with save_pretrained"
_MAX_DETAIL = 200  # characters of a library's own error kept in ours (which stays one line)


def _one_line(err: BaseException | str) -> str:
    """A library error as one short line (some span pages: transformers lists every model)."""
    text = " ".join(str(err).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def require_llm(option: str, module: str = "transformers") -> ModuleType:
    """Import ``module`` of the llm extra, or raise the one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"{option}: Hugging Face models need the llm extra ({module} is not installed): "
            f"{INSTALL_HINT}"
        ) from None


def parse_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"model_options.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ------------------------------------------------------------------------- checking a directory


def _weight_files(root: Path, option: str) -> list[Path]:
    """The safetensors files of a checkpoint: one file, or the shards its index names."""
    single, index = root / WEIGHTS_FILE, root / WEIGHTS_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{option}: {index} is not a readable safetensors index ({_one_line(err)})"
            ) from None
        missing = [s for s in shards if not (root / s).is_file()]
        if missing or not shards:
            raise ValueError(
                f"{option}: {index} names shard(s) missing from {root}: "
                f"{', '.join(missing) or '(none listed)'}"
            )
        return [root / s for s in shards]
    found = sorted(p.name for p in root.glob("*.bin")) + sorted(
        p.name for p in root.glob("*.safetensors")
    )
    hint = (
        f"; found {', '.join(found)}: only {WEIGHTS_FILE} (or a sharded index) is read, "
        "re-save with save_pretrained(safe_serialization=True)"
        if found
        else ""
    )
    raise ValueError(f"{option}: no {WEIGHTS_FILE} in {root} ({_EXPECTED}){hint}")


def _check_safetensors_header(file: Path, option: str) -> None:
    """The header parses and its tensors exactly cover the file (a truncated copy fails).

    Uses ``safetensors.safe_open`` (reads the header only, maps nothing) when the llm extra
    is installed; without it the same checks are done by hand on the documented format (an
    8-byte little-endian header length, a JSON header, then the data), so a spec can be
    validated on a machine without the extra.
    """
    try:
        safetensors = importlib.import_module("safetensors")
    except ImportError:
        safetensors = None
    try:
        if safetensors is not None:
            with safetensors.safe_open(str(file), framework="pt") as f:
                f.keys()
            return
        size = file.stat().st_size
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
            if size < 8 or length > size - 8:
                raise ValueError("header too large or file too small")
            header = json.loads(f.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        if 8 + length + max(ends, default=0) != size:
            raise ValueError("tensor data does not cover the file (truncated?)")
    except Exception as err:  # noqa: BLE001 - any failure here means the file is unusable
        raise ValueError(
            f"{option}: {file} is not a readable safetensors file, corrupt or truncated "
            f"({_one_line(err)})"
        ) from None


def check_checkpoint(path: str | Path, option: str = "model_options.path") -> dict[str, Any]:
    """Cheap checks of a ``save_pretrained`` directory, without loading any weights.

    ``config.json`` must be present and parse to a mapping with a ``model_type``; the
    weights must be ``model.safetensors`` (or a sharded index and all its shards), each
    with a readable header covering the whole file. Returns the parsed config. Raises a
    one-line ``ValueError`` naming ``option`` and the path otherwise.
    """
    root = Path(path).expanduser()
    config_file = root / CONFIG_FILE
    if not root.is_dir() or not config_file.is_file():
        raise ValueError(f"{option}: no Hugging Face checkpoint at {path} ({_EXPECTED})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{option}: {config_file} is not valid JSON ({_one_line(err)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ValueError(f"{option}: {config_file} has no model_type ({_EXPECTED})")
    for file in _weight_files(root, option):
        _check_safetensors_header(file, option)
    return config


# --------------------------------------------------------------------------------- loading


class _QuietLoading:
    """transformers' per-load progress bars off for the block (they flood trial logs)."""

    def __init__(self, transformers: ModuleType) -> None:
        self.logging = transformers.utils.logging
        self.was_enabled = False

    def __enter__(self) -> None:
        self.was_enabled = self.logging.is_progress_bar_enabled()
        self.logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            self.logging.enable_progress_bar()


def load_causal_lm(path: str | Path, dtype: str = "fp32") -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=...)``.

    Checked first (``check_checkpoint``); weights missing from the file, or of the wrong
    shape, are errors here (transformers would initialise them randomly with a warning).
    """
    option = "model_options.path"
    torch_dtype = parse_dtype(dtype)
    transformers = require_llm(option)
    check_checkpoint(path, option)
    try:
        with _QuietLoading(transformers), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                str(Path(path).expanduser()),
                local_files_only=True,
                use_safetensors=True,
                dtype=torch_dtype,
                output_loading_info=True,
            )
    except Exception as err:  # noqa: BLE001 - transformers raises many types for bad input
        raise ValueError(
            f"{option}: could not load a causal LM from {path} ({_one_line(err)})"
        ) from None
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        names = missing + mismatched
        raise ValueError(
            f"{option}: the weights in {path} do not fit its config ({len(missing)} missing, "
            f"{len(mismatched)} of another shape: {', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''})"
        )
    return model


def _config_keys(config_class: type) -> set[str]:
    """Names a transformers config class accepts: its fields, init arguments and aliases."""
    keys = set(config_class().to_dict())
    keys |= set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"}
    return keys | set(getattr(config_class, "attribute_map", {}))


def causal_lm_from_config(
    config: Mapping[str, Any], dtype: str = "fp32", vocab_size: int | None = None
) -> nn.Module:
    """A randomly initialised causal LM from ``{model_type: opt, hidden_size: 32, ...}``.

    ``AutoConfig.for_model(model_type, **rest)`` then ``from_config``; initialisation draws
    from the global torch RNG, which the trial seeds. ``vocab_size`` (the dataset's
    tokenizer) sets the vocabulary unless the mapping gives the same number itself.
    Unknown keys are errors (transformers would keep a misspelt one silently).
    """
    option = "model_options.config"
    torch_dtype = parse_dtype(dtype)
    if not isinstance(config, Mapping) or not isinstance(config.get("model_type"), str):
        raise ValueError(
            f"{option}: expected a mapping with a model_type (e.g. {{model_type: opt, "
            f"hidden_size: 32}}), got {config!r:.100}"
        )
    transformers = require_llm(option)
    settings = dict(config)
    model_type = settings.pop("model_type")
    mapping = transformers.CONFIG_MAPPING
    if model_type not in mapping:
        raise ValueError(
            f"{option}: unknown model_type {model_type!r} (a transformers architecture "
            "such as opt or llama)"
        )
    config_class = mapping[model_type]
    unknown = sorted(set(settings) - _config_keys(config_class))
    if unknown:
        raise ValueError(f"{option}: unknown key(s) for {model_type}: {', '.join(unknown)}")
    if vocab_size is not None:
        given = settings.setdefault("vocab_size", vocab_size)
        if given != vocab_size:
            raise ValueError(
                f"{option}: vocab_size {given!r} differs from the dataset's tokenizer "
                f"({vocab_size}); leave it out"
            )
    if "vocab_size" not in settings:
        raise ValueError(f"{option}: no vocab_size (give one, or a dataset that supplies it)")
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype)
    except Exception as err:  # noqa: BLE001 - bad sizes surface as many exception types
        raise ValueError(
            f"{option}: cannot build a {model_type} causal LM ({_one_line(err)})"
        ) from None
