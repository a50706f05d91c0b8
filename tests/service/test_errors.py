"""Errors name what failed: the operation and the path or address, never a bare errno.

A user mistake is one line and exit 2. Anything unexpected is one line naming the
exception, the function that raised it and the file holding the full traceback (in the
sweep's directory when the command has one), and exit 1.
"""

from __future__ import annotations

import os
import time

import pytest
from typer.testing import CliRunner

from service import crashlog
from service.cli import app
from tests.service.harness import user_error, write_spec


def test_a_results_location_that_cannot_be_written_names_the_operation_and_the_path(
    qsweep, tmp_path
):
    spec_file = write_spec(tmp_path, "blocked")
    (tmp_path / "afile").write_text("a file where a folder should be")
    result = qsweep(
        "run", spec_file, "--results", tmp_path / "afile" / "sub", "--no-dashboard", timeout=120
    )
    error = user_error(result)
    assert error.startswith(
        f"error: writing {tmp_path / 'afile' / 'sub' / 'blocked' / 'sweep.yaml'}: "
    ), error
    assert "Not a directory" in error


def _bare_errno():
    os.getcwd()  # stands for the real case: Ray deleted the driver's current directory
    raise FileNotFoundError(2, "No such file or directory")


def test_an_unexpected_error_is_one_line_naming_it_and_its_traceback_file(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    monkeypatch.setattr("service.status.sweep_status", lambda _dir: _bare_errno())
    result = CliRunner().invoke(app, ["status", str(sweep_dir)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(
        "error: qsweep status failed unexpectedly: FileNotFoundError: No such file or directory "
        "(no path given) in _bare_errno (tests/service/test_errors.py:"
    ), line
    log = line.rsplit("full traceback: ", 1)[1]
    assert os.path.dirname(log) == str(sweep_dir)  # the sweep's directory, where the user looks
    text = open(log).read()
    assert (
        text.startswith("qsweep status\nTraceback (most recent call last):")
        and "_bare_errno" in text
    )


def test_without_a_sweep_directory_the_traceback_goes_to_the_temp_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(crashlog, "_sweep_dir", None)
    try:
        {}["missing"]
    except KeyError as err:
        line = crashlog.one_line("report", err)
    assert line.startswith(
        "error: qsweep report failed unexpectedly: KeyError: 'missing' in "
        "test_without_a_sweep_directory_the_traceback_goes_to_the_temp_directory ("
    ), line
    assert line.rsplit("full traceback: ", 1)[1].startswith(str(tmp_path) + os.sep)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (
            FileNotFoundError(2, "No such file or directory"),
            "FileNotFoundError: No such file or directory (no path given)",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/x/y"),
            "FileNotFoundError: No such file or directory: '/x/y'",
        ),
        (RuntimeError("first\nsecond"), "RuntimeError: first"),
    ],
)
def test_describe_gives_the_type_the_message_and_the_path_when_there_is_one(err, expected):
    assert crashlog.describe(err).startswith(expected + " in ")


def test_run_against_an_unreachable_cluster_names_the_address_within_seconds(qsweep, tmp_path):
    spec_file = write_spec(tmp_path, "nowhere")
    started = time.monotonic()
    result = qsweep(
        "run", spec_file, "--results", tmp_path / "results", "--address", "127.0.0.1:1", timeout=120
    )
    assert user_error(result).startswith(
        "error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"
    )
    assert time.monotonic() - started < 60  # ray.init alone retries for minutes
