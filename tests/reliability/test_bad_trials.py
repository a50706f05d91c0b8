"""Bad trials in real sweeps: an exception, a NaN loss, a trial over its time limit and one
over its memory limit each end as a ``failed`` row with its one-line reason; the exception and
the NaN loss after one attempt (deterministic: ``service.failures``), the limits after
``retries + 1``; their siblings complete untouched. Plus the limit watchdog on its own.

Each limit has a sweep of its own with the other limit off (limits are spec-wide): with both
on, a busy machine made the time limit fire first in the memory-limited trial (its worker
was still importing and loading data). Without a memory limit the memory-hungry trial cannot
fail for time, and without a time limit nothing but the memory limit can stop it: if that
logic broke it would complete, and the test fail."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from service.errors import SpecError
from service.limits import LimitWatchdog, TrialLimitExceeded, resident_bytes
from service.spec_loading import load_spec, parse_spec
from tests.service.harness import explain, write_spec
from trainers.trial import TrialDiverged

# The tiny siblings take 1-3 s on a quiet machine, data loading included; twice a busy
# machine's worst stays well inside it. The never-ending trial runs it twice (retries=1).
TIME_LIMIT_S = 20
MEMORY_LIMIT_MB = 1000  # a tiny trial's worker holds ~500 MB; the 300000-wide MLP needs ~1.9 GB


def _run_sweep(
    qsweep, tmp_path: Path, name: str, estimators: dict, **limits
) -> tuple[dict[str, list[dict]], dict[str, dict], float]:
    """Run a sweep of ``estimators`` (one grid arm each, ``retries: 1``) that ends with failed
    trials; its rows by estimator, every row by trial id, and the run's wall time."""
    spec_file = write_spec(
        tmp_path,
        name,
        grid={"estimators": list(estimators)},
        trial={"num_evals": 2},
        budget={"steps": 40},
        retries=1,
        checkpoint_every=0,
        estimators=estimators,
        **limits,
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    started = time.monotonic()
    run = qsweep(
        "run",
        spec_file,
        "--results",
        tmp_path / "results",
        "--no-dashboard",
        "--num-cpus",
        2,
        timeout=400,
    )
    elapsed = time.monotonic() - started
    failed = len(estimators) - 1  # one well-behaved arm (``ste``)
    # failed trials are results (every row written), and the exit code says some failed
    assert run.returncode == 1, explain(run)
    assert run.stdout.strip().splitlines()[-1] == (
        f"{failed} of {len(planned)} trials failed; exit 1 (--allow-failures exits 0)"
    ), explain(run)
    rows = {
        r["trial_id"]: r
        for r in pq.read_table(tmp_path / "results" / name / "trials.parquet").to_pylist()
    }
    assert rows.keys() == planned.keys()
    by_estimator: dict[str, list[dict]] = {}
    for tid, row in rows.items():
        by_estimator.setdefault(planned[tid]["estimator"], []).append(row)
    for row in by_estimator["ste"]:  # siblings: untouched by the failures around them
        assert (row["status"], row["error"], row["attempts"], row["steps"]) == (
            "completed",
            None,
            1,
            40,
        ), row

    status = qsweep("status", tmp_path / "results" / name)
    assert status.returncode == 0, explain(status)
    completed = len(planned) - failed
    assert (
        f"{name}: {completed} completed, 0 running, {failed} failed, 0 pending of {len(planned)}"
        in status.stdout
    ), status.stdout
    for tid, row in rows.items():  # the CLI shows each failure's one-line reason
        if row["status"] == "failed":
            assert f"failed: {tid}: {row['error']}" in status.stdout, (row["error"], status.stdout)
    return by_estimator, rows, elapsed


def _check_failed(by_estimator: dict[str, list[dict]], expected: dict[str, tuple]) -> None:
    """estimator: (attempts, the one-line error, the exception line of the traceback)."""
    for estimator, (attempts, error, exception) in expected.items():
        (row,) = by_estimator[estimator]
        assert row["status"] == "failed" and row["attempts"] == attempts, (
            estimator,
            row["status"],
            row["attempts"],
            row["error"],
        )
        assert row["error"].startswith(error) and "\n" not in row["error"], (
            estimator,
            row["error"],
        )
        assert row["error_traceback"].rstrip().splitlines()[-1].startswith(exception), (
            estimator,
            row["error_traceback"][-2000:],
        )
        assert row["finished_at"] is not None


def test_an_error_a_nan_loss_and_a_trial_over_its_time_limit_fail_and_the_siblings_complete(
    qsweep, tmp_path
):
    by_estimator, rows, elapsed = _run_sweep(
        qsweep,
        tmp_path,
        "bad",
        {
            "ste": {"lr": [0.05, 0.1]},  # two well-behaved siblings
            "nspsa": {"model_options": {"hidden": -1}},  # raises ValueError when the model is built
            "mezo": {"lr": 1e30},  # the loss becomes NaN at step 2: TrialDiverged
            "quzo": {"steps": 10**9},  # would run for hours: stopped by the watchdog
        },
        time_limit_s=TIME_LIMIT_S,
    )
    assert len(rows) == 5
    _check_failed(
        by_estimator,
        {
            "nspsa": (
                1,
                "ValueError: mlp: option hidden=-1 must be a positive integer",
                "ValueError: mlp: option hidden=-1 must be a positive integer",
            ),
            "mezo": (
                1,
                "mezo: training loss became nan at step 2",
                f"{TrialDiverged.__module__}.TrialDiverged: mezo: training loss became nan at "
                "step 2",
            ),
            "quzo": (
                2,
                f"time limit of {TIME_LIMIT_S} s exceeded (ran ",
                f"service.limits.TrialLimitExceeded: time limit of {TIME_LIMIT_S} s exceeded",
            ),
        },
    )
    # The time-limited trial ran its two attempts for about the limit each, not for its budget
    # (hours): the bound leaves room for a busy machine's slow start, not for the budget.
    assert elapsed < 300, elapsed


def test_a_trial_over_its_memory_limit_fails_after_its_retries_and_its_sibling_completes(
    qsweep, tmp_path
):
    by_estimator, rows, _ = _run_sweep(
        qsweep,
        tmp_path,
        "hungry",
        {
            "ste": {},  # the well-behaved sibling: ~500 MB, half the limit
            "fogzo": {"model_options": {"hidden": 300_000}},  # ~1.9 GB resident if let run
        },
        memory_limit_mb=MEMORY_LIMIT_MB,  # and no time limit: only memory can stop it
    )
    assert len(rows) == 2
    _check_failed(
        by_estimator,
        {
            "fogzo": (
                2,
                f"memory limit of {MEMORY_LIMIT_MB} MB exceeded (worker process resident memory ",
                f"service.limits.TrialLimitExceeded: memory limit of {MEMORY_LIMIT_MB} MB exceeded",
            ),
        },
    )


def test_the_watchdog_interrupts_a_busy_python_loop_at_its_time_limit():
    errors: list[BaseException] = []

    def spin() -> None:
        try:
            with LimitWatchdog(time_limit_s=0.3, memory_limit_mb=None, interval_s=0.02):
                while True:  # never reports: only the asynchronous interrupt can stop it
                    sum(range(100))
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            errors.append(err)

    thread = threading.Thread(target=spin, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    (error,) = errors
    assert isinstance(error, TrialLimitExceeded) and str(error).startswith(
        "time limit of 0.3 s exceeded (ran 0."
    )


def test_the_watchdog_checks_memory_and_leaves_a_trial_within_its_limits_alone():
    rss = resident_bytes()
    assert rss is not None and rss > 0
    with pytest.raises(
        TrialLimitExceeded,
        match=r"memory limit of 1 MB exceeded \(worker process resident memory \d+ MB\)",
    ):
        with LimitWatchdog(None, memory_limit_mb=1) as limits:
            limits.check()
    with LimitWatchdog(time_limit_s=60, memory_limit_mb=10**6, interval_s=0.01) as limits:
        time.sleep(0.2)
        limits.check()
    with LimitWatchdog(None, None) as limits:  # no limits: no thread at all
        assert limits._thread is None


@pytest.mark.parametrize("field", ["time_limit_s", "memory_limit_mb"])
@pytest.mark.parametrize("value", [0, -1, "soon", float("inf"), float("nan")])
def test_limits_must_be_positive_finite_numbers(field, value):
    base = {"name": "x", "grid": {"estimators": ["ste"]}, "budget": {"steps": 1}}
    assert getattr(parse_spec({**base, field: 2.5}).spec, field) == 2.5
    assert getattr(parse_spec(base).spec, field) is None
    with pytest.raises(SpecError, match=f"^{field}: "):
        parse_spec({**base, field: value})
