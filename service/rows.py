"""The trials-table columns a trial's config and its reported results fill.

``config_columns`` gives the grid and hyper-parameter columns of a trial's row (the effective
values, defaults included), ``measured_settings`` the settings a trial measures once its model
exists. Ray-free (``service.ledger`` builds rows with them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from contract import schema
from service.protocol import PROTOCOL_KEY, role_of, split_protocol
from service.row_values import coerce, measured_settings
from trainers.config import ConfigError, TrialConfig
from trainers.estimators import option_fields

__all__ = ["coerce", "config_columns", "measured_settings", "trials_schema"]


def trials_schema() -> pa.Schema:
    """The trials table as this qsweep writes it: the contract's core columns plus one
    column per option of every registered estimator (derived from their config dataclasses,
    so a new estimator's options land in the Parquet without a schema edit)."""
    return schema.trials_schema(schema.option_field(name, hint) for name, hint in option_fields())


def adapter_label(model: str, options: Mapping[str, Any]) -> str | None:
    """``"lora r=8 alpha=16 q_proj+v_proj"``, ``"none"`` for a model that takes an adapter
    option but has none, None for a model without that option (so arms split on it)."""
    from trainers.models.registry import model_options

    lora = options.get("lora")
    if isinstance(lora, Mapping):
        targets = lora.get("targets")
        targets = "+".join(map(str, targets)) if isinstance(targets, list) else targets
        parts = [f"{k}={lora[k]}" for k in ("r", "alpha") if k in lora]
        return " ".join(["lora", *parts, *([str(targets)] if targets else [])])
    return "none" if "lora" in model_options(model) else None


def config_columns(config: Mapping[str, Any], built: TrialConfig | None = None) -> dict[str, Any]:
    """The grid, trial-setting and estimator-option columns of one trial config's row.

    Values are the effective ones (a key missing from the config gets the TrialConfig or
    estimator default), so trials can be compared without knowing the defaults; a setting
    that does not take effect is null (an option the trial's estimator does not have, the
    optimizer of an in-place estimator, the quantizer's of an unquantized trial). An invalid
    config keeps only what it says: its trial fails with the reason, and the row must still
    be written. ``built``: the config's ``TrialConfig`` when the plan has it already.
    """
    protocol = dict(config.get(PROTOCOL_KEY) or {})
    cols: dict[str, Any] = {
        k: config.get(k) for k in ("estimator", "bits", "quantizer", "model", "dataset", "seed")
    }
    cols.update(role=role_of(config), tuned_from=protocol.get("group"))
    try:
        cfg = built if built is not None else TrialConfig.from_dict(split_protocol(config)[0])
    except (ConfigError, ValueError, TypeError):
        return cols
    quant = None if cfg.quantizer == "none" else cfg.quant
    cols.update(
        estimator=cfg.estimator,
        bits=cfg.quant.bits,
        quantizer=cfg.quantizer,
        model=cfg.model,
        dataset=cfg.dataset,
        seed=cfg.seed,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        surrogate=quant and quant.surrogate,
        budget_steps=cfg.steps,
        budget_flops=cfg.flops,
        lr_schedule=cfg.lr_schedule,
        warmup=cfg.warmup,
        scale=quant and quant.scale,
        first_last=quant and quant.first_last,
        adapter=adapter_label(cfg.model, cfg.model_options),
        eval_split=cfg.eval_split,
    )
    options = dataclasses.asdict(cfg.estimator_config)
    options.pop("lr", None)  # the trial's lr column
    for name, hint in option_fields():
        if name in options:  # a symbolic value (beta_min: auto) waits for the measured one
            value, type_ = options[name], schema.arrow_type(hint)
            cols[name] = value if _fits(value, type_) else None
    return cols


def _fits(value: Any, type_: pa.DataType) -> bool:
    """Whether ``value`` can go in a column of ``type_`` as it is."""
    if value is None or pa.types.is_string(type_):
        return value is None or isinstance(value, str)
    if pa.types.is_boolean(type_):
        return isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)
