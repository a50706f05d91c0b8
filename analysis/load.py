"""Load one sweep's results (local path or pyarrow URI) as pandas tables, checking the contract.

Reads only Parquet through pyarrow (``contract.storage`` / ``contract.schema`` are pyarrow-only
modules: no Ray, no torch). A missing, corrupt or wrong-version file is one clear
``ResultsError``; a sweep that is still running loads whatever it has written so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from contract import storage
from contract.schema import SPEC_FILE, TRIALS_FILE
from contract.storage import first_line


class ResultsError(ValueError):
    """Results that cannot be analysed: one line naming the file and the problem."""


@dataclass
class SweepResults:
    """A sweep's tables plus what the report shows about how they were made."""

    location: str
    name: str
    trials: pd.DataFrame
    curves: pd.DataFrame
    spec: dict[str, Any] = field(default_factory=dict)
    diagnostics: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # gradient-quality probes; empty if none


def load_results(location: str) -> SweepResults:
    """Trials and curves of the sweep folder ``location`` (``<results>/<sweep>``)."""
    fs, root = storage.resolve(location)
    if not storage.exists(fs, root):
        raise ResultsError(f"{location}: no such results folder")
    if not storage.exists(fs, storage.join(root, TRIALS_FILE)):
        raise ResultsError(
            f"{location}: no {TRIALS_FILE} — not a qsweep results folder, or no trial started yet"
        )
    try:
        trials, curves = storage.read_results(location)
        diagnostics = storage.read_diagnostics(
            location
        )  # empty for sweeps without (or older than) it
    except (pa.ArrowException, OSError) as err:  # every pyarrow error, not only ArrowInvalid
        raise ResultsError(f"{location}: unreadable Parquet ({first_line(err)})") from None
    except (
        ValueError
    ) as err:  # schema version mismatch (named by the reader) or columns that do not cast
        message = first_line(err)
        raise ResultsError(
            message if message.startswith(root) else f"{location}: {message}"
        ) from None
    spec_text = storage.read_text(fs, storage.join(root, SPEC_FILE))
    try:
        spec = yaml.safe_load(spec_text) if spec_text else {}
    except yaml.YAMLError as err:
        raise ResultsError(f"{location}: unreadable {SPEC_FILE} ({first_line(err)})") from None
    if not isinstance(spec, dict):
        raise ResultsError(f"{location}: {SPEC_FILE} is not a sweep spec (a YAML mapping)")
    trials_df, curves_df = trials.to_pandas(), curves.to_pandas()
    name = spec.get("name") or (
        trials_df["sweep"].iloc[0] if len(trials_df) else root.rstrip("/").split("/")[-1]
    )
    return SweepResults(location, name, trials_df, curves_df, spec, diagnostics.to_pandas())


def combine(results: list[SweepResults]) -> SweepResults:
    """Several sweeps as one (rows keep their ``sweep`` column), e.g. a grid and an Optuna sweep."""
    if len(results) == 1:
        return results[0]
    return SweepResults(
        location=", ".join(r.location for r in results),
        name=" + ".join(r.name for r in results),
        trials=pd.concat([r.trials for r in results], ignore_index=True),
        curves=pd.concat([r.curves for r in results], ignore_index=True),
        spec={r.name: r.spec for r in results},
        diagnostics=pd.concat(
            [r.diagnostics for r in results if not r.diagnostics.empty] or [pd.DataFrame()],
            ignore_index=True,
        ),
    )
