"""Where results live: a local path or any pyarrow filesystem URI (``s3://``, ``gs://``, ``file://``).

Only pyarrow here (no Ray, no torch), so ``analysis`` and ``qsweep status`` can read results
without starting anything. Every write is all-or-nothing: locally a temp file in the same
directory is renamed over the target (``os.replace`` is atomic on one filesystem, so a crash
leaves the old file or the new one, never half of one); object stores make a single PUT
visible only once it completes, so there one ``open_output_stream`` write is enough.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from contract import journal
from contract.schema import (
    DIAGNOSTICS_DIR,
    DIAGNOSTICS_SCHEMA,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    TRIALS_FILE,
    TRIALS_SCHEMA,
    conform_trials,
    upgrade_trials,
)


class StorageError(OSError):
    """An I/O error that names what was being done and where: ``writing /r/x.parquet: No space
    left on device``. Still an ``OSError`` (errno, strerror and filename kept), so callers that
    tolerate I/O failures keep doing so; the user never sees a bare ``[Errno 2] ...``."""

    def __init__(self, errno: int | None, reason: str, operation: str, path: str) -> None:
        super().__init__(errno, reason, path)
        self.operation = operation

    def __str__(self) -> str:
        return f"{self.operation} {self.filename}: {self.strerror}"


def first_line(err: BaseException) -> str:
    """An error's first line, at most 300 characters: pyarrow, yaml and Ray messages can run
    to many lines, and every user-facing error is one."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


@contextlib.contextmanager
def naming(operation: str, path: str) -> Iterator[None]:
    """Re-raise an ``OSError`` inside as a ``StorageError`` naming ``operation`` and ``path``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as err:
        text = str(err).strip()
        reason = err.strerror or (text.splitlines()[0] if text else type(err).__name__)
        raise StorageError(err.errno, reason, operation, path) from err


def is_uri(location: str) -> bool:
    """Whether ``location`` names a filesystem by scheme (``s3://``, ``file://``, ...) rather
    than being a local path."""
    return "://" in location


def absolute(location: str) -> str:
    """A local path made absolute (Tune and pyarrow read a relative one as a URI); a URI as is."""
    if is_uri(location):
        return location.rstrip("/")
    return os.path.abspath(os.path.expanduser(location))


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path (made absolute) or a filesystem URI."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), absolute(location)


def join(*parts: str) -> str:
    """Join path parts with ``/``: pyarrow filesystem paths are POSIX-style everywhere."""
    return posixpath.join(*parts)


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


# ``_write_atomic``'s temp names: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temp_files(fs: pafs.FileSystem, directory: str) -> list[str]:
    """Delete the temp files that a writer killed mid-write left in ``directory``; return them.

    Only for a directory no one is writing to now (a sweep's driver calls it as it starts):
    a live writer's temp file matches too. Object stores have none (one PUT per write).
    """
    if not _is_local(fs):
        return []
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
        if info.type == pafs.FileType.File and _TEMP_NAME.fullmatch(info.base_name):
            try:
                fs.delete_file(info.path)
            except FileNotFoundError:
                continue
            removed.append(info.path)
    return removed


def _write_atomic(fs: pafs.FileSystem, path: str, write: Callable[[IO[bytes]], None]) -> None:
    with naming("writing", path):
        _write_atomic_unnamed(fs, path, write)


def _write_atomic_unnamed(
    fs: pafs.FileSystem, path: str, write: Callable[[IO[bytes]], None]
) -> None:
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if not _is_local(fs):
        with fs.open_output_stream(path) as out:
            write(out)
        return
    # A leading dot hides the temp file from pyarrow.dataset / pandas readers of the folder.
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{posixpath.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write ``table`` to ``path`` so that readers see the old file or the new one, never a mix."""
    _write_atomic(fs, path, lambda out: pq.write_table(table, out))


def write_text_atomic(fs: pafs.FileSystem, path: str, text: str) -> None:
    """Atomically write a UTF-8 text file (the stored sweep spec, the report)."""
    write_bytes_atomic(fs, path, text.encode())


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Atomically write ``data`` (a stage's model checkpoint)."""
    _write_atomic(fs, path, lambda out: out.write(data))


def exists(fs: pafs.FileSystem, path: str) -> bool:
    with naming("checking", path):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete_dir(fs: pafs.FileSystem, path: str) -> None:
    with naming("deleting", path):
        fs.delete_dir(path)


def read_parquet(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    """The table at ``path``, or None if there is no such file."""
    with naming("reading", path):
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return pq.read_table(path, filesystem=fs)


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The text file at ``path``, or None if there is no such file."""
    with naming("reading", path):
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.readall().decode()


def list_files(fs: pafs.FileSystem, directory: str, suffix: str = "") -> list[str]:
    """Sorted paths of the files directly in ``directory`` ending in ``suffix``.

    Hidden (``.``) and ``_``-prefixed names are skipped, as pyarrow.dataset does, so an
    in-flight temp file is never mistaken for a result.
    """
    with naming("listing", directory):
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and info.base_name.endswith(suffix)
        and not info.base_name.startswith((".", "_"))
    )


def check_schema_version(table: pa.Table | pa.Schema, where: str) -> None:
    """Refuse files written under another version of the contract instead of misreading them."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    found = (schema.metadata or {}).get(b"qsweep_schema_version", b"?").decode()
    if found not in {str(v) for v in READABLE_SCHEMA_VERSIONS}:
        raise ValueError(
            f"{where}: written with qsweep schema version {found}, "
            f"this qsweep reads version {SCHEMA_VERSION}"
        )


def read_results(sweep_dir: str) -> tuple[pa.Table, pa.Table]:
    """``(trials, curves)`` of one sweep folder, each one table with the contract's schema.

    Missing files give empty tables, so a sweep that has not reported yet reads cleanly. The
    curves come from either layout, flat per-trial files or the compacted dataset
    (``contract.curves``), sorted by ``(trial_id, step)``.
    """
    from contract.curves import read_curves  # it builds on this module

    return read_trials(sweep_dir), read_curves(sweep_dir)


def read_trials(sweep_dir: str) -> pa.Table:
    """The trials table of one sweep folder in this version's schema (empty if none yet),
    with the status changes of its event journal not folded into it yet (``contract.journal``)."""
    fs, root = resolve(sweep_dir)
    path, events_dir = join(root, TRIALS_FILE), join(root, journal.EVENTS_DIR)
    for _attempt in range(5):  # a fold between reading the table and its events: read again
        trials = read_parquet(fs, path)
        with naming("listing", events_dir):
            events = journal.pending_events(fs, events_dir, trials)
        with naming("reading the events in", events_dir):
            tables = journal.read_events(fs, events)
        if len(tables) == len(events):
            break
    if trials is None:
        trials = TRIALS_SCHEMA.empty_table()
    check_schema_version(trials, path)
    trials = upgrade_trials(trials)  # an older version's table in this version's columns
    if tables:
        trials = upgrade_trials(journal.overlay(conform_trials(trials), tables))
    return conform_trials(trials)


def read_diagnostics(sweep_dir: str) -> pa.Table:
    """The gradient-quality probes of one sweep folder (``DIAGNOSTICS_SCHEMA``); an empty
    table when the sweep has none (diagnostics off, or a folder older than the table)."""
    fs, root = resolve(sweep_dir)
    parts = []
    for path in list_files(fs, join(root, DIAGNOSTICS_DIR), ".parquet"):
        part = pq.read_table(path, filesystem=fs)
        check_schema_version(part, path)
        parts.append(part.cast(DIAGNOSTICS_SCHEMA))
    return pa.concat_tables(parts) if parts else DIAGNOSTICS_SCHEMA.empty_table()
