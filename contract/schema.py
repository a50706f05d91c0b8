"""The Parquet contract: ``<results>/<sweep>/trials.parquet`` and ``<results>/<sweep>/curves/``.

Versioned (``SCHEMA_VERSION`` is a column of both tables and in the file metadata) so
readers can refuse files they do not understand. Only pyarrow here: ``analysis`` reads
this module to check what it loads, and it must not pull in Ray or torch.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

# 2: trials.metric_name (accuracy or perplexity)
# 3: the optional diagnostics table (<sweep>/diagnostics/<trial_id>.parquet, gradient-quality
#    probes); trials and curves are unchanged, so version-2 folders are still read.
# 4: trials.error is the failure's one-line reason, and the new trials.error_traceback holds
#    the traceback (before, error held both); ``upgrade_trials`` reads version 2-3 tables.
# 5: trials gain the faithful-settings columns (issue 15): FOGZO's zo_params / zo_max_bits /
#    kappa, qfo's grad_bits, lr_schedule / warmup, the quantizer's scale mode and first_last,
#    and what the trial measured once its model existed: d_zo, noise_to_guide, layer_bits
#    (beta_min holds the effective value when the spec says ``auto``). Older tables read
#    with these columns null (``upgrade_trials``).
# 6: the estimator-option columns are derived from the registered estimators' config
#    dataclasses (``trials_schema``): a new estimator's options land in the Parquet without a
#    schema edit, after the trial settings; n-SPSA/FOGZO's ``chunk`` is recorded too.
#    In-place estimators (MeZO, QuZO, QFO) leave optimizer / momentum / weight_decay null:
#    they use no optimizer. Readers keep option columns they do not know as they are.
#    trials.adapter names a model's adapter (LoRA) where the model can have one.
# 7: same columns; the folder layout changed. Status changes go to an event journal
#    (``events/``, ``contract.journal``) folded into trials.parquet now and then, whose
#    metadata says up to which event it holds; a finished sweep's curves are compacted into
#    a Hive-partitioned dataset (``contract.curves``). Readers of this version read both.
SCHEMA_VERSION = 8
# versions whose files this qsweep reads (``upgrade_trials``)
READABLE_SCHEMA_VERSIONS = (2, 3, 4, 5, 6, 7, 8)

TRIAL_STATUSES = ("pending", "running", "completed", "failed", "stopped")

_IDENTITY_FIELDS = [
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("sweep", pa.string(), nullable=False),
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    # one line: "nspsa: training loss became inf at step 205", "worker died: ..."
    pa.field("error", pa.string()),
    # the failure as Ray Tune recorded it, traceback included
    pa.field("error_traceback", pa.string()),
    pa.field("estimator", pa.string()),
    pa.field("bits", pa.int64()),
    pa.field("quantizer", pa.string()),
    pa.field("model", pa.string()),
    pa.field("dataset", pa.string()),
    pa.field("seed", pa.int64()),
]

# The trial's own settings, effective values (null where one did not take effect).
TRIAL_SETTING_FIELDS: list[pa.Field] = [
    pa.field("lr", pa.float64()),  # an in-place estimator's own lr (its config's) included
    pa.field("optimizer", pa.string()),
    pa.field("momentum", pa.float64()),
    pa.field("weight_decay", pa.float64()),
    pa.field("batch_size", pa.int64()),
    pa.field("surrogate", pa.string()),
    pa.field("lr_schedule", pa.string()),  # constant | linear | cosine
    pa.field("warmup", pa.float64()),  # fraction of the budget with a linear lr warm-up
    pa.field("scale", pa.string()),  # quantizer scale: fixed (frozen at the start) | dynamic
    pa.field("first_last", pa.string()),  # first/last layer precision: same | 8bit | float
    # a model's adapter: "lora r=8 alpha=16 q_proj+v_proj", "none" (a model that could have
    # one), null (a model without adapters)
    pa.field("adapter", pa.string()),
    pa.field("budget_steps", pa.int64()),
    pa.field("budget_flops", pa.float64()),
    # the tuning protocol (docs/claims.md): grid (the spec's grid, one shared lr) | tuning
    # (scored on a validation split) | tuned (an arm's best tuning settings re-run with fresh
    # seeds) | pretrain (a float pre-training stage); null in tables older than version 8
    pa.field("role", pa.string()),
    pa.field("tuned_from", pa.string()),  # the arm's tuning group (tuning and tuned rows)
    pa.field("eval_split", pa.string()),  # test | validation (held out of the training split)
]

# What a trial measures once its model exists (reported by run_trial, recorded in the row).
MEASURED_SETTING_FIELDS: list[pa.Field] = [
    pa.field("d_zo", pa.int64()),  # elements the zeroth-order part perturbs
    pa.field("noise_to_guide", pa.float64()),  # fogzo: sqrt((1 - beta_min) * d_zo)
    # JSON: layer -> its weight precision (first/last overrides visible)
    pa.field("layer_bits", pa.string()),
]

_OUTCOME_FIELDS = [
    pa.field("steps", pa.int64()),
    pa.field("final_train_loss", pa.float64()),
    pa.field("final_eval_loss", pa.float64()),
    pa.field("final_eval_metric", pa.float64()),
    pa.field("best_eval_loss", pa.float64()),
    pa.field("best_eval_metric", pa.float64()),  # best by contract.metrics' direction
    pa.field("metric_name", pa.string()),  # what eval_metric is: "accuracy" or "perplexity"
    pa.field("forwards", pa.int64()),
    pa.field("backwards", pa.int64()),
    pa.field("flops", pa.float64()),
    pa.field("wall_s", pa.float64()),
    pa.field("peak_memory_bytes", pa.int64()),
    pa.field("num_params", pa.int64()),
    pa.field("host", pa.string()),
    pa.field("node_id", pa.string()),
    pa.field("attempts", pa.int64()),
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("versions", pa.string()),  # JSON: qsweep, torch, ray, python
    pa.field("config", pa.string()),  # the full trial config as JSON
]


def arrow_type(hint: Any) -> pa.DataType:
    """The column type of an estimator option declared as ``hint`` in its config dataclass.

    ``X | None`` is X (null where unset); a number that may also be a symbol (FOGZO's
    ``beta_min: float | str``, ``auto``) is a float column holding the effective number.
    """
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    for python_type, arrow in ((bool, pa.bool_()), (float, pa.float64()), (int, pa.int64())):
        if python_type in args:
            return arrow
    return pa.string()


def option_field(name: str, hint: Any) -> pa.Field:
    return pa.field(name, arrow_type(hint))


def trials_schema(option_fields: Iterable[pa.Field] = ()) -> pa.Schema:
    """The trials table with the given estimator-option columns (``option_field``; the
    writer derives them from the registered estimators). A name that is already a core
    column is not repeated."""
    core = {f.name for f in (*_IDENTITY_FIELDS, *TRIAL_SETTING_FIELDS)}
    options = [f for f in option_fields if f.name not in core]
    return pa.schema(
        [
            *_IDENTITY_FIELDS,
            *TRIAL_SETTING_FIELDS,
            *options,
            *MEASURED_SETTING_FIELDS,
            *_OUTCOME_FIELDS,
        ],
        metadata={"qsweep_schema_version": str(SCHEMA_VERSION), "qsweep_table": "trials"},
    )


# The columns every trials table has; estimator options come on top (``trials_schema``).
TRIALS_SCHEMA = trials_schema()
CORE_TRIAL_COLUMNS = frozenset(TRIALS_SCHEMA.names)

# Trial settings that tell arms of one estimator apart when they vary within a sweep (with
# every estimator-option column); momentum / weight_decay follow the optimizer's defaults.
ARM_SETTING_COLUMNS = (
    "lr",
    "optimizer",
    "batch_size",
    "surrogate",
    "lr_schedule",
    "warmup",
    "scale",
    "first_last",
    "adapter",
)


def option_columns(names: Iterable[str]) -> list[str]:
    """The estimator-option columns among a trials table's column ``names`` (in their order)."""
    return [name for name in names if name not in CORE_TRIAL_COLUMNS]


# Core columns added by version 5 (a version 2-4 table reads with them null).
ADDED_IN_VERSION_5 = (
    "lr_schedule",
    "warmup",
    "scale",
    "first_last",
    *(f.name for f in MEASURED_SETTING_FIELDS),
)


# Core columns added by version 6.
ADDED_IN_VERSION_6 = ("adapter",)
ADDED_IN_VERSION_8 = ("role", "tuned_from", "eval_split")


def _last_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def upgrade_trials(table: pa.Table) -> pa.Table:
    """A trials table of an older readable version in this version's core columns (a
    current one as it is). Before version 4, ``error`` held the whole text Tune recorded: it
    moves to ``error_traceback``, and ``error`` becomes its last line, the exception's
    message. Core columns added since (version 5's settings) are null: the older sweep did
    not record them."""
    names = table.column_names
    if "error" in names and "error_traceback" not in names:
        index = names.index("error")
        full = table.column("error").to_pylist()
        table = table.set_column(
            index, "error", pa.array([_last_line(t) for t in full], pa.string())
        )
        table = table.add_column(index + 1, "error_traceback", pa.array(full, pa.string()))
    found = (table.schema.metadata or {}).get(b"qsweep_schema_version", b"0").decode()
    if not found.isdigit() or int(found) > SCHEMA_VERSION:
        return table
    # (a version-6 table from before trials.adapter, written during its development, too)
    added = (
        (*ADDED_IN_VERSION_5, *ADDED_IN_VERSION_6) if int(found) < 5 else ADDED_IN_VERSION_6
    ) + ADDED_IN_VERSION_8
    for name in added:
        if name not in table.column_names:
            field = TRIALS_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def conform_trials(table: pa.Table) -> pa.Table:
    """A trials table in this version's column order and types: the core columns (a missing
    one is an error) with the estimator-option columns the file has, kept as written."""
    missing = [name for name in TRIALS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"trials table lacks column(s) {', '.join(missing)}")
    options = [f for f in table.schema if f.name not in CORE_TRIAL_COLUMNS]
    schema = trials_schema(options)
    return table.select(schema.names).cast(schema)


CURVES_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("forwards", pa.int64()),
        pa.field("backwards", pa.int64()),
        pa.field("flops", pa.float64()),
        pa.field("wall_s", pa.float64()),
        pa.field("train_loss", pa.float64()),
        pa.field("eval_loss", pa.float64()),
        pa.field("eval_metric", pa.float64()),
        pa.field("peak_memory_bytes", pa.int64()),
        # Denormalised so a curve can be grouped without a join.
        pa.field("estimator", pa.string()),
        pa.field("bits", pa.int64()),
        pa.field("seed", pa.int64()),
    ],
    metadata={"qsweep_schema_version": str(SCHEMA_VERSION), "qsweep_table": "curves"},
)

# The gradient-quality probe's figures (what trainers.diagnostics reports, in this order): the
# trial's estimator ("est_") and STE ("ste_") against a large-n ZO reference gradient of the
# smoothed quantized loss ("ref_"), and the probe's own cost (never in the training counters).
DIAGNOSTIC_FIGURES = (
    "est_cosine",
    "est_rel_bias",
    "est_variance",
    "est_snr",
    "est_norm",
    "ste_cosine",
    "ste_rel_bias",
    "ste_variance",
    "ste_snr",
    "ste_norm",
    "ref_norm",
    "ref_noise",
    "ref_n",
    "repeats",
    "probe_batch_size",
    "dim",
    "probe_forwards",
    "probe_backwards",
    "probe_flops",
    "probe_wall_s",
)

DIAGNOSTICS_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("estimator", pa.string()),
        pa.field("bits", pa.int64()),
        pa.field("seed", pa.int64()),
        *[pa.field(name, pa.float64()) for name in DIAGNOSTIC_FIGURES],
    ],
    metadata={"qsweep_schema_version": str(SCHEMA_VERSION), "qsweep_table": "diagnostics"},
)

TRIALS_FILE = "trials.parquet"
CURVES_DIR = "curves"
DIAGNOSTICS_DIR = "diagnostics"  # optional: only sweeps with trial.diagnostics have it
SPEC_FILE = "sweep.yaml"  # the validated spec, stored next to the results
PLAN_FILE = "plan.json"  # the expanded plan's summary: trial ids, total, skipped cells
