"""analysis.tradeoff on small Parquet written here in the contract schema, with curves built so
that every compute-to-target number, ratio and front is known exactly in advance.

The helpers (``trial_row``, ``curve_rows``, ``write_sweep``) are reused by test_report.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis.load import combine, load_results
from analysis.report_data import build_report, matching_arms
from analysis.report_text import headline_text
from analysis.tradeoff import (
    add_arms,
    attach_arms,
    common_budget,
    compute_to_target,
    final_quality,
    pareto_front,
    quality_at_compute,
    reach_ratios,
    reference_target,
    summarize_reach,
)
from contract.schema import CURVES_DIR, CURVES_SCHEMA, SCHEMA_VERSION, TRIALS_FILE
from contract.storage import resolve, write_parquet_atomic
from service.rows import trials_schema

TRIALS_SCHEMA = trials_schema()  # the trials table as the ledger writes it

SETTING_2BIT = ("mlp", "digits", "int", 2)
FLOPS = [0.0, 1e6, 2e6, 4e6, 8e6, 12e6, 16e6]  # the evaluation points of every curve below


def trial_row(sweep: str, estimator: str, bits: int, seed: int, **fields: Any) -> dict[str, Any]:
    """A completed trial's row; ``fields`` override anything (status, error, lr, finals...)."""
    row = {
        "schema_version": SCHEMA_VERSION,
        "sweep": sweep,
        "trial_id": f"{estimator}-int{bits}-s{seed}",
        "status": "completed",
        "estimator": estimator,
        "bits": bits,
        "quantizer": "int",
        "model": "mlp",
        "dataset": "digits",
        "seed": seed,
        "lr": 0.01,
        "optimizer": "sgd",
        "n": 1,
        "steps": 160,
        "forwards": 480,
        "backwards": 0,
        "flops": FLOPS[-1],
        "wall_s": 1.6,
        "peak_memory_bytes": 40_000,
        "num_params": 760,
        "host": "test",
        "attempts": 1,
        "versions": '{"qsweep": "0.1.0", "torch": "2.13.0+cpu", "ray": "2.60.0"}',
        "config": "{}",
    }
    row.update(fields)
    return row


def curve_rows(
    trial: dict[str, Any],
    losses: list[float],
    accuracies: list[float] | None = None,
    flops: list[float] | None = None,
) -> list[dict[str, Any]]:
    """One row per evaluation; forwards = FLOPs / 1e5 and wall_s = FLOPs * 1e-7, so every
    cost's ratio equals the FLOPs ratio."""
    flops = flops or FLOPS[: len(losses)]
    accuracies = accuracies or [1.0 - loss / 3 for loss in losses]
    return [
        {
            "schema_version": SCHEMA_VERSION,
            "sweep": trial["sweep"],
            "trial_id": trial["trial_id"],
            "step": i * 10,
            "forwards": int(f / 1e5),
            "backwards": 0,
            "flops": f,
            "wall_s": f * 1e-7,
            "train_loss": None if i == 0 else loss,
            "eval_loss": loss,
            "eval_metric": acc,
            "peak_memory_bytes": trial["peak_memory_bytes"],
            "estimator": trial["estimator"],
            "bits": trial["bits"],
            "seed": trial["seed"],
        }
        for i, (f, loss, acc) in enumerate(zip(flops, losses, accuracies))
    ]


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(
        rows, schema=schema
    )  # absent columns are null; keeps the version metadata


def write_sweep(
    root: Path,
    name: str,
    trials: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    spec: str | None = None,
) -> str:
    """``root/name`` as the sink writes it: trials.parquet, one curves file per trial,
    sweep.yaml."""
    fs, folder = resolve(str(root / name))
    write_parquet_atomic(fs, f"{folder}/{TRIALS_FILE}", _table(trials, TRIALS_SCHEMA))
    for trial_id in dict.fromkeys(row["trial_id"] for row in curves):
        write_parquet_atomic(
            fs,
            f"{folder}/{CURVES_DIR}/{trial_id}.parquet",
            _table([row for row in curves if row["trial_id"] == trial_id], CURVES_SCHEMA),
        )
    (root / name / "sweep.yaml").write_text(spec or f"name: {name}\n")
    return folder


def reach_sweep(tmp_path: Path, name: str = "toy") -> str:
    """2-bit setting, target eval loss 1.0: fogzo reaches it at 1e6 FLOPs (both seeds), nspsa at
    2e6, 8e6 and 16e6 (median 8e6, mean 8.67e6), mezo at 16e6 with one seed, never with the
    other."""
    losses = {
        ("fogzo", 0): [2.3, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        ("fogzo", 1): [2.3, 0.95, 1.2, 0.7, 0.6, 0.5, 0.4],
        ("nspsa", 0): [2.3, 2.0, 0.95, 0.9, 0.85, 0.8, 0.7],
        ("nspsa", 1): [2.3, 2.1, 1.9, 1.5, 1.0, 0.95, 0.9],
        ("nspsa", 2): [2.3, 2.2, 2.1, 1.9, 1.5, 1.2, 0.99],
        ("mezo", 0): [2.3, 2.2, 2.1, 2.0, 1.5, 1.2, 1.0],
        ("mezo", 1): [2.3, 2.2, 2.1, 2.0, 1.5, 1.2, 1.05],
    }
    trials, curves = [], []
    for (estimator, seed), loss in losses.items():
        trial = trial_row(
            name, estimator, 2, seed, final_eval_loss=loss[-1], final_eval_metric=1 - loss[-1] / 3
        )
        trials.append(trial)
        curves += curve_rows(trial, loss)
    return write_sweep(tmp_path, name, trials, curves)


def _arms(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    results = load_results(reach_sweep(tmp_path))
    trials = add_arms(results.trials)
    return trials, attach_arms(results.curves, trials)


def test_compute_to_target_median_and_exact_ratio(tmp_path: Path) -> None:
    _, curves = _arms(tmp_path)
    summary = summarize_reach(compute_to_target(curves, "eval_loss", 1.0)).set_index("arm")
    assert summary.loc["fogzo", "flops"] == 1e6
    assert (
        summary.loc["nspsa", "flops"] == 8e6
    )  # median of 2e6, 8e6, 16e6 (1.0 <= 1.0 counts as reached)
    assert summary.loc["nspsa", "forwards"] == 80
    ratios = reach_ratios(summary.reset_index(), "fogzo").set_index("versus")
    assert ratios.loc["nspsa", "ratio"] == 8.0  # exactly: nspsa needs 8x the compute of fogzo
    assert (
        reach_ratios(summary.reset_index(), "fogzo", "forwards")
        .set_index("versus")
        .loc["nspsa", "ratio"]
        == 8.0
    )


def test_a_seed_that_never_reaches_makes_the_arm_not_reached(tmp_path: Path) -> None:
    _, curves = _arms(tmp_path)
    per_trial = compute_to_target(curves, "eval_loss", 1.0).set_index("trial_id")
    assert (
        per_trial.loc["mezo-int2-s0", "reached"] and per_trial.loc["mezo-int2-s0", "flops"] == 16e6
    )
    assert not per_trial.loc["mezo-int2-s1", "reached"] and math.isnan(
        per_trial.loc["mezo-int2-s1", "flops"]
    )
    mezo = summarize_reach(per_trial.reset_index()).set_index("arm").loc["mezo"]
    assert (mezo["reached"], mezo["trials"]) == (1, 2)
    assert all(
        math.isnan(mezo[c]) for c in ("flops", "forwards", "wall_s")
    )  # not a number: "not reached"
    ratios = reach_ratios(summarize_reach(per_trial.reset_index()), "fogzo").set_index("versus")
    assert math.isnan(ratios.loc["mezo", "ratio"])


def test_accuracy_target_counts_higher_as_reached(tmp_path: Path) -> None:
    _, curves = _arms(tmp_path)
    # accuracy = 1 - loss/3, so accuracy >= 2/3 is exactly loss <= 1.0
    summary = summarize_reach(compute_to_target(curves, "eval_metric", 1 - 1.0 / 3)).set_index(
        "arm"
    )
    assert summary.loc["fogzo", "flops"] == 1e6 and summary.loc["nspsa", "flops"] == 8e6


def test_report_target_from_reference_arm_and_ratio_table(tmp_path: Path) -> None:
    trials, _ = _arms(tmp_path)
    assert reference_target(trials, "nspsa", "eval_loss", SETTING_2BIT) == pytest.approx(
        0.99
    )  # worst seed
    report = build_report(load_results(str(tmp_path / "toy")), target=1.0)
    ratios = report.ratios.set_index("versus")
    assert ratios.loc["nspsa", "flops"] == 8.0 and ratios.loc["nspsa", "wall_s"] == pytest.approx(
        8.0
    )
    assert math.isnan(ratios.loc["mezo", "flops"]) and ratios.loc["mezo", "versus_reached"] == "1/2"


def test_pareto_front_with_ties_and_dominated_points() -> None:
    cost = np.array([1, 2, 2, 3, 4, 1, np.nan])
    quality = np.array([0.5, 0.7, 0.7, 0.6, 0.9, 0.4, 0.99])
    # (2, .7) twice: a tie dominates neither copy; (3, .6) loses to (2, .7); (1, .4) to (1, .5);
    # NaN is never on it
    assert pareto_front(cost, quality).tolist() == [True, True, True, False, True, False, False]
    losses = 1 - quality  # the same points with lower-is-better quality give the same front
    assert pareto_front(cost, losses, higher_is_better=False).tolist() == [
        True,
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert pareto_front(np.array([1.0, 1.0]), np.array([0.5, 0.6])).tolist() == [False, True]


def test_quality_at_equal_compute_and_common_budget(tmp_path: Path) -> None:
    _, curves = _arms(tmp_path)
    assert common_budget(curves) == 16e6
    shorter = curves[~((curves["trial_id"] == "nspsa-int2-s1") & (curves["flops"] > 12e6))]
    assert common_budget(shorter) == 12e6  # the largest compute every trial reached
    at = quality_at_compute(curves, "eval_loss", 5e6).set_index("trial_id")
    assert at.loc["nspsa-int2-s0", "flops"] == 4e6 and at.loc["nspsa-int2-s0", "eval_loss"] == 0.9
    assert at.loc["fogzo-int2-s1", "eval_loss"] == 0.7
    assert len(at) == 7


def test_arms_with_varying_hyperparameters_get_distinct_labels(tmp_path: Path) -> None:
    trials, curves = [], []
    for seed in (0, 1):
        for lr in (0.001, 0.01):
            t = trial_row(
                "lrs",
                "nspsa",
                2,
                seed,
                lr=lr,
                trial_id=f"nspsa-lr{lr}-s{seed}",
                final_eval_metric=lr * 10,
            )
            trials.append(t)
            curves += curve_rows(t, [2.3, 1.0])
        for n in (1, 4):
            trials.append(trial_row("lrs", "fogzo", 2, seed, n=n, trial_id=f"fogzo-n{n}-s{seed}"))
    arms = add_arms(load_results(write_sweep(tmp_path, "lrs", trials, curves)).trials)
    assert sorted(set(arms["arm"])) == ["fogzo n=1", "fogzo n=4", "nspsa lr=0.001", "nspsa lr=0.01"]
    quality = final_quality(arms).set_index("arm")
    assert quality.loc["nspsa lr=0.01", "final_metric_mean"] == pytest.approx(0.1)
    assert (
        quality.loc["nspsa lr=0.001", "completed"] == 2
    )  # seeds aggregate within an arm, not across lrs
    assert matching_arms(arms["arm"], "nspsa") == ["nspsa lr=0.001", "nspsa lr=0.01"]


def test_two_sweeps_combined_keep_sweep_prefixed_arms(tmp_path: Path) -> None:
    a, b = reach_sweep(tmp_path, "grid"), reach_sweep(tmp_path, "rerun")
    combined = combine([load_results(a), load_results(b)])
    arms = add_arms(combined.trials)
    assert sorted(set(arms["arm"])) == sorted(
        f"{s}:{e}" for s in ("grid", "rerun") for e in ("fogzo", "mezo", "nspsa")
    )
    report = build_report(combined, target=1.0)
    assert len(report.headline) == 6
    pairs = set(zip(report.ratios["arm"], report.ratios["versus"]))
    assert ("grid:fogzo", "rerun:nspsa") in pairs and ("rerun:fogzo", "grid:nspsa") in pairs
    assert (
        report.ratios.set_index(["arm", "versus"]).loc[("grid:fogzo", "rerun:nspsa"), "flops"]
        == 8.0
    )


def test_settings_with_different_focus_arms_get_no_invented_ratios(tmp_path: Path) -> None:
    grid = reach_sweep(tmp_path, "grid")  # 2 bits: grid:fogzo, grid:nspsa, grid:mezo
    extra = [
        trial_row("extra", e, 4, 0, final_eval_loss=0.5, final_eval_metric=0.8)
        for e in ("fogzo", "nspsa")
    ]
    folder = write_sweep(
        tmp_path, "extra", extra, [r for t in extra for r in curve_rows(t, [2.3, 1.0, 0.5])]
    )
    report = build_report(combine([load_results(grid), load_results(folder)]), target=1.0)
    # each setting compares its own focus arm only: no row for a focus arm absent from the setting
    assert set(zip(report.ratios["bits"], report.ratios["arm"])) == {
        (2, "grid:fogzo"),
        (4, "extra:fogzo"),
    }
    assert (
        report.ratios["arm_reached"].notna().all() and report.ratios["versus_reached"].notna().all()
    )
    assert "at 4 bits: extra:fogzo needs the same compute (flops) as extra:nspsa" in headline_text(
        report
    )
