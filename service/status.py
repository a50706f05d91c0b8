"""``qsweep status``: counts per status from the Parquet and the plan stored beside it.

Reads only the results location (pyarrow), never torch or Ray, so it answers in about a
second while a sweep runs. The total comes from ``plan.json``, written when the sweep was
prepared; a folder older than that file gets it by expanding the stored spec again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import yaml

from contract import journal, storage
from contract.curves import count_curve_rows
from contract.schema import CURVES_DIR, PLAN_FILE, SPEC_FILE, TRIALS_FILE
from contract.storage import first_line
from service.errors import SpecError, SweepError

if TYPE_CHECKING:
    from service.plan import SweepPlan

STATUSES = ("completed", "running", "failed", "stopped")


def stored_plan(sweep_dir: str) -> dict[str, Any]:
    """The plan summary of a sweep folder (``SweepPlan.summary``)."""
    fs, path = storage.resolve(sweep_dir)
    text = storage.read_text(fs, storage.join(path, PLAN_FILE))
    if text is not None:
        try:
            summary = json.loads(text)
        except ValueError as err:
            raise SweepError(f"{sweep_dir}/{PLAN_FILE}: unreadable ({first_line(err)})") from None
        if isinstance(summary, dict) and isinstance(summary.get("total"), int):
            return summary
    return load_stored_plan(sweep_dir).summary()  # an older folder: expand its spec (torch)


def load_stored_plan(sweep_dir: str) -> SweepPlan:
    """The plan of the spec stored in a sweep folder, expanded again (imports the trainers)."""
    from service.spec_loading import parse_spec

    fs, path = storage.resolve(sweep_dir)
    text = storage.read_text(fs, storage.join(path, SPEC_FILE))
    if text is None:
        raise SweepError(f"{sweep_dir}: no {SPEC_FILE} here — is this a sweep's results directory?")
    try:
        return parse_spec(yaml.safe_load(text))
    except SpecError as err:
        raise SweepError(f"{sweep_dir}/{SPEC_FILE}: {err}") from None


def _curve_rows(fs, root: str) -> int:
    """Rows of every curve file (flat or compacted, ``contract.curves``), from the Parquet
    footers where that is enough (each file's contract version checked, so a foreign or
    damaged file is reported, not counted)."""
    return count_curve_rows(fs, storage.join(root, CURVES_DIR))


def sweep_status(sweep_dir: str) -> dict[str, Any]:
    """Counts per status (pending = planned but never started), the trials table (pandas,
    None before the first trial starts), curve rows and the plan's total."""
    plan = stored_plan(sweep_dir)
    fs, root = storage.resolve(sweep_dir)
    try:
        started = storage.exists(fs, storage.join(root, TRIALS_FILE)) or storage.exists(
            fs, storage.join(root, journal.EVENTS_DIR)
        )
        trials = storage.read_trials(sweep_dir) if started else None
        curve_rows = _curve_rows(fs, root)
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt, truncated, wrong version
        raise SweepError(f"{sweep_dir}: unreadable results ({first_line(err)})") from None
    table = None if trials is None else trials.to_pandas()
    seen = {} if table is None else table["status"].value_counts().to_dict()
    counts = {s: int(seen.get(s, 0)) for s in STATUSES}
    counts["pending"] = max(plan["total"] - sum(counts.values()), 0)
    return {
        "name": plan["name"],
        "counts": counts,
        "trials": table,
        "curve_rows": curve_rows,
        "total": plan["total"],
    }


def sweep_outcome(sweep_dir: str) -> dict[str, Any]:
    """What the exit code of ``qsweep run`` / ``resume`` rests on, from trials.parquet alone
    (so a resumed sweep counts the trials of earlier drivers too): ``total`` planned trials,
    ``completed`` and ``stopped`` (ended early by the scheduler: a normal outcome),
    ``failed`` (with their ids, in the Parquet's order) and ``unfinished`` (planned but with
    no final row: never started, or still marked running)."""
    plan = stored_plan(sweep_dir)
    try:
        table = storage.read_trials(sweep_dir).select(["trial_id", "status"]).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt, truncated, wrong version
        raise SweepError(f"{sweep_dir}: unreadable results ({first_line(err)})") from None
    failed = [row["trial_id"] for row in table if row["status"] == "failed"]
    completed = sum(row["status"] == "completed" for row in table)
    stopped = sum(row["status"] == "stopped" for row in table)
    final = completed + stopped + len(failed)
    return {
        "total": plan["total"],
        "completed": completed,
        "stopped": stopped,
        "failed": failed,
        "unfinished": max(plan["total"] - final, 0),
    }


__all__ = ["STATUSES", "load_stored_plan", "stored_plan", "sweep_outcome", "sweep_status"]
