"""The trial event journal: status changes land as small files, folded into trials.parquet.

Rewriting trials.parquet at every trial start and end costs the whole table each time
(~280 ms at 10,000 rows), so a sweep's driver time grew with the square of its trials.
Instead each status change is one small file under ``<sweep>/events/``, named by a sequence
number, holding the trial's whole row (the trials schema), written atomically like every
file here: its cost does not depend on how many trials the sweep has. The writer folds the
journal into trials.parquet now and then and at the end: it writes the table with the last
sequence number it holds in the table's metadata, then deletes those event files.

A reader lays the events newer than that number over the table, in order: the newest row
of a trial wins. A crash at any point leaves each change in the table or in an event file
(or both); an event file left behind by a fold that died is skipped by its number, so the
order of the deletions does not matter.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

EVENTS_DIR = "events"
FOLDED_KEY = b"qsweep_events_folded"  # trials.parquet metadata: last event number it holds
_SUFFIX = ".parquet"
_ORDER = "__qsweep_event_order"


def event_path(events_dir: str, seq: int) -> str:
    return f"{events_dir}/{seq:012d}{_SUFFIX}"


def list_events(fs: pafs.FileSystem, events_dir: str) -> list[tuple[int, str]]:
    """``(sequence number, path)`` of every event file, oldest first (temp files skipped)."""
    infos = fs.get_file_info(pafs.FileSelector(events_dir, allow_not_found=True))
    found = []
    for info in infos:
        stem = info.base_name.removesuffix(_SUFFIX)
        if info.type == pafs.FileType.File and info.base_name.endswith(_SUFFIX) and stem.isdigit():
            found.append((int(stem), info.path))
    return sorted(found)


def folded_through(table: pa.Table | None) -> int:
    """The last event number ``table`` (trials.parquet) holds; -1 if none."""
    if table is None:
        return -1
    value = (table.schema.metadata or {}).get(FOLDED_KEY, b"-1").decode()
    return int(value) if value.lstrip("-").isdigit() else -1


def with_folded(table: pa.Table, seq: int) -> pa.Table:
    """``table`` marked as holding every event up to ``seq``."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), FOLDED_KEY: str(seq)})


def without_fold_mark(schema: pa.Schema) -> pa.Schema:
    """trials.parquet's schema as the contract defines it: without the fold mark."""
    metadata = {k: v for k, v in (schema.metadata or {}).items() if k != FOLDED_KEY}
    return schema.with_metadata(metadata)


def pending_events(
    fs: pafs.FileSystem, events_dir: str, table: pa.Table | None
) -> list[tuple[int, str]]:
    """The event files ``table`` does not hold yet."""
    done = folded_through(table)
    return [(seq, path) for seq, path in list_events(fs, events_dir) if seq > done]


def read_events(fs: pafs.FileSystem, events: list[tuple[int, str]]) -> list[pa.Table]:
    """The rows of those event files, in order; one that vanished meanwhile (a fold deleted
    it after writing the table the caller already read) is skipped."""
    tables = []
    for _seq, path in events:
        try:
            tables.append(pq.read_table(path, filesystem=fs))
        except FileNotFoundError:
            continue
    return tables


def overlay(table: pa.Table, events: list[pa.Table]) -> pa.Table:
    """``table`` with each trial's newest row from ``events`` (oldest first) in place of its
    own, sorted by trial id like the writer's table. Columns one side lacks are null there."""
    if not events:
        return table
    combined = pa.concat_tables([table, *events], promote_options="permissive")
    combined = combined.append_column(_ORDER, pa.array(range(combined.num_rows), pa.int64()))
    newest = combined.group_by("trial_id").aggregate([(_ORDER, "max")])
    keep = pc.is_in(combined[_ORDER], value_set=newest[f"{_ORDER}_max"])
    out = combined.filter(keep).drop_columns([_ORDER]).sort_by("trial_id")
    return out.replace_schema_metadata(table.schema.metadata)
