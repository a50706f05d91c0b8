"""Compacted curves (``contract.curves``): both layouts read alike, compaction is idempotent,
a flat file overrides its trial's compacted rows, stray generations are ignored, a real
kill -9 during compaction loses nothing, and older folders still load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from contract import storage
from contract.curves import LAYOUT_FILE, compact_curves, count_curve_rows, read_curves
from contract.schema import CURVES_SCHEMA, SCHEMA_VERSION, TRIALS_FILE, TRIALS_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "quick_golden"
ESTIMATORS = ("ste", "nspsa", "fogzo", "mezo")
BITS = (2, 4, 8)
KEY = [("trial_id", "ascending"), ("step", "ascending")]


def curve(tid: str, estimator: str, bits: int, seed: int, steps: int = 11, shift: float = 0.0):
    n = steps
    return pa.table(
        {
            "schema_version": pa.array([SCHEMA_VERSION] * n, pa.int32()),
            "sweep": ["synthetic"] * n,
            "trial_id": [tid] * n,
            "step": [10 * i for i in range(n)],
            "forwards": [2 * 10 * i for i in range(n)],
            "backwards": [0] * n,
            "flops": [1e6 * i for i in range(n)],
            "wall_s": [0.01 * i + shift for i in range(n)],
            "train_loss": [2.0 / (1 + i) + shift for i in range(n)],
            "eval_loss": [None if i % 3 else 2.1 / (1 + i) + shift for i in range(n)],
            "eval_metric": [None if i % 3 else i / n for i in range(n)],
            "peak_memory_bytes": [1000 + (bits or 0)] * n,
            "estimator": [estimator] * n,
            "bits": [bits] * n,
            "seed": [seed] * n,
        },
        schema=CURVES_SCHEMA,
    )


def make_sweep(directory: Path, trials: int, steps: int = 11) -> pa.Table:
    """A sweep folder with ``trials`` flat curve files (as the ledger writes them); its rows."""
    curves = directory / "curves"
    curves.mkdir(parents=True)
    tables = []
    for i in range(trials):
        estimator, bits = ESTIMATORS[i % len(ESTIMATORS)], BITS[(i // 4) % len(BITS)]
        tid = f"{estimator}-int{bits}-mlp-digits-s{i}-{i:06x}"
        table = curve(tid, estimator, bits, i, steps)
        pq.write_table(table, curves / f"{tid}.parquet")
        tables.append(table)
    pq.write_table(TRIALS_SCHEMA.empty_table(), directory / TRIALS_FILE)  # a sweep's folder
    return pa.concat_tables(tables).sort_by(KEY).combine_chunks()


def files(directory: Path) -> dict[str, int]:
    """Every file under ``directory`` (relative path -> mtime_ns)."""
    return {
        str(p.relative_to(directory)): p.stat().st_mtime_ns
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def canonical(table: pa.Table) -> pa.Table:
    """Rows in CURVES_SCHEMA, sorted by (trial_id, step): partition columns (dictionary /
    int32 as pandas and pyarrow infer them) cast back to the contract's types."""
    columns = [table[name].cast(CURVES_SCHEMA.field(name).type) for name in CURVES_SCHEMA.names]
    out = pa.Table.from_arrays(columns, schema=CURVES_SCHEMA.remove_metadata())
    return out.sort_by(KEY).combine_chunks()


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    return same_values(canonical(a), canonical(b))


def same_values(a: pa.Table, b: pa.Table) -> bool:
    """Equal row by row, NaN equal to NaN (Table.equals says NaN != NaN)."""
    return a.num_rows == b.num_rows and a.to_pandas().equals(b.to_pandas())


def assert_unique(table: pa.Table) -> None:
    keys = table.group_by(["trial_id", "step"]).aggregate([([], "count_all")])
    assert keys.num_rows == table.num_rows, "duplicate (trial_id, step)"


def third_party_reads(curves_dir: Path, hive: bool) -> dict[str, pa.Table]:
    """What pandas, pyarrow.dataset and duckdb read from the curves folder."""
    frame = pd.read_parquet(curves_dir)
    frame["estimator"] = frame["estimator"].astype(str)  # hive: categorical
    reads = {"pandas": pa.Table.from_pandas(frame, preserve_index=False)}
    partitioning = "hive" if hive else None
    reads["pyarrow.dataset"] = pds.dataset(
        curves_dir, format="parquet", partitioning=partitioning
    ).to_table()
    pattern = f"{curves_dir}/**/*.parquet" if hive else f"{curves_dir}/*.parquet"
    with duckdb.connect() as db:
        reads["duckdb"] = db.sql(
            f"select * from read_parquet('{pattern}', hive_partitioning={str(hive).lower()})"
        ).to_arrow_table()
    return reads


def test_compaction_is_idempotent_and_every_reader_sees_the_same_rows(tmp_path):
    expected = make_sweep(tmp_path, 48)
    curves_dir = tmp_path / "curves"
    before = read_curves(str(tmp_path))
    assert before.schema.equals(CURVES_SCHEMA) and before.equals(expected)
    for name, table in third_party_reads(curves_dir, hive=False).items():
        assert same_rows(table, expected), name

    result = compact_curves(str(tmp_path))
    assert result.changed and (result.rows, result.trials) == (48 * 11, 48)
    assert (result.files_before, result.files_after) == (48, len(ESTIMATORS) * len(BITS))
    layout = json.loads((curves_dir / LAYOUT_FILE).read_text())
    assert layout["generation"] == result.generation and layout["layout"] == "hive"
    assert sorted(layout["files"]) == sorted(p for p in files(curves_dir) if p != LAYOUT_FILE), (
        "only the new generation's part files are left"
    )
    assert all("/" in p for p in files(curves_dir) if p != LAYOUT_FILE), "flat files deleted"
    part = pq.read_table(curves_dir / layout["files"][0])
    assert "estimator" not in part.column_names and "bits" not in part.column_names
    assert part.equals(part.sort_by(KEY)), "part rows sorted by (trial_id, step)"

    after = read_curves(str(tmp_path))
    assert after.schema.equals(CURVES_SCHEMA) and after.equals(before)
    assert storage.read_results(str(tmp_path))[1].equals(before)
    assert count_curve_rows(*storage.resolve(str(curves_dir))) == before.num_rows
    for name, table in third_party_reads(curves_dir, hive=True).items():
        assert same_rows(table, expected), name

    compacted = files(curves_dir)
    again = compact_curves(str(tmp_path))
    assert not again.changed and again.generation == result.generation
    assert files(curves_dir) == compacted, "a second compaction writes and deletes nothing"
    assert read_curves(str(tmp_path)).equals(before)


def test_a_flat_file_overrides_its_trials_compacted_rows(tmp_path):
    expected = make_sweep(tmp_path, 24)
    compact_curves(str(tmp_path))
    tid = expected["trial_id"][5].as_py()
    # A resumed trial rewound to step 40 and went on with other numbers: its live curve.
    old = expected.filter(pc.equal(expected["trial_id"], tid))
    live = curve(tid, old["estimator"][0].as_py(), old["bits"][0].as_py(), 5, steps=7, shift=9.0)
    pq.write_table(live, tmp_path / "curves" / f"{tid}.parquet")
    others = expected.filter(pc.not_equal(expected["trial_id"], tid))
    want = pa.concat_tables([others, live]).sort_by(KEY).combine_chunks()

    got = read_curves(str(tmp_path))
    assert got.equals(want)
    assert_unique(got)
    assert count_curve_rows(*storage.resolve(str(tmp_path / "curves"))) == want.num_rows

    result = compact_curves(str(tmp_path))
    assert result.changed and result.files_before == 1 + len(ESTIMATORS) * len(BITS)
    assert not (tmp_path / "curves" / f"{tid}.parquet").exists()
    assert read_curves(str(tmp_path)).equals(want)


def test_part_files_of_another_generation_are_ignored_then_removed(tmp_path):
    make_sweep(tmp_path, 24)
    compact_curves(str(tmp_path))
    curves_dir = tmp_path / "curves"
    expected = read_curves(str(tmp_path))
    layout = json.loads((curves_dir / LAYOUT_FILE).read_text())
    some = curves_dir / layout["files"][0]
    # What a compaction killed before its switch leaves: its own generation's part files, in
    # existing partitions and in new ones (with its temp file), never named by _layout.json.
    shutil.copy(some, some.parent / "part-20991231T000000Zdeadbeef-0.parquet")
    stray = curves_dir / "estimator=zzz" / "bits=3"
    stray.mkdir(parents=True)
    shutil.copy(some, stray / "part-20991231T000000Zdeadbeef-0.parquet")
    (stray / ".part-20991231T000000Zdeadbeef-1.parquet.abcd1234.tmp").write_bytes(b"half")

    assert read_curves(str(tmp_path)).equals(expected)
    assert count_curve_rows(*storage.resolve(str(curves_dir))) == expected.num_rows

    result = compact_curves(str(tmp_path))
    assert result.changed and result.generation != layout["generation"]
    assert not (curves_dir / "estimator=zzz").exists()
    assert not any("deadbeef" in p or layout["generation"] in p for p in files(curves_dir))
    assert read_curves(str(tmp_path)).equals(expected)


def test_a_layout_of_a_newer_version_or_a_foreign_file_is_refused(tmp_path):
    make_sweep(tmp_path, 4)
    curves_dir = tmp_path / "curves"
    foreign = next(curves_dir.glob("*.parquet"))
    table = pq.read_table(foreign)
    meta = {**table.schema.metadata, b"qsweep_schema_version": b"99"}
    pq.write_table(table.replace_schema_metadata(meta), foreign)
    with pytest.raises(ValueError, match="schema version 99"):
        read_curves(str(tmp_path))
    with pytest.raises(ValueError, match="schema version 99"):
        compact_curves(str(tmp_path))
    assert foreign.exists(), "a failed compaction deletes nothing"

    pq.write_table(table.drop_columns(["wall_s", "eval_loss"]), foreign)
    with pytest.raises(ValueError, match=f"{foreign}: not a curve file .no column wall_s, eval"):
        read_curves(str(tmp_path))

    foreign.unlink()
    compact_curves(str(tmp_path))
    layout = json.loads((curves_dir / LAYOUT_FILE).read_text())
    (curves_dir / LAYOUT_FILE).write_text(json.dumps(layout | {"schema_version": 99}))
    with pytest.raises(ValueError, match="schema version 99"):
        read_curves(str(tmp_path))


@pytest.mark.parametrize("with_null", [False, True], ids=["odd-names", "null"])
def test_partition_values_that_need_encoding_round_trip(tmp_path, with_null):
    curves_dir = tmp_path / "curves"
    curves_dir.mkdir()
    estimators = ["a b/c%d", "x=y", None] if with_null else ["a b/c%d", "x=y", "ste"]
    tables = []
    for i, estimator in enumerate(estimators):
        table = curve(f"t{i}", estimator, None if estimator is None else 4, i)
        pq.write_table(table, curves_dir / f"t{i}.parquet")
        tables.append(table)
    expected = pa.concat_tables(tables).sort_by(KEY).combine_chunks()
    compact_curves(str(tmp_path))
    assert read_curves(str(tmp_path)).equals(expected)
    names = {"estimator=a%20b%2Fc%25d", "estimator=x%3Dy"}
    names.add("estimator=__HIVE_DEFAULT_PARTITION__" if with_null else "estimator=ste")
    assert {p.name for p in curves_dir.iterdir() if p.is_dir()} == names
    # pyarrow's hive reader decodes them alike (pandas's dictionaries cannot hold the null)
    table = pds.dataset(curves_dir, format="parquet", partitioning="hive").to_table()
    assert same_rows(table, expected)
    if not with_null:
        assert same_rows(_hive_table(curves_dir), expected)


def test_a_uri_location_works(tmp_path):
    expected = make_sweep(tmp_path, 8)
    uri = f"file://{tmp_path}"
    assert read_curves(uri).equals(expected)
    assert compact_curves(uri).changed
    assert read_curves(uri).equals(expected) and read_curves(str(tmp_path)).equals(expected)


# --- a real kill -9 during compaction -------------------------------------------------------

# The compaction in a process of its own, which prints "ready" once its imports are done. With
# a second argument N > 0 it SIGKILLs itself right after its N-th file operation (a part file
# or the layout written, a file deleted): a kill -9 at an exact point of the protocol.
_COMPACT = """
import os, signal, sys, time
from contract import curves
calls = [0]
def counted(fn):
    def operation(*args, **kwargs):
        out = fn(*args, **kwargs)
        calls[0] += 1
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return operation
curves.storage.write_parquet_atomic = counted(curves.storage.write_parquet_atomic)
curves.storage.write_text_atomic = counted(curves.storage.write_text_atomic)
curves._delete = counted(curves._delete)
print("ready", flush=True)
t = time.perf_counter()
curves.compact_curves(sys.argv[1])
print(time.perf_counter() - t, flush=True)
"""


def _start_compaction(sweep_dir: Path, die_after: int = 0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _COMPACT, str(sweep_dir), str(die_after)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"  # imports done: the compaction starts now
    return proc


def _state(curves_dir: Path) -> str:
    flat = sum(1 for p in curves_dir.glob("*.parquet"))
    parts = sum(1 for p in curves_dir.rglob("part-*.parquet"))
    layout = (curves_dir / LAYOUT_FILE).exists()
    return f"flat={flat} parts={parts} layout={layout}"


@pytest.fixture(scope="module")
def starts(tmp_path_factory):
    """Two starting points, each with its compaction timed: a finished sweep's flat files, and
    a compacted folder beside which a resumed sweep wrote every 7th trial flat again."""
    tmp = tmp_path_factory.mktemp("kill")
    flat = tmp / "flat"
    expected = make_sweep(flat, 200)
    mixed = tmp / "mixed"
    shutil.copytree(flat, mixed)
    compact_curves(str(mixed))
    for tid in expected["trial_id"].unique().to_pylist()[::7]:
        rows = expected.filter(pc.equal(expected["trial_id"], tid))
        pq.write_table(rows, mixed / "curves" / f"{tid}.parquet")
    assert read_curves(str(mixed)).equals(expected)
    duration = {}
    for start in (flat, mixed):
        timing = tmp / f"timing-{start.name}"
        # hard links: nothing rewrites a file in place (atomic renames, deletions)
        shutil.copytree(start, timing, copy_function=os.link)
        proc = _start_compaction(timing)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        duration[start.name] = float(out.strip())
        assert read_curves(str(timing)).equals(expected)
    return {"flat": flat, "mixed": mixed}, duration, expected


def _killed_then_compacted(start: Path, sweep_dir: Path, expected: pa.Table, **kill) -> str:
    """Copy ``start``, compact it in a subprocess killed by SIGKILL (after ``delay`` seconds,
    or by itself after its ``die_after``-th operation), check that nothing was lost or
    duplicated, compact again and check again; the folder's state at the kill."""
    shutil.copytree(start, sweep_dir, copy_function=os.link)
    proc = _start_compaction(sweep_dir, kill.get("die_after", 0))
    if "delay" in kill:
        time.sleep(kill["delay"])
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    state = _state(sweep_dir / "curves")
    if proc.returncode != -signal.SIGKILL:
        assert "delay" in kill and proc.returncode == 0, proc.returncode
        state = "finished"  # a loaded machine: the kill came too late
    got = read_curves(str(sweep_dir))
    assert_unique(got)
    assert got.equals(expected), f"{start.name} killed {kill}: {state}"
    result = compact_curves(str(sweep_dir))
    assert (result.rows, result.trials) == (expected.num_rows, 200)
    assert read_curves(str(sweep_dir)).equals(expected)
    parts = len(ESTIMATORS) * len(BITS)
    assert _state(sweep_dir / "curves") == f"flat=0 parts={parts} layout=True"
    return state


# (start, operations before the kill, the state it leaves): 12 part files are written, then
# the layout (operation 13), then the flat files (200, or 29) and the old part files (12)
# are deleted.
EXACT_KILLS = [
    ("flat", 1, "flat=200 parts=1 layout=False"),
    ("flat", 13, "flat=200 parts=12 layout=True"),
    ("flat", 100, "flat=113 parts=12 layout=True"),
    ("mixed", 6, "flat=29 parts=18 layout=True"),
    ("mixed", 30, "flat=12 parts=24 layout=True"),
    ("mixed", 48, "flat=0 parts=18 layout=True"),
]


@pytest.mark.parametrize(("start", "die_after", "state"), EXACT_KILLS)
def test_kill_9_at_each_step_of_compaction_loses_nothing(starts, tmp_path, start, die_after, state):
    folders, _, expected = starts
    sweep_dir = tmp_path / "sweep"
    assert _killed_then_compacted(folders[start], sweep_dir, expected, die_after=die_after) == state


def test_kill_9_at_any_moment_of_compaction_loses_nothing(starts, tmp_path):
    """Kills at moments spread over each compaction's measured duration (a write or a delete
    cut short among them, which the exact kills above never do)."""
    folders, duration, expected = starts
    states = []
    for k in range(6):
        start = "mixed" if k % 2 else "flat"
        delay = duration[start] * (k + 0.5) / 7
        states.append(
            _killed_then_compacted(folders[start], tmp_path / str(k), expected, delay=delay)
        )
    assert states.count("finished") <= 3, (duration, states)


# --- older folders ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["5", "6"])
def test_an_older_flat_folder_still_loads_and_compacts(tmp_path, version):
    golden = pq.read_table(GOLDEN / "curves.parquet")
    shutil.copy(GOLDEN / "trials.parquet", tmp_path / TRIALS_FILE)
    curves_dir = tmp_path / "curves"
    curves_dir.mkdir()
    meta = {**golden.schema.metadata, b"qsweep_schema_version": version.encode()}
    for tid in golden["trial_id"].unique().to_pylist():
        rows = golden.filter(pc.equal(golden["trial_id"], tid))
        pq.write_table(rows.replace_schema_metadata(meta), curves_dir / f"{tid}.parquet")
    expected = golden.cast(CURVES_SCHEMA).sort_by(KEY).combine_chunks()

    trials, curves = storage.read_results(str(tmp_path))
    assert trials.num_rows == pq.read_metadata(GOLDEN / "trials.parquet").num_rows
    assert pc.sum(pc.is_nan(expected["train_loss"])).as_py() > 0  # diverged trials: NaN
    assert curves.schema.equals(CURVES_SCHEMA) and same_values(curves, expected)
    compact_curves(str(tmp_path))
    assert same_values(storage.read_results(str(tmp_path))[1], expected)
    assert same_rows(_hive_table(curves_dir), expected)


def _hive_table(curves_dir: Path) -> pa.Table:
    """What pandas reads from a compacted curves folder, as a table."""
    frame = pd.read_parquet(curves_dir)
    frame["estimator"] = frame["estimator"].astype(str)  # categorical
    return pa.Table.from_pandas(frame, preserve_index=False)
