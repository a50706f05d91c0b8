"""The report in its layers: ``report_data`` computes the tables as data and writes nothing;
``report_text`` and ``report_html`` render a computed ``Report`` and recompute nothing;
``report.report_command`` only wires them.

The sweep is built in memory (no Parquet, no folder), so every number below is known."""

from __future__ import annotations

import dataclasses
import inspect
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from analysis import claims, diagnostics, report_data, report_plotly, tradeoff
from analysis.load import SweepResults, load_results
from analysis.report import report_command
from analysis.report_data import Report, build_report
from analysis.report_html import render_html, write_report
from analysis.report_text import headline_text, ratio_sentences
from contract import storage
from contract.schema import CURVES_SCHEMA
from service.rows import trials_schema
from tests.analysis.test_tradeoff import FLOPS, curve_rows, trial_row, write_sweep

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

REPO = Path(__file__).resolve().parents[2]
# eval loss per evaluation (at FLOPS); target 1.0 is first reached at:
LOSSES = {
    ("fogzo", 0): [2.3, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # 1e6
    ("fogzo", 1): [2.3, 1.5, 0.95, 0.7, 0.6, 0.5, 0.45],  # 2e6  -> median 1.5e6
    ("nspsa", 0): [2.3, 2.0, 1.8, 1.5, 0.95, 0.9, 0.8],  # 8e6
    ("nspsa", 1): [2.3, 2.1, 1.9, 1.6, 1.2, 0.99, 0.9],  # 12e6 -> median 10e6
    ("mezo", 0): [2.3, 2.2, 2.1],  # diverged after three evaluations: never
}
MEMORY = {"fogzo": 60_000, "nspsa": 50_000, "mezo": 20_000}
ERROR = "Traceback (most recent call last):\n  ...\nTrialDiverged: mezo: loss became nan"


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    trials, curves = [], []
    for (estimator, seed), losses in LOSSES.items():
        failed = estimator == "mezo"
        trial = trial_row(
            "mem",
            estimator,
            2,
            seed,
            status="failed" if failed else "completed",
            error=ERROR if failed else None,
            flops=FLOPS[len(losses) - 1],
            final_eval_loss=None if failed else losses[-1],
            final_eval_metric=None if failed else 1 - losses[-1] / 3,
            peak_memory_bytes=MEMORY[estimator],
        )
        trials.append(trial)
        curves += curve_rows(trial, losses)
    return trials, curves


def in_memory() -> SweepResults:
    """The sweep as ``load_results`` would return it, without a file anywhere."""
    trials, curves = _rows()
    return SweepResults(
        location="in-memory",
        name="mem",
        trials=pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA).to_pandas(),
        curves=pa.Table.from_pylist(curves, schema=CURVES_SCHEMA).to_pandas(),
        spec={"name": "mem"},
    )


@pytest.fixture
def no_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and the contract's writers refusing to run."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the compute step wrote a file")

    for writer in ("write_text_atomic", "write_parquet_atomic"):
        monkeypatch.setattr(storage, writer, refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_compute_returns_tables_as_data_and_writes_nothing(no_writes: Path) -> None:
    report = build_report(in_memory(), target=1.0)
    assert list(no_writes.iterdir()) == []
    for f in dataclasses.fields(Report):
        value = getattr(report, f.name)
        assert isinstance(value, (pd.DataFrame, str, dict, list, int, type(None))), f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.notes = []  # type: ignore[misc]
    assert not hasattr(report, "text")  # rendering is not part of the data

    headline = report.headline.set_index("arm")
    assert headline.loc["fogzo", ["trials", "completed", "failed"]].tolist() == [2, 2, 0]
    assert headline.loc["mezo", ["trials", "completed", "failed"]].tolist() == [1, 0, 1]
    assert headline.loc["fogzo", "final_loss_median"] == pytest.approx(0.425)

    assert report.targets[["target", "source", "reference_arm"]].to_dict("records") == [
        {"target": 1.0, "source": "explicit target 1", "reference_arm": None}
    ]
    reach = report.reach.set_index("arm")
    assert reach.loc["fogzo", "flops"] == 1.5e6 and reach.loc["nspsa", "flops"] == 10e6
    assert (reach.loc["mezo", "reached"], reach.loc["mezo", "trials"]) == (0, 1)
    assert math.isnan(reach.loc["mezo", "flops"])

    ratios = report.ratios.set_index("versus")
    assert list(ratios["arm"]) == ["fogzo", "fogzo"]
    assert ratios.loc["nspsa", "flops"] == pytest.approx(10e6 / 1.5e6)
    assert ratios.loc["nspsa", "wall_s"] == pytest.approx(10e6 / 1.5e6)
    assert math.isnan(ratios.loc["mezo", "flops"]) and ratios.loc["mezo", "versus_reached"] == "0/1"

    front = report.pareto[report.pareto["on_front"].astype(bool)]
    assert front["trial_id"].tolist() == ["fogzo-int2-s0"]
    memory = report.memory.set_index("arm")["peak_memory_mean"].to_dict()
    assert memory == MEMORY
    assert report.failed[["trial_id", "error"]].to_dict("records") == [
        {"trial_id": "mezo-int2-s0", "error": "TrialDiverged: mezo: loss became nan"}
    ]
    bands = report.curve_bands.set_index(["arm", "step"])
    assert "mezo" not in set(report.curve_bands["arm"])  # failed trials draw no band
    assert bands.loc[("fogzo", 10), "eval_loss_median"] == pytest.approx(1.2)
    assert bands.loc[("fogzo", 10), "seeds"] == 2
    assert set(report.equal_compute["arm"]) == {"fogzo", "nspsa"}
    assert report.versions["torch"] == "2.13.0+cpu" and report.spec == {"name": "mem"}
    assert report.notes == []


def test_compute_takes_the_reference_arms_worst_seed_as_target(no_writes: Path) -> None:
    report = build_report(in_memory(), reference="nspsa")
    assert report.targets[["target", "reference_arm"]].to_dict("records") == [
        {"target": 0.9, "reference_arm": "nspsa"}
    ]
    # fogzo seed 0 is at 0.9 at 1e6 FLOPs, seed 1 first below it at 4e6
    assert report.reach.set_index("arm").loc["fogzo", "flops"] == 2.5e6
    assert list(no_writes.iterdir()) == []


def test_compute_does_not_import_the_renderers_or_matplotlib(tmp_path: Path) -> None:
    folder = write_sweep(tmp_path, "mem", *_rows())
    code = (
        "import sys, analysis.report_data, analysis.load\n"
        f"results = analysis.load.load_results({folder!r})\n"
        "analysis.report_data.build_report(results, target=1.0)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'torch', 'ray', 'service') or m in "
        "('analysis.plots', 'analysis.report_text', 'analysis.report_html', "
        "'analysis.report_page', 'analysis.report_plotly') or m.startswith('plotly'))\n"
        "print(bad)\nsys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_renderers_take_only_the_report() -> None:
    for render, rest in (
        (headline_text, []),
        (ratio_sentences, ["cost"]),
        (render_html, ["figures"]),
        (write_report, ["out_dir", "page"]),  # page: keyword only, the file name
        (report_plotly.figures, []),
        (report_plotly.render_html, ["figures"]),
        (report_plotly.write_report, ["out_dir", "page"]),
    ):
        params = list(inspect.signature(render).parameters.values())
        assert params[0].name == "report" and params[0].annotation in (Report, "Report")
        assert [p.name for p in params[1:]] == rest, render.__name__


def test_rendering_recomputes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the ``Report`` exists, every computing function may vanish: text, page and plots
    still come out, made from the report's tables alone."""
    report = build_report(in_memory(), target=1.0)

    def recomputed(*_: Any, **__: Any) -> None:
        raise AssertionError("a renderer recomputed a table")

    for module, names in (
        (
            tradeoff,
            [
                "add_arms",
                "attach_arms",
                "final_quality",
                "compute_to_target",
                "summarize_reach",
                "reach_ratios",
                "reference_target",
                "quality_at_compute",
                "common_budget",
                "pareto_front",
                "memory_by_arm",
            ],
        ),
        (claims, ["evaluate"]),
        (diagnostics, ["by_step", "summary"]),
        (report_data, ["build_report", "curve_bands"]),
    ):
        for name in names:
            monkeypatch.setattr(module, name, recomputed)
    text = headline_text(report)
    assert "sweep mem (in-memory): 5 trials, 4 completed, 1 failed" in text
    assert "at 2 bits: fogzo needs 6.67x less compute (flops) than nspsa" in text
    assert "mezo does not reach the target (not reached 0/1)" in text
    path = write_report(report, tmp_path / "out")
    page = path.read_text()
    assert path == tmp_path / "out" / "report.html"
    assert page.count("<img src=") == len(list((tmp_path / "out" / "plots").glob("*.png"))) == 4
    assert "<td>TrialDiverged: mezo: loss became nan</td>" in page
    interactive = report_plotly.write_report(report, tmp_path / "interactive").read_text()
    assert interactive.count('class="plotly-graph-div"') == 4
    assert "<td>TrialDiverged: mezo: loss became nan</td>" in interactive


def test_a_changed_report_renders_its_own_contents() -> None:
    """The renderers read the ``Report`` they are given, not the sweep it came from."""
    report = dataclasses.replace(build_report(in_memory(), target=1.0), notes=["hand-written"])
    assert headline_text(report).splitlines()[1] == "hand-written"
    page = render_html(report, [])
    assert '<p class="note">hand-written</p>' in page and "<img" not in page


def test_report_command_is_compute_then_render(tmp_path: Path) -> None:
    trials, curves = _rows()
    folder = write_sweep(tmp_path, "mem", trials, curves)
    html_path, text = report_command([folder], str(tmp_path / "cmd"), target=1.0)
    report = build_report(load_results(folder), target=1.0)
    assert text == headline_text(report)
    direct = report_plotly.write_report(report, tmp_path / "direct")
    assert html_path.read_bytes() == direct.read_bytes()


def test_old_names_still_import_from_analysis_report() -> None:
    from analysis import report, report_html, report_text

    assert report.build_report is build_report and report.Report is Report
    assert report.matching_arms is report_data.matching_arms
    assert report.display_headline is report_text.display_headline
    assert report.ratio_sentences is ratio_sentences
    assert report.write_report is report_html.write_report
