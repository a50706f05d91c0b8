"""analysis.claims on small sweeps written here in the contract schema: every verdict (reproduced,
not reproduced, unresolved), the fewer-than-3-seeds and scale rules, "≈" and ratio claims,
compute-to-target through analysis.tradeoff, and the Claims section of report.html.
Expected values are computed from the inputs, never typed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis import bootstrap, claims
from analysis.load import combine, load_results
from analysis.report import report_command
from analysis.report_data import build_report
from tests.analysis.test_tradeoff import FLOPS, curve_rows, trial_row, write_sweep

HIGH, LOW = [0.80, 0.82, 0.81], [0.70, 0.72, 0.71]  # clearly apart: ranges do not overlap
NOISY = [0.69, 0.83, 0.76]  # overlaps both


def sweep(
    root: Path,
    name: str,
    arms: dict[str, list[float]],
    spec: str | None = None,
    metric: str = "final_eval_metric",
    **fields: Any,
) -> str:
    """One setting; each estimator's seeds get ``metric`` from ``arms`` (one value per seed)."""
    trials, curves, bits = [], [], fields.pop("bits", 2)
    for estimator, values in arms.items():
        for seed, value in enumerate(values):
            trial = trial_row(
                name,
                estimator,
                bits,
                seed,
                **{"model": "resnet18", "metric_name": "accuracy", **fields, metric: value},
            )
            trials.append(trial)
            curves += curve_rows(trial, [2.3, 1.0])
    return write_sweep(root, name, trials, curves, spec=spec)


def verdicts(folder: str, claim_id: str) -> list[dict[str, Any]]:
    table = build_report(load_results(folder)).claims
    return table[table["claim"] == claim_id].to_dict("records")


PAPER = "name: resnet\nscale: paper\n"


def test_better_claim_reproduced_with_its_interval(tmp_path: Path) -> None:
    [row] = verdicts(sweep(tmp_path, "resnet", {"fogzo": HIGH, "ste": LOW}, PAPER), "fogzo-resnet")
    assert row["verdict"] == "reproduced" and row["scale"] == "paper"
    assert row["estimate"] == pytest.approx(np.median(HIGH) - np.median(LOW))
    assert 0 < row["low"] <= row["estimate"] <= row["high"]
    assert (row["focus_min"], row["focus_max"], row["focus_seeds"]) == (
        min(HIGH),
        max(HIGH),
        len(HIGH),
    )


def test_opposite_direction_is_not_reproduced(tmp_path: Path) -> None:
    [row] = verdicts(sweep(tmp_path, "resnet", {"fogzo": LOW, "ste": HIGH}, PAPER), "fogzo-resnet")
    assert row["verdict"] == "not reproduced" and row["high"] < 0


def test_overlapping_arms_are_unresolved(tmp_path: Path) -> None:
    [row] = verdicts(sweep(tmp_path, "resnet", {"fogzo": NOISY, "ste": LOW}, PAPER), "fogzo-resnet")
    assert row["verdict"] == "unresolved" and row["low"] <= 0 <= row["high"]
    assert "within noise" in row["why"]


def test_fewer_than_three_seeds_is_unresolved(tmp_path: Path) -> None:
    [row] = verdicts(
        sweep(tmp_path, "resnet", {"fogzo": HIGH[:2], "ste": LOW}, PAPER), "fogzo-resnet"
    )
    assert row["verdict"] == "unresolved" and "fewer than 3 seeds" in row["why"]


@pytest.mark.parametrize(
    "fogzo, verdict",
    [
        ([20.0, 20.5, 21.0], "reproduced"),
        ([25.0, 25.5, 26.0], "not reproduced"),
        ([22.0, 25.0, 23.0], "unresolved"),
    ],
)
def test_perplexity_lower_is_better(tmp_path: Path, fogzo: list[float], verdict: str) -> None:
    folder = sweep(
        tmp_path,
        "llama",
        {"fogzo": fogzo, "ste": [23.0, 23.5, 24.0]},
        "name: llama\nscale: paper\n",
        model="llama",
        dataset="text",
        metric_name="perplexity",
    )
    [row] = verdicts(folder, "fogzo-llama-w2a2")
    assert row["verdict"] == verdict, row["why"]


@pytest.mark.parametrize(
    "name, spec, steps, dataset, scale",
    [
        ("resnet-smoke", None, 60, "digits", "smoke"),  # a preset's scale, from the sweep's name
        (
            "resnet",
            "name: resnet\nscale: smoke\n",
            60_000,
            "cifar10",
            "smoke",
        ),  # declared in sweep.yaml
        (
            "resnet",
            None,
            60,
            "digits",
            "smoke (inferred: dataset digits, not cifar10/cifar100/imagefolder; 60 steps < 20000)",
        ),
    ],
)
def test_scale_below_the_claim_is_unresolved(
    tmp_path: Path, name: str, spec: str | None, steps: int, dataset: str, scale: str
) -> None:
    [row] = verdicts(
        sweep(tmp_path, name, {"fogzo": HIGH, "ste": LOW}, spec, steps=steps, dataset=dataset),
        "fogzo-resnet",
    )
    assert (row["verdict"], row["scale"]) == ("unresolved", scale)
    assert "scale below" in row["why"] and "favours the claim" in row["why"]


def test_inferred_paper_scale_counts(tmp_path: Path) -> None:
    folder = sweep(
        tmp_path, "resnet", {"fogzo": HIGH, "ste": LOW}, None, steps=60_000, dataset="cifar10"
    )
    [row] = verdicts(folder, "fogzo-resnet")
    assert (row["verdict"], row["scale"]) == ("reproduced", "paper (inferred)")


def _unequal_budgets(root: Path, fogzo_eval_steps: list[int]) -> str:
    """FOGZO ran 200 steps, STE 100; their curves hold evaluations at the steps given."""
    trials, curves = [], []
    for estimator, values, steps, at in (
        ("fogzo", HIGH, 200, fogzo_eval_steps),
        ("ste", LOW, 100, [0, 100]),
    ):
        for seed, value in enumerate(values):
            trials.append(
                trial_row(
                    "resnet",
                    estimator,
                    2,
                    seed,
                    model="resnet18",
                    final_eval_metric=value,
                    metric_name="accuracy",
                    steps=steps,
                )
            )
            rows = curve_rows(
                trials[-1],
                [2.3] + [1.0] * (len(at) - 1),
                accuracies=[0.1] + [value] * (len(at) - 1),
            )
            curves += [row | {"step": step} for row, step in zip(rows, at)]
    return write_sweep(root, "resnet", trials, curves, spec=PAPER)


def test_unequal_iterations_without_a_common_evaluation_are_unresolved(tmp_path: Path) -> None:
    [row] = verdicts(_unequal_budgets(tmp_path / "unequal", [0, 200]), "fogzo-resnet")
    assert row["verdict"] == "unresolved" and "unequal" in row["why"]


def test_unequal_budgets_are_compared_at_the_step_every_trial_reached(tmp_path: Path) -> None:
    [row] = verdicts(_unequal_budgets(tmp_path / "common", [0, 100, 200]), "fogzo-resnet")
    assert "at step 100" in row["statistic"]
    assert row["focus_median"] == pytest.approx(sorted(HIGH)[1]) and row["verdict"] == "reproduced"


@pytest.mark.parametrize(
    "quzo, verdict",
    [
        ([7.80, 7.82, 7.81], "reproduced"),
        ([9.0, 9.1, 9.2], "not reproduced"),
        ([7.5, 8.1, 7.8], "unresolved"),
    ],
)
def test_equal_claim_uses_the_tolerance_band(
    tmp_path: Path, quzo: list[float], verdict: str
) -> None:
    mezo = [7.79, 7.80, 7.81]
    folder = sweep(
        tmp_path,
        "quzo",
        {"quzo": quzo, "mezo": mezo},
        "name: quzo\nscale: paper\n",
        model="llama",
        dataset="text",
        metric_name="perplexity",
        bits=8,
    )
    [row] = verdicts(folder, "quzo-vs-mezo")
    band = 0.02 * np.median(mezo)
    assert row["verdict"] == verdict, row["why"]
    assert f"±{band:.3g}" in row["why"]


@pytest.mark.parametrize("factor, verdict", [(4.0, "reproduced"), (1.5, "not reproduced")])
def test_memory_ratio_claim(tmp_path: Path, factor: float, verdict: str) -> None:
    trials, curves = [], []
    for estimator, memory in (("quzo", 1e9), ("qfo", factor * 1e9)):
        for seed in range(3):
            trials.append(
                trial_row(
                    "mem",
                    estimator,
                    4,
                    seed,
                    model="llama",
                    dataset="text",
                    metric_name="perplexity",
                    final_eval_metric=8.0,
                    peak_memory_bytes=int(memory),
                    num_params=7e9,
                )
            )
            curves += curve_rows(trials[-1], [2.3, 1.0])
    table = build_report(load_results(write_sweep(tmp_path, "mem", trials, curves))).claims
    row = table[table["claim"] == "quzo-memory"].iloc[0]
    assert row["scale"] == "paper (inferred)"  # 7e9 parameters: as big as the claim needs
    assert row["estimate"] == pytest.approx(factor) and row["verdict"] == verdict


def test_compute_to_target_ratio_is_the_tradeoff_one(tmp_path: Path) -> None:
    """fogzo reaches nspsa's worst-seed final eval loss at the 2nd evaluation, nspsa at its last."""
    trials, curves = [], []
    for estimator, losses in (
        ("fogzo", [2.3, 0.9, 0.5, 0.4, 0.4, 0.4, 0.4]),
        ("nspsa", [2.3, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0]),
    ):
        for seed in range(3):
            trials.append(
                trial_row(
                    "mlp",
                    estimator,
                    2,
                    seed,
                    final_eval_loss=losses[-1],
                    n=10_000,
                    d_zo=7960,
                    num_params=7960,
                    dataset="mnist",
                    steps=300,
                )
            )
            curves += curve_rows(trials[-1], losses)
    [row] = verdicts(write_sweep(tmp_path, "mlp", trials, curves), "fogzo-mlp-796x")
    assert row["estimate"] == pytest.approx(FLOPS[-1] / FLOPS[1])
    assert row["verdict"] == "not reproduced" and row["high"] < 796 / 2


def test_claims_without_both_arms_are_not_listed(tmp_path: Path) -> None:
    folder = sweep(tmp_path, "resnet", {"ste": LOW}, PAPER)
    html_path, text = report_command([folder], str(tmp_path / "out"), claims=True)
    assert "<h2>Claims</h2>" not in html_path.read_text()
    assert "no claim of the FOGZO or QuZO papers" in text


def test_report_has_a_claims_section_and_text(tmp_path: Path) -> None:
    folder = sweep(tmp_path, "resnet", {"fogzo": HIGH, "ste": LOW}, PAPER)
    html_path, text = report_command([folder], str(tmp_path / "out"), claims=True)
    page = html_path.read_text()
    assert "<h2>Claims</h2>" in page and "fogzo-resnet" in page and "difference of medians" in page
    assert (
        "REPRODUCED" in text and bootstrap.fmt_spread(np.median(HIGH), min(HIGH), max(HIGH)) in text
    )
    _, plain = report_command([folder], str(tmp_path / "out"))
    assert (
        "paper claims: 1 reproduced, 0 not reproduced, 0 unresolved" in plain
        and "REPRODUCED" not in plain
    )


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    first = bootstrap.difference_interval(HIGH, NOISY)
    assert first == bootstrap.difference_interval(HIGH, NOISY)
    assert first[1] <= first[0] <= first[2]
    assert bootstrap.difference_interval(HIGH, LOW)[1] > 0  # disjoint ranges: zero is excluded
    ratio = bootstrap.ratio_interval([1.0, 1.0, 1.0], [5.0, float("inf"), 5.0])
    assert ratio[0] == 5.0 and ratio[2] == float(
        "inf"
    )  # a seed that never reached is infinitely costly


def test_every_claim_names_its_figure_and_a_known_metric() -> None:
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids))
    assert {c.paper for c in claims.CLAIMS} == {"FOGZO", "QuZO"}
    for c in claims.CLAIMS:
        assert c.figure and c.text and c.direction in ("better", "equal", "ratio")
        assert c.metric in (
            "final_train_loss",
            "final_eval_metric",
            "final_eval_loss",
            "peak_memory_bytes",
            "compute_to_target",
            "eval_metric_at_equal_wall",
        )


def test_qsweep_report_claims_prints_the_verdicts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    folder = sweep(tmp_path, "resnet", {"fogzo": HIGH, "ste": LOW}, PAPER)
    result = CliRunner().invoke(app, ["report", folder, "--out", str(tmp_path / "out"), "--claims"])
    assert result.exit_code == 0, result.output
    assert (
        "fogzo-resnet (FOGZO)" in result.output
        and "REPRODUCED: interval favours the claim" in result.output
    )
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere"), "--claims"])
    assert missing.exit_code == 2


def test_arms_pair_only_within_one_sweep(tmp_path: Path) -> None:
    """Two sweeps differ in budgets and settings their arm labels do not name."""
    one = sweep(tmp_path / "a", "fogzo-only", {"fogzo": HIGH}, PAPER)
    other = sweep(tmp_path / "b", "ste-only", {"ste": LOW}, PAPER)
    both = sweep(tmp_path / "c", "both", {"fogzo": HIGH, "ste": LOW}, PAPER)
    table = build_report(combine([load_results(one), load_results(other)])).claims
    assert table[table["claim"] == "fogzo-resnet"].empty
    table = build_report(combine([load_results(f) for f in (one, other, both)])).claims
    assert len(table[table["claim"] == "fogzo-resnet"]) == 1
