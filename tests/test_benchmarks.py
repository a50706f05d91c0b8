"""Smoke test of the benchmark package: ``python -m benchmarks --quick`` runs every section.

Not a timed test: the numbers are not checked (a slow machine must not fail it), only that
the run does not crash and writes all five sections and the summary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import SECTIONS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmarks_write_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    for key in SECTIONS:
        assert f"<!-- section:{key} -->" in text and f"<!-- /section:{key} -->" in text, key
    for heading in ("## Machine", "## Reproduce", "## Summary of the bars"):
        assert heading in text
    assert "torch" in text and "ray" in text
