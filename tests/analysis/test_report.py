"""analysis.report end to end: realistic sweep Parquet (written here in the contract schema) ->
report.html with every plot embedded, failed trials shown, bad input refused in one line,
and no Ray or torch imported on the way."""

from __future__ import annotations

import base64
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.load import ResultsError, load_results
from analysis.report import report_command
from analysis.report_data import build_report
from analysis.report_text import display_headline
from analysis.summary import headline_table
from tests.analysis.test_tradeoff import curve_rows, trial_row, write_sweep

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR = "fogzo: training loss became nan at step 40"
TRACEBACK = (
    'Traceback (most recent call last):\n  File "trainers/trial.py", line 140, in run_trial\n'
    "    raise TrialDiverged(step, loss)\n"
    "trainers.trial.TrialDiverged: fogzo: training loss became nan at step 40\n"
)
SPEC = (
    "name: e2e\ngrid:\n  estimators: [ste, nspsa, fogzo, mezo]\n  bits: [2, 4]\n  seeds: [0, 1]\n"
)
# How fast each estimator's eval loss falls with compute, and where it levels off.
SPEEDS = {"ste": (40.0, 0.2), "fogzo": (25.0, 0.3), "nspsa": (4.0, 0.6), "mezo": (0.5, 2.0)}
MEMORY = {"ste": 33_040, "fogzo": 60_004, "nspsa": 53_920, "mezo": 27_108}


def realistic_sweep(root: Path, running: bool = False) -> str:
    """4 estimators x bits 2/4 x 2 seeds, 11 evaluations up to 1.2e8 FLOPs each; fogzo 4-bit
    seed 1 diverged after 4 evaluations; with ``running``, ste 2-bit seed 1 is still going."""
    trials, curves = [], []
    for estimator, (speed, floor) in SPEEDS.items():
        for bits in (2, 4):
            for seed in (0, 1):
                flops = [1.2e7 * i for i in range(11)]
                slowdown = 1.0 if bits == 4 else 0.7
                losses = [
                    floor + (2.3 - floor) * math.exp(-speed * slowdown * f / 1.2e8) + 0.02 * seed
                    for f in flops
                ]
                accs = [max(0.1, 1 - loss / 2.4) for loss in losses]
                failed = estimator == "fogzo" and bits == 4 and seed == 1
                is_running = running and estimator == "ste" and bits == 2 and seed == 1
                n = 4 if failed or is_running else 11
                status = "failed" if failed else "running" if is_running else "completed"
                trial = trial_row(
                    "e2e",
                    estimator,
                    bits,
                    seed,
                    status=status,
                    error=ERROR if failed else None,
                    error_traceback=TRACEBACK if failed else None,
                    flops=flops[n - 1],
                    final_eval_loss=None if n < 11 else losses[-1],
                    final_eval_metric=None if n < 11 else accs[-1],
                    peak_memory_bytes=MEMORY[estimator],
                    wall_s=flops[n - 1] / 1.5e8,
                )
                trials.append(trial)
                curves += curve_rows(trial, losses[:n], accs[:n], flops[:n])
    return write_sweep(root, "e2e", trials, curves, spec=SPEC)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must follow the signature."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("results")
    return report_command(
        [realistic_sweep(root)], str(root / "out"), "eval_loss", 1.0, "nspsa", "fogzo", png=True
    )


def test_static_report_embeds_every_plot(written: tuple[Path, str]) -> None:
    """``png``: the PNGs in plots/ and the static page embedding them, beside report.html."""
    html_path, _ = written
    pngs = sorted((html_path.parent / "plots").glob("*.png"))
    assert [p.name.split("_")[0] for p in pngs] == ["curves", "memory", "pareto", "quality"]
    page = (html_path.parent / "report-static.html").read_text()
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs) == 4
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert not re.search(r'src="(?!data:)|<link |<script', page)  # self-contained: nothing to fetch
    expected = {
        "curves": (1300, 750),
        "memory": (900, 550),
        "pareto": (900, 550),
        "quality": (900, 550),
    }
    for png in pngs:
        assert png_size(png.read_bytes()) == expected[png.name.split("_")[0]], png.name
        assert png.stat().st_size > 10_000, f"{png.name} looks blank"


def test_report_tables_spec_versions_and_failures(written: tuple[Path, str]) -> None:
    html_path, _ = written
    page = html_path.read_text()
    assert "fogzo-int4-s1" in page and f"<td>{ERROR}</td>" in page
    assert "most recent call last" not in page  # the one-line error, not the traceback
    assert "estimators:" in page and "2.13.0+cpu" in page  # the sweep spec and the trials' versions
    assert "not reached (0/2)" in page  # mezo never gets to eval loss 1.0
    assert "still running" not in page


def test_headline_text_has_table_and_focus_ratios(written: tuple[Path, str]) -> None:
    _, text = written
    assert "final accuracy" in text and "± " not in text
    # median [min–max] over seeds: ste at 4 bits, its two seeds' final accuracy
    ste4 = [
        1 - (0.2 + 2.1 * math.exp(-40.0 * 10 * 1.2e7 / 1.2e8) + 0.02 * seed) / 2.4
        for seed in (0, 1)
    ]
    assert f"{np.median(ste4):.3f} [{min(ste4):.3f}–{max(ste4):.3f}]" in text
    assert re.search(r"at 2 bits: fogzo needs \d+\.\d+x less compute \(flops\) than nspsa", text)
    assert re.search(r"at 4 bits: fogzo needs \d+\.\d+x less compute \(flops\) than nspsa", text)
    assert "mezo does not reach the target (not reached 0/2)" in text


def test_headline_marks_arms_within_noise_of_the_best(tmp_path: Path) -> None:
    """Per setting: the best median is "best", an arm whose seed range overlaps it
    "within noise"."""
    report = build_report(load_results(realistic_sweep(tmp_path)), target=1.0)
    table = display_headline(report).set_index(["bits", "arm"])
    h = report.headline.set_index(["bits", "arm"])
    for bits in (2, 4):
        rows = h.loc[bits]
        best = rows["final_metric_median"].idxmax()
        assert table.loc[(bits, best), "vs best"] == "best"
        for arm, row in rows.drop(index=best).iterrows():
            overlap = (
                row.final_metric_min <= rows.loc[best, "final_metric_max"]
                and rows.loc[best, "final_metric_min"] <= row.final_metric_max
            )
            assert table.loc[(bits, arm), "vs best"] == ("within noise" if overlap else ""), (
                bits,
                arm,
            )
    assert (table["vs best"] == "").any()  # mezo is clearly behind


def test_headline_table_of_qsweep_run_flags_noise(tmp_path: Path) -> None:
    trials = load_results(realistic_sweep(tmp_path)).trials
    table = headline_table(trials).set_index(["estimator", "bits"])
    done = trials[trials["status"] == "completed"]
    ste = done[(done["estimator"] == "ste") & (done["bits"] == 2)]["final_eval_metric"]
    assert table.loc[
        ("ste", 2), ["metric_median", "metric_min", "metric_max"]
    ].tolist() == pytest.approx([ste.median(), ste.min(), ste.max()])
    assert set(table["vs_best"]) <= {"best", "within noise", ""}
    assert (table.groupby("bits")["vs_best"].apply(lambda s: (s == "best").sum()) == 1).all()
    assert table.loc[("mezo", 2), "vs_best"] == ""


def test_reach_ratio_is_what_the_curves_say(tmp_path: Path) -> None:
    report = build_report(load_results(realistic_sweep(tmp_path)), target=1.0)
    reach = report.reach.set_index(["bits", "arm"])
    ratio = report.ratios.set_index(["bits", "versus"]).loc[(4, "nspsa"), "flops"]
    assert ratio == reach.loc[(4, "nspsa"), "flops"] / reach.loc[(4, "fogzo"), "flops"] > 1
    assert reach.loc[(4, "fogzo"), "trials"] == 2  # the diverged seed counts as a trial
    assert list(report.failed["trial_id"]) == ["fogzo-int4-s1"]


def test_a_version_3_folder_reports_the_last_line_of_its_error(tmp_path: Path) -> None:
    """Before schema version 4 ``error`` held the whole traceback and there was no
    ``error_traceback``."""
    folder = realistic_sweep(tmp_path)
    path = Path(folder, "trials.parquet")
    table = pq.read_table(path)
    index = table.schema.get_field_index("error")
    errors = [TRACEBACK if e else None for e in table["error"].to_pylist()]
    table = table.drop_columns(["error_traceback"]).set_column(
        index, "error", pa.array(errors, pa.string())
    )
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"qsweep_schema_version": b"3"}),
        path,
    )
    results = load_results(folder)
    failed = results.trials[results.trials["status"] == "failed"]
    assert failed["error"].tolist() == [f"trainers.trial.TrialDiverged: {ERROR}"]
    assert failed["error_traceback"].tolist() == [TRACEBACK]
    assert build_report(results).failed["error"].tolist() == [
        f"trainers.trial.TrialDiverged: {ERROR}"
    ]


def test_reference_target_is_reference_worst_seed_final(tmp_path: Path) -> None:
    report = build_report(load_results(realistic_sweep(tmp_path)), reference="nspsa")
    nspsa = report.trials[(report.trials["arm"] == "nspsa") & (report.trials["bits"] == 2)]
    target = report.targets.set_index("bits").loc[2, "target"]
    assert target == pytest.approx(nspsa["final_eval_loss"].max())


def test_running_sweep_is_flagged_as_partial(tmp_path: Path) -> None:
    html_path, text = report_command(
        [realistic_sweep(tmp_path, running=True)],
        str(tmp_path / "out"),
        "eval_loss",
        None,
        "nspsa",
        "fogzo",
    )
    assert "still running" in text and "results are partial" in html_path.read_text()


def _one_line_error(locations: list[str], tmp_path: Path) -> str:
    with pytest.raises(ResultsError) as info:
        report_command(locations, str(tmp_path / "out"), "eval_loss", None, "nspsa", "fogzo")
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_corrupt_parquet_is_one_line_error(tmp_path: Path) -> None:
    folder = realistic_sweep(tmp_path)
    Path(folder, "trials.parquet").write_bytes(b"not a parquet file at all" * 40)
    assert "unreadable Parquet" in _one_line_error([folder], tmp_path)


def test_corrupt_curves_file_is_one_line_error(tmp_path: Path) -> None:
    folder = realistic_sweep(tmp_path)
    next(Path(folder, "curves").glob("*.parquet")).write_bytes(b"\x00garbage" * 100)
    assert "unreadable Parquet" in _one_line_error([folder], tmp_path)


def test_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    assert "no such results folder" in _one_line_error([str(tmp_path / "nowhere")], tmp_path)
    assert "no results folder" in _one_line_error([], tmp_path)


def test_wrong_schema_version_is_one_line_error(tmp_path: Path) -> None:
    folder = realistic_sweep(tmp_path)
    path = Path(folder, "trials.parquet")
    table = pq.read_table(path)
    pq.write_table(
        table.replace_schema_metadata({**table.schema.metadata, b"qsweep_schema_version": b"999"}),
        path,
    )
    assert "999" in _one_line_error([folder], tmp_path)


def test_missing_column_and_bad_spec_are_one_line_errors(tmp_path: Path) -> None:
    folder = realistic_sweep(tmp_path)
    path = Path(folder, "trials.parquet")
    table = pq.read_table(path)
    pq.write_table(
        table.drop_columns(["host"]), path
    )  # version 1 metadata, but not the contract's columns
    assert "lacks column(s) host" in _one_line_error([folder], tmp_path)
    pq.write_table(table, path)
    Path(folder, "sweep.yaml").write_text("name: [unclosed\n  - x: {\n")
    assert "sweep.yaml" in _one_line_error([folder], tmp_path)


def test_unknown_metric_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="eval_metric"):
        build_report(load_results(realistic_sweep(tmp_path)), metric="accuracy")


def test_analysis_imports_neither_torch_nor_ray() -> None:
    code = (
        "import sys, analysis.report, analysis.report_data, analysis.report_text, "
        "analysis.report_html, analysis.report_plotly, analysis.report_page, analysis.plots, "
        "analysis.load, analysis.tradeoff, "
        "analysis.summary, analysis.claims, analysis.bootstrap\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\n"
        "print(bad)\nsys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
