"""Diagnostics in the analysis: loaded when present, summarised per arm x bits, plotted and
shown in report.html; sweeps without the table (or written before it existed) still load."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.load import load_results
from analysis.report import report_command
from analysis.report_data import build_report
from contract.schema import (
    DIAGNOSTIC_FIGURES,
    DIAGNOSTICS_DIR,
    DIAGNOSTICS_SCHEMA,
    SCHEMA_VERSION,
    TRIALS_FILE,
)
from contract.storage import resolve, write_parquet_atomic
from tests.analysis.test_tradeoff import curve_rows, trial_row, write_sweep

COSINE = {
    ("ste", 1): 0.3,
    ("ste", 4): 0.9,
    ("fogzo", 1): 0.5,
    ("fogzo", 4): 0.9,
    ("nspsa", 1): 0.1,
    ("nspsa", 4): 0.1,
}


def probe_rows(trial: dict, cosine: float) -> list[dict]:
    ste = trial["estimator"] == "ste"
    return [
        {
            **dict.fromkeys(DIAGNOSTIC_FIGURES, 1.0),
            "schema_version": SCHEMA_VERSION,
            "sweep": trial["sweep"],
            "trial_id": trial["trial_id"],
            "step": step,
            "estimator": trial["estimator"],
            "bits": trial["bits"],
            "seed": trial["seed"],
            "est_cosine": cosine + 0.01 * i,
            "ste_cosine": COSINE[("ste", trial["bits"])],
            "est_variance": 0.0 if ste else 10.0 * (i + 1),
            "est_snr": math.inf if ste else 0.1,
        }
        for i, step in enumerate((0, 10, 20))
    ]


def diag_sweep(root: Path) -> str:
    trials = [
        trial_row("diag", est, bits, 0, final_eval_loss=1.0, final_eval_metric=0.5)
        for est, bits in COSINE
    ]
    curves = [row for t in trials for row in curve_rows(t, [2.0, 1.5, 1.0])]
    folder = write_sweep(root, "diag", trials, curves)
    fs, _ = resolve(folder)
    for t in trials:
        table = pa.Table.from_pylist(
            probe_rows(t, COSINE[(t["estimator"], t["bits"])]), schema=DIAGNOSTICS_SCHEMA
        )
        write_parquet_atomic(fs, f"{folder}/{DIAGNOSTICS_DIR}/{t['trial_id']}.parquet", table)
    return folder


def test_diagnostics_summary_plot_and_html(tmp_path: Path) -> None:
    folder = diag_sweep(tmp_path)
    results = load_results(folder)
    assert len(results.diagnostics) == 3 * len(COSINE)
    report = build_report(results)
    summary = report.diagnostics_summary.set_index(["arm", "bits"])
    assert summary.loc[("ste", 1), "est_cosine"] == pytest.approx(0.31)
    assert summary.loc[("fogzo", 1), "est_cosine"] == pytest.approx(0.51)
    assert math.isinf(summary.loc[("ste", 4), "est_snr"]) and summary.loc[
        ("nspsa", 4), "est_snr"
    ] == pytest.approx(0.1)
    assert (
        summary.loc[("nspsa", 1), "est_variance"] == pytest.approx(20.0)
        and (summary["probes"] == 3).all()
    )
    path, _ = report_command([folder], str(tmp_path / "out"), png=True)
    page = path.read_text()
    assert "Gradient quality (diagnostics probes)" in page and "cosine to ref" in page
    assert (tmp_path / "out" / "plots" / "diagnostics_mlp_digits_int.png").stat().st_size > 1000


def test_sweeps_without_diagnostics_still_load_and_report(tmp_path: Path) -> None:
    trials = [trial_row("old", "ste", 2, 0, final_eval_loss=1.0, final_eval_metric=0.5)]
    folder = write_sweep(tmp_path, "old", trials, curve_rows(trials[0], [2.0, 1.0]))
    # A folder written before the diagnostics table existed: schema version 2 metadata.
    for path in Path(folder).rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(
            table.replace_schema_metadata(
                {**table.schema.metadata, b"qsweep_schema_version": b"2"}
            ),
            path,
        )
    assert (
        pq.read_table(Path(folder) / TRIALS_FILE).schema.metadata[b"qsweep_schema_version"] == b"2"
    )
    results = load_results(folder)
    assert results.diagnostics.empty
    report = build_report(results)
    assert report.diagnostics_summary.empty
    path, _ = report_command([folder], str(tmp_path / "out"))
    assert "Gradient quality" not in path.read_text()
