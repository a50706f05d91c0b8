"""The faithful-settings columns of the trials table (schema version 5): what the spec says,
what the trial measured, and older folders reading with those columns null."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from contract.schema import MEASURED_SETTING_FIELDS, SCHEMA_VERSION, upgrade_trials
from contract.storage import read_results
from service.rows import config_columns, measured_settings, trials_schema

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

FOGZO = {
    "estimator": "fogzo",
    "quantizer": "int",
    "bits": 2,
    "model": "mlp",
    "dataset": "digits",
    "seed": 0,
    "steps": 10,
    "estimator_options": {"beta_min": 0.999},
}


def test_a_numeric_beta_min_is_recorded_and_a_measured_one_does_not_replace_it():
    row = config_columns(FOGZO)
    assert row["beta_min"] == 0.999
    found = measured_settings(
        row, {"d_zo": 640, "noise_to_guide": 0.8, "beta_min": 0.99, "layer_bits": '{"a": 2}'}
    )
    assert found == {"d_zo": 640, "noise_to_guide": 0.8, "layer_bits": '{"a": 2}'}


def test_a_symbolic_value_waits_for_the_measured_number():
    row = config_columns(FOGZO) | {
        "beta_min": None
    }  # what `beta_min: auto` leaves in the float column
    assert measured_settings(row, {"beta_min": 0.9875, "d_zo": 640.0}) == {
        "beta_min": 0.9875,
        "d_zo": 640,
    }
    assert measured_settings(row, {"eval_loss": 1.0}) == {}


def test_every_column_the_sink_fills_exists_with_its_type():
    row = config_columns(FOGZO)
    table = pa.Table.from_pylist(
        [
            dict.fromkeys(TRIALS_SCHEMA.names)
            | row
            | {
                "schema_version": SCHEMA_VERSION,
                "sweep": "s",
                "trial_id": "t",
                "status": "completed",
            }
        ],
        schema=TRIALS_SCHEMA,
    )
    assert table.num_rows == 1
    assert {f.name for f in MEASURED_SETTING_FIELDS} <= set(TRIALS_SCHEMA.names)


def test_a_version_4_folder_reads_with_the_new_columns_null(tmp_path):
    new = [
        "zo_params",
        "zo_max_bits",
        "kappa",
        "grad_bits",
        "lr_schedule",
        "warmup",
        "scale",
        "first_last",
        *(f.name for f in MEASURED_SETTING_FIELDS),
    ]
    row = (
        dict.fromkeys(TRIALS_SCHEMA.names)
        | config_columns(FOGZO)
        | {
            "schema_version": 4,
            "sweep": "old",
            "trial_id": "t1",
            "status": "completed",
            "final_eval_loss": 0.5,
        }
    )
    v4 = pa.Table.from_pylist([row], schema=TRIALS_SCHEMA).drop_columns(new)
    pq.write_table(
        v4.replace_schema_metadata({b"qsweep_schema_version": b"4", b"qsweep_table": b"trials"}),
        tmp_path / "trials.parquet",
    )
    trials, _ = read_results(str(tmp_path))
    # The core columns version 5 added read null; estimator-option columns the old file lacks
    # stay absent (readers keep the options a file has, as written).
    options_added = {"zo_params", "zo_max_bits", "kappa", "grad_bits"}
    assert trials.schema.names == [n for n in TRIALS_SCHEMA.names if n not in options_added]
    (loaded,) = trials.to_pylist()
    assert loaded["final_eval_loss"] == 0.5 and loaded["beta_min"] == 0.999
    assert all(loaded.get(name) is None for name in new)
    assert upgrade_trials(trials) is trials  # a current table as it is
