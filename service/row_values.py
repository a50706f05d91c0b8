"""Row values a trial reports, as their columns' types: torch-free, for the results ledger.

``coerce`` turns a reported number into its column's Python type; ``measured_settings`` picks
the settings a trial measures once its model exists. ``service.rows`` (which needs the
estimator registry, and so torch) builds the rest of a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from contract import schema

__all__ = ["coerce", "measured_settings"]


def coerce(value: Any, type_: pa.DataType) -> Any:
    """A reported number as its column's Python type (numpy scalars and 3.0-for-3 included)."""
    if value is None:
        return None
    return (
        int(value)
        if pa.types.is_integer(type_)
        else float(value)
        if pa.types.is_floating(type_)
        else value
    )


# Settings a trial measures once its model exists, and the row column each one fills; the
# effective beta_min replaces a symbolic ``auto`` (a number given in the spec stays as it is).
_MEASURED = {f.name: f.type for f in schema.MEASURED_SETTING_FIELDS} | {"beta_min": pa.float64()}


def measured_settings(row: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """The measured-settings columns a result carries (``d_zo``, ``noise_to_guide``, ...)."""
    found = {
        name: coerce(result[name], type_)
        for name, type_ in _MEASURED.items()
        if result.get(name) is not None
    }
    if "beta_min" in found and row.get("beta_min") is not None:
        del found["beta_min"]  # the spec's own number
    return found
