"""What a trial reads besides its spec, resolved the same way at spec time and in the trial.

A dataset that tokenizes (``prompt_cls``, ``lm``) takes its tokenizer from the model's
checkpoint directory unless the spec names one; a dataset can hand the model builder what
it knows (vocabulary size, pad id, label-word token ids: ``DataSplits.model_hints``).
``check_inputs`` runs when a spec is read, so a missing checkpoint, a corrupt weights
file or a task file with an unknown label is one line and exit 2 before anything is written,
not a failed trial later.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from trainers.config import ConfigError, TrialConfig


def dataset_call_options(cfg: TrialConfig) -> dict[str, Any]:
    """The dataset's options as the loader gets them: a ``tokenizer`` left unset is the
    model checkpoint's (``model_options.path``), when both sides have one."""
    from trainers.data.registry import dataset_options

    options = dict(cfg.dataset_options)
    path = cfg.model_options.get("path")
    if "tokenizer" in dataset_options(cfg.dataset) and "tokenizer" not in options and path:
        options["tokenizer"] = path
    return options


def model_call_options(cfg: TrialConfig, hints: Mapping[str, Any]) -> dict[str, Any]:
    """The model's options plus the dataset's hints its builder declares (the spec's own
    options win)."""
    from trainers.models.registry import model_options

    accepted = set(model_options(cfg.model))
    return {**{k: v for k, v in hints.items() if k in accepted}, **cfg.model_options}


def _check_hf_checkpoint(options: Mapping[str, Any]) -> None:
    if options.get("path"):
        from trainers.hf.checkpoint import check_checkpoint

        check_checkpoint(options["path"])


# Models and datasets whose inputs are files worth reading before a sweep starts.
MODEL_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "hf_causal_lm": _check_hf_checkpoint,
}
DATASETS_READ_AT_SPEC_TIME = ("prompt_cls", "lm", "mnist5k")


@functools.lru_cache(maxsize=256)
def _check(kind: str, name: str, key: str) -> None:
    options = json.loads(key)
    if kind == "model":
        MODEL_CHECKS[name](options)
        return
    from trainers.data.registry import load_dataset

    load_dataset(name, data_dir=options.pop("__data_dir__"), seed=0, **options)


def input_errors(cfg: TrialConfig) -> list[str]:
    """Read what the trial will read (once per distinct input); one line per input that is
    missing or malformed, naming the option and path."""
    checks = []
    if cfg.model in MODEL_CHECKS:
        checks.append(("model", cfg.model, dict(cfg.model_options)))
    if cfg.dataset in DATASETS_READ_AT_SPEC_TIME:
        checks.append(
            ("dataset", cfg.dataset, {**dataset_call_options(cfg), "__data_dir__": cfg.data_dir})
        )
    errors = []
    for kind, name, options in checks:
        try:
            _check(kind, name, json.dumps(options, sort_keys=True, default=str))
        except (ValueError, OSError) as err:  # DatasetError is a ValueError
            message = " ".join(str(err).split())
            named = message.startswith((kind, name))  # "model_options.path: ...", "lm: ..."
            errors.append(message if named else f"{name}: {message}")
    return errors


def check_inputs(cfg: TrialConfig) -> None:
    """``ConfigError`` with the first of ``input_errors``."""
    errors = input_errors(cfg)
    if errors:
        raise ConfigError(errors[0])
