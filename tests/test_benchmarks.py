"""The benchmark package writes numbers into a hand-written BENCHMARKS.md without touching
the hand-written text, and ``python -m benchmarks --quick`` runs every section.

Not a timed test: no number is checked (a slow machine must not fail it), only where the
numbers land and that every section runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import SECTIONS
from benchmarks.__main__ import DATA, blocks, replace_block, section_block, with_summary
from benchmarks.common import Bar, Section, Table

REPO = Path(__file__).resolve().parents[1]


def _section(key: str, value: float) -> Section:
    table = Table("Times", ["case", "ratio"], [["mlp", f"{value:.2f}"]])
    return Section(key, f"Title {key}", [table], [Bar(f"{key} ratio", value, 2.0)], {"r": value})


def test_a_rerun_replaces_only_the_numbers() -> None:
    hand = "# BENCHMARKS\n\nWhat the numbers mean, by hand.\n"
    text = with_summary(replace_block(hand, "a", section_block(_section("a", 1.5), "full"), "A"))
    text = text.replace("## A\n", "## A\n\nWhy section a is 1.5, by hand.\n")
    rerun = with_summary(replace_block(text, "a", section_block(_section("a", 3.0), "full"), "A"))
    assert rerun.startswith(hand) and "Why section a is 1.5, by hand." in rerun
    assert "| mlp | 3.00 |" in rerun and "| mlp | 1.50 |" not in rerun
    assert rerun.count("<!-- generated:a -->") == 1
    assert "0 of 1 bars met." in blocks(rerun)["summary"]  # 3.0 misses its bar of 2


def test_the_summary_counts_every_section_in_the_file() -> None:
    text = "# BENCHMARKS\n"
    for key, value in (("a", 1.0), ("gpu", 5.0)):
        text = replace_block(text, key, section_block(_section(key, value), "full"), key)
    summary = blocks(with_summary(text))["summary"]
    assert "1 of 2 bars met." in summary
    assert (
        "| a ratio | 1 | <= 2 | yes |" in summary and "| gpu ratio | 5 | <= 2 | **no** |" in summary
    )
    assert all(DATA in blocks(text)[key] for key in ("a", "gpu"))


def test_the_committed_file_has_every_section() -> None:
    found = blocks((REPO / "BENCHMARKS.md").read_text(encoding="utf-8"))
    assert {*SECTIONS, "machine", "summary"} <= set(found)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmarks_write_every_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# BENCHMARKS\n\nHand-written.\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# BENCHMARKS\n\nHand-written.\n")
    found = blocks(text)
    for key in (*SECTIONS, "machine", "summary"):
        assert key in found, key
    for key in SECTIONS:
        assert "|---|" in found[key], key  # its tables were written
        assert DATA in found[key], key
    assert "torch" in found["machine"] and "ray" in found["machine"]
