"""The curves of one sweep folder in either layout, and their compaction.

Two layouts live side by side under ``<sweep>/curves/``:

- **flat**: one file per trial, ``curves/<trial_id>.parquet``, rewritten whole at each of the
  trial's evaluations (``service.ledger``). Every folder of schema version 6 or older holds
  only these; a running or resumed sweep writes them still.
- **compacted**: a Hive-partitioned dataset, ``curves/estimator=<e>/bits=<b>/part-<generation>-
  <k>.parquet``, rows sorted by ``(trial_id, step)``, the partition columns not stored in the
  files (pandas, ``pyarrow.dataset(..., partitioning="hive")`` and duckdb's
  ``hive_partitioning`` add them back from the path). ``curves/_layout.json`` names the
  current generation and its files; part files of any other generation (a compaction killed
  before its switch, or one killed while deleting the old files) are not part of the data.

``read_curves`` reads both: a trial with a flat file is read from that file alone (the
live curve of a resumed trial is newer than its compacted rows: the ledger loaded them and
rewrites the trial's whole curve), every other trial from the current generation.

``compact_curves`` folds everything into a new generation: it writes the new part files,
then switches ``_layout.json`` to them (one atomic write), then deletes the flat files it
folded in and the other generations' files. A kill at any point loses nothing: before the
switch the old generation and the flat files are the data; after it the new generation holds
every row, and a flat file not yet deleted holds the same rows as its compacted ones. Run
one compaction at a time, and not while a driver writes the folder (``qsweep run`` compacts
when its sweep is over): a flat file rewritten during a compaction is kept (it overrides),
but two compactions racing could delete each other's files.

Only pyarrow and the standard library here, like the rest of ``contract``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from contract import storage
from contract.schema import CURVES_DIR, CURVES_SCHEMA, SCHEMA_VERSION

__all__ = [
    "LAYOUT_FILE",
    "PARTITIONING",
    "CompactResult",
    "compact_curves",
    "count_curve_rows",
    "curve_rows_by_trial",
    "read_curves",
]

LAYOUT_FILE = "_layout.json"  # "_": pyarrow.dataset, pandas and duckdb skip it
PARTITIONING = ("estimator", "bits")
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # Hive's (and pyarrow's) name for a null value
MAX_ROWS_PER_FILE = 1_000_000  # ~90,000 trials of 11 rows in one estimator x bits: one file
_PART = re.compile(r"part-(?P<generation>[0-9A-Za-z]+)-(?P<k>[0-9]+)\.parquet")
# storage._write_atomic's temp file of the layout file, left by a compaction killed writing it
_LAYOUT_TEMP = re.compile(r"\._layout\.json\.[a-z0-9_]{8}\.tmp")
_READ_THREADS = 8  # flat files are small: reading them is mostly waiting on open/close
_ATTEMPTS = 5
# the columns a part file stores: all but the partition columns
_STORED_SCHEMA = pa.schema(
    [f for f in CURVES_SCHEMA if f.name not in PARTITIONING], metadata=CURVES_SCHEMA.metadata
)


@dataclass(frozen=True)
class CompactResult:
    """What ``compact_curves`` did. ``changed`` is False for a folder already compacted (or
    without curves): nothing was written or deleted."""

    rows: int
    trials: int
    files_before: int  # flat files + part files of every generation
    files_after: int  # part files of the current generation + flat files left (none, normally)
    generation: str | None
    changed: bool

    def summary(self) -> str:
        if not self.changed:
            return (
                f"already compacted: {self.rows} curve rows of {self.trials} trials "
                f"in {self.files_after} files"
            )
        return (
            f"compacted {self.rows} curve rows of {self.trials} trials: "
            f"{self.files_before} files -> {self.files_after}"
        )


# --- the layout file and partition paths -----------------------------------------------------


def _encode(value: Any) -> str:
    """A partition value as a directory name's value: percent-encoded (pyarrow's and duckdb's
    hive readers decode it), Hive's default name for null."""
    if value is None:
        return NULL_PARTITION
    return quote(str(value), safe="")


def _decode(text: str, type_: pa.DataType) -> Any:
    if text == NULL_PARTITION:
        return None
    value = unquote(text)
    return int(value) if pa.types.is_integer(type_) else value


def _partition_dir(values: tuple[Any, ...]) -> str:
    return "/".join(f"{name}={_encode(v)}" for name, v in zip(PARTITIONING, values))


def _partition_values(relative: str, where: str) -> tuple[Any, ...]:
    """The partition values of a part file from its path relative to ``curves/``."""
    directories = relative.split("/")[:-1]
    if len(directories) != len(PARTITIONING):
        raise ValueError(f"{where}: not a part file of the curves layout")
    values = []
    for name, directory in zip(PARTITIONING, directories):
        key, sep, text = directory.partition("=")
        if key != name or not sep:
            raise ValueError(f"{where}: not a part file of the curves layout")
        try:
            values.append(_decode(text, CURVES_SCHEMA.field(name).type))
        except ValueError:
            raise ValueError(f"{where}: {name}={text} is not a valid {name}") from None
    return tuple(values)


def _read_layout(fs: pafs.FileSystem, curves_dir: str) -> dict[str, Any] | None:
    """The layout file's content; None if there is none (nothing compacted yet)."""
    path = storage.join(curves_dir, LAYOUT_FILE)
    text = storage.read_text(fs, path)
    if text is None:
        return None
    try:
        layout = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: unreadable (not JSON)") from None
    if not isinstance(layout, dict):
        raise ValueError(f"{path}: unreadable (not a JSON object)")
    version = layout.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: written with qsweep schema version {version}, "
            f"this qsweep reads version {SCHEMA_VERSION}"
        )
    files = layout.get("files")
    if (
        layout.get("layout") != "hive"
        or list(layout.get("partitioning") or ()) != list(PARTITIONING)
        or not isinstance(layout.get("generation"), str)
        or not isinstance(files, list)
        or not all(isinstance(f, str) and _PART.fullmatch(f.rsplit("/", 1)[-1]) for f in files)
    ):
        raise ValueError(f"{path}: not a curves layout this qsweep knows")
    return layout


def _new_generation() -> str:
    """Sortable by time, unique by its random tail: ``20261201T060400Z3f9a1c2b``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + secrets.token_hex(4)


# --- reading ---------------------------------------------------------------------------------


def _flat_files(fs: pafs.FileSystem, curves_dir: str) -> list[pafs.FileInfo]:
    """The per-trial files directly in ``curves/`` (hidden temp files and ``_`` names skipped)."""
    with storage.naming("listing", curves_dir):
        infos = fs.get_file_info(pafs.FileSelector(curves_dir, allow_not_found=True))
    return sorted(
        (
            info
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_"))
        ),
        key=lambda info: info.path,
    )


def _read_file(fs: pafs.FileSystem, path: str) -> pa.Table:
    """One curve file, its contract version checked (a ``StorageError`` caused by
    ``FileNotFoundError`` when a compaction deleted it meanwhile: the caller reads again)."""
    with storage.naming("reading", path), fs.open_input_file(path) as f:
        file = pq.ParquetFile(f)
        storage.check_schema_version(file.schema_arrow, path)
        return file.read(use_threads=False)


def _read_flat(fs: pafs.FileSystem, paths: list[str]) -> list[pa.Table]:
    if len(paths) < 16:
        return [_read_file(fs, p) for p in paths]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        return list(pool.map(lambda p: _read_file(fs, p), paths))


def _read_part(fs: pafs.FileSystem, curves_dir: str, relative: str) -> pa.Table:
    path = storage.join(curves_dir, relative)
    table = _read_file(fs, path)
    values = _partition_values(relative, path)
    for name, value in zip(PARTITIONING, values):
        if name in table.column_names:  # not written by compact_curves, but harmless
            table = table.drop_columns([name])
        type_ = CURVES_SCHEMA.field(name).type
        table = table.append_column(
            pa.field(name, type_), pa.repeat(pa.scalar(value, type_), table.num_rows)
        )
    return table


def _conform(paths: Iterable[str], tables: Iterable[pa.Table]) -> list[pa.Table]:
    """The tables in ``CURVES_SCHEMA``, those of one physical schema concatenated first (one
    cast for 10,000 flat files of one writer instead of 10,000)."""
    groups: list[tuple[pa.Schema, str, list[pa.Table]]] = []
    for path, table in zip(paths, tables):
        schema = table.schema.remove_metadata()
        table = table.replace_schema_metadata(None)
        for known, _first, members in groups:
            if known.equals(schema):
                members.append(table)
                break
        else:
            groups.append((schema, path, [table]))
    out = []
    for schema, first, members in groups:
        missing = [name for name in CURVES_SCHEMA.names if name not in schema.names]
        if missing:
            raise ValueError(f"{first}: not a curve file (no column {', '.join(missing)})")
        out.append(pa.concat_tables(members).select(CURVES_SCHEMA.names).cast(CURVES_SCHEMA))
    return out


def _read_once(
    fs: pafs.FileSystem, curves_dir: str
) -> tuple[pa.Table, dict[str, Any] | None, list[pafs.FileInfo]]:
    layout = _read_layout(fs, curves_dir)
    flat = _flat_files(fs, curves_dir)
    paths = [info.path for info in flat]
    flat_tables = _conform(paths, _read_flat(fs, paths))
    compacted = []
    if layout is not None:
        paths = [storage.join(curves_dir, relative) for relative in layout["files"]]
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            tables = pool.map(lambda r: _read_part(fs, curves_dir, r), layout["files"])
            compacted = _conform(paths, tables)
    if compacted and flat:
        # a flat file holds one trial, named by it: all of that trial's rows come from it
        names = [info.base_name.removesuffix(".parquet") for info in flat]
        live = pa.concat_arrays(
            [pa.array(names, pa.string())]
            + [chunk for t in flat_tables for chunk in t["trial_id"].chunks]
        )
        compacted = [
            t.filter(pc.invert(pc.is_in(t["trial_id"], value_set=live))) for t in compacted
        ]
    parts = compacted + flat_tables
    table = pa.concat_tables(parts) if parts else CURVES_SCHEMA.empty_table()
    if table.num_rows:
        table = table.sort_by([("trial_id", "ascending"), ("step", "ascending")])
    return table.combine_chunks().replace_schema_metadata(CURVES_SCHEMA.metadata), layout, flat


def _read(
    fs: pafs.FileSystem, curves_dir: str
) -> tuple[pa.Table, dict[str, Any] | None, list[pafs.FileInfo]]:
    """Every curve row, the layout it was read under and the flat files it read. A compaction
    that switches the layout or deletes a file while this reads makes it read again: the
    layout is read before and after, and every deletion follows a switch."""
    for attempt in range(_ATTEMPTS):
        try:
            table, layout, flat = _read_once(fs, curves_dir)
        except storage.StorageError as err:
            if attempt + 1 < _ATTEMPTS and _is_not_found(err):
                continue
            raise
        if _generation(_read_layout(fs, curves_dir)) == _generation(layout):
            return table, layout, flat
    raise storage.StorageError(
        None, "the curves changed while being read, five times over", "reading", curves_dir
    )


def _is_not_found(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, FileNotFoundError):
            return True
        err = err.__cause__
    return False


def _generation(layout: dict[str, Any] | None) -> str | None:
    return None if layout is None else layout["generation"]


def read_curves(sweep_dir: str) -> pa.Table:
    """Every curve row of one sweep folder (local path or pyarrow filesystem URI) in
    ``CURVES_SCHEMA``, sorted by ``(trial_id, step)``, from the flat per-trial files and the
    compacted dataset alike; empty if the sweep has none yet. Each file's contract version is
    checked (``ValueError`` naming it otherwise)."""
    fs, root = storage.resolve(sweep_dir)
    return _read(fs, storage.join(root, CURVES_DIR))[0]


def curve_rows_by_trial(
    fs: pafs.FileSystem, curves_dir: str
) -> dict[str, dict[int, dict[str, Any]]]:
    """``{trial_id: {step: row}}`` of every curve row under ``curves_dir`` (both layouts, as
    ``read_curves``): what a resumed driver's ledger extends."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row in _read(fs, curves_dir)[0].to_pylist():
        out.setdefault(row["trial_id"], {})[row["step"]] = row
    return out


def count_curve_rows(fs: pafs.FileSystem, curves_dir: str) -> int:
    """How many rows ``read_curves`` would return, from the Parquet footers where that is
    enough (no flat file overrides a compacted trial), each file's version checked."""
    layout = _read_layout(fs, curves_dir)
    flat = _flat_files(fs, curves_dir)
    if layout is None or not flat:
        total = 0
        paths = [info.path for info in flat]
        if layout is not None:
            paths += [storage.join(curves_dir, r) for r in layout["files"]]
        for path in paths:
            with storage.naming("reading", path), fs.open_input_file(path) as f:
                footer = pq.ParquetFile(f)
                storage.check_schema_version(footer.schema_arrow, path)
                total += footer.metadata.num_rows
        return total
    return _read(fs, curves_dir)[0].num_rows


# --- compaction ------------------------------------------------------------------------------


def _all_files(fs: pafs.FileSystem, curves_dir: str) -> list[pafs.FileInfo]:
    with storage.naming("listing", curves_dir):
        return fs.get_file_info(pafs.FileSelector(curves_dir, allow_not_found=True, recursive=True))


def _relative(curves_dir: str, path: str) -> str:
    return path[len(curves_dir.rstrip("/")) + 1 :]


def _part_files(fs: pafs.FileSystem, curves_dir: str) -> list[str]:
    """Part files of every generation, relative to ``curves/``."""
    return sorted(
        _relative(curves_dir, info.path)
        for info in _all_files(fs, curves_dir)
        if info.type == pafs.FileType.File
        and "/" in _relative(curves_dir, info.path)
        and _PART.fullmatch(info.base_name)
    )


def _partitions(table: pa.Table) -> list[tuple[Any, ...]]:
    keys = table.select(list(PARTITIONING)).group_by(list(PARTITIONING)).aggregate([])
    return sorted(
        (tuple(row[name] for name in PARTITIONING) for row in keys.to_pylist()),
        key=lambda values: tuple((v is None, v) for v in values),
    )


def _in_partition(table: pa.Table, values: tuple[Any, ...]) -> pa.Table:
    mask = None
    for name, value in zip(PARTITIONING, values):
        column = table[name]
        match = (
            pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
        )
        mask = match if mask is None else pc.and_(mask, match)
    return table.filter(mask)


def _write_generation(
    fs: pafs.FileSystem, curves_dir: str, table: pa.Table, generation: str
) -> list[str]:
    """Write ``table`` as the part files of ``generation``; their paths relative to curves/."""
    files = []
    for values in _partitions(table):
        rows = _in_partition(table, values).drop_columns(list(PARTITIONING))
        rows = rows.cast(_STORED_SCHEMA)
        directory = _partition_dir(values)
        for k, start in enumerate(range(0, rows.num_rows, MAX_ROWS_PER_FILE)):
            relative = f"{directory}/part-{generation}-{k}.parquet"
            storage.write_parquet_atomic(
                fs,
                storage.join(curves_dir, relative),
                rows.slice(start, MAX_ROWS_PER_FILE),
            )
            files.append(relative)
    return files


def _delete(fs: pafs.FileSystem, path: str) -> None:
    try:
        with storage.naming("deleting", path):
            fs.delete_file(path)
    except storage.StorageError as err:
        if not _is_not_found(err):
            raise


def _remove_empty_dirs(fs: pafs.FileSystem, curves_dir: str) -> None:
    """Partition directories left without files (an older generation's), deepest first."""
    infos = _all_files(fs, curves_dir)
    holding = set()
    for info in infos:
        if info.type == pafs.FileType.File:
            parent = info.path.rsplit("/", 1)[0]
            while len(parent) > len(curves_dir.rstrip("/")):
                holding.add(parent)
                parent = parent.rsplit("/", 1)[0]
    directories = [i.path for i in infos if i.type == pafs.FileType.Directory]
    for directory in sorted(directories, key=lambda p: -p.count("/")):
        if directory not in holding:
            try:
                fs.delete_dir(directory)
            except OSError:  # not empty after all (a writer), or gone: leave it
                continue


def compact_curves(sweep_dir: str) -> CompactResult:
    """Fold every curve row of a sweep folder into a new generation of the compacted dataset,
    then delete what it replaces (see the module docstring for why a kill loses nothing).
    A folder already compacted, with no flat file and no other generation's file, is left as
    it is (``changed`` False)."""
    fs, root = storage.resolve(sweep_dir)
    curves_dir = storage.join(root, CURVES_DIR)
    if not storage.exists(fs, curves_dir):
        return CompactResult(0, 0, 0, 0, None, False)
    for info in _all_files(fs, curves_dir):  # a killed compaction's temp files
        if info.type == pafs.FileType.Directory:  # (partition folders: only compactions write)
            storage.remove_stale_temp_files(fs, info.path)
        elif _LAYOUT_TEMP.fullmatch(info.base_name) and "/" not in _relative(curves_dir, info.path):
            _delete(fs, info.path)
    parts_before = _part_files(fs, curves_dir)
    table, layout, flat = _read(fs, curves_dir)
    trials = len(pc.unique(table["trial_id"])) if table.num_rows else 0
    files_before = len(flat) + len(parts_before)
    current = sorted(layout["files"]) if layout is not None else []
    if not flat and current == parts_before:
        return CompactResult(
            table.num_rows, trials, files_before, files_before, _generation(layout), False
        )

    generation = _new_generation()
    files = _write_generation(fs, curves_dir, table, generation)
    storage.write_text_atomic(
        fs,
        storage.join(curves_dir, LAYOUT_FILE),
        json.dumps(
            {
                "layout": "hive",
                "partitioning": list(PARTITIONING),
                "generation": generation,
                "schema_version": SCHEMA_VERSION,
                "rows": table.num_rows,
                "trials": trials,
                "files": files,
            },
            indent=1,
        )
        + "\n",
    )
    # From here the new generation is the data. Delete the flat files it read, unless one was
    # rewritten since (a driver still writing): that one stays and overrides its trial's rows.
    read = {info.path: (info.mtime_ns, info.size) for info in flat}
    if _generation(_read_layout(fs, curves_dir)) != generation:  # another compaction won
        return CompactResult(table.num_rows, trials, files_before, len(files), generation, True)
    kept = 0
    for info in _flat_files(fs, curves_dir):
        if read.get(info.path) == (info.mtime_ns, info.size):
            _delete(fs, info.path)
        else:
            kept += 1
    keep = set(files)
    for relative in _part_files(fs, curves_dir):
        if relative not in keep:
            _delete(fs, storage.join(curves_dir, relative))
    _remove_empty_dirs(fs, curves_dir)
    return CompactResult(table.num_rows, trials, files_before, len(files) + kept, generation, True)
