"""``qsweep compact DIR``: bad input is one line and exit 2; a sweep folder is compacted once,
and a second call changes nothing."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from contract.curves import read_curves
from service.cli import app
from tests.contract.test_curves import make_sweep


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "missing", "no such results folder"),
        (lambda d: d, "not a qsweep results folder"),
        (lambda d: (d / "a file").write_text("x") and d / "a file", "not a folder"),
    ],
    ids=["missing", "not-a-sweep", "a-file"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, says):
    target = make(tmp_path)
    error = _one_line_error(CliRunner().invoke(app, ["compact", str(target)]))
    assert says in error and str(target) in error, error


def test_a_damaged_curve_file_is_one_line_and_exit_2(tmp_path):
    make_sweep(tmp_path, 3)
    damaged = next((tmp_path / "curves").glob("*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:50])
    error = _one_line_error(CliRunner().invoke(app, ["compact", str(tmp_path)]))
    assert "curves not compacted" in error, error
    assert len(list((tmp_path / "curves").glob("*.parquet"))) == 3  # nothing deleted


def test_compact_says_what_it_did(tmp_path):
    expected = make_sweep(tmp_path, 24)
    result = CliRunner().invoke(app, ["compact", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "compacted 264 curve rows of 24 trials: 24 files -> 12" in result.stdout
    assert read_curves(str(tmp_path)).equals(expected)
    assert not list((tmp_path / "curves").glob("*.parquet"))
    assert len(list((tmp_path / "curves").rglob("part-*.parquet"))) == 12
    assert pq.read_table(next((tmp_path / "curves").rglob("part-*.parquet"))).num_rows == 22

    again = CliRunner().invoke(app, ["compact", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "already compacted: 264 curve rows of 24 trials in 12 files" in again.stdout
