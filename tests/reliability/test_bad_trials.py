"""Bad trials in one real sweep: an exception, a NaN loss, a trial over its time limit and one
over its memory limit each end as a ``failed`` row with its one-line reason; the exception and
the NaN loss after one attempt (deterministic: ``service.failures``), the limits after
``retries + 1``; their siblings complete untouched. Plus the limit watchdog on its own."""

from __future__ import annotations

import threading
import time

import pyarrow.parquet as pq
import pytest

from service.limits import LimitWatchdog, TrialLimitExceeded, resident_bytes
from service.spec import SpecError, load_spec, parse_spec
from tests.service.harness import explain, write_spec

TIME_LIMIT_S = 10  # the tiny siblings take 1-3 s even on a busy machine
MEMORY_LIMIT_MB = 1000  # a tiny trial's worker holds ~500 MB; the 300000-wide MLP needs ~1.9 GB


def test_each_bad_trial_fails_with_its_reason_after_its_retries_and_the_siblings_complete(
    qsweep, tmp_path
):
    spec_file = write_spec(
        tmp_path,
        "bad",
        grid={"estimators": ["ste", "nspsa", "mezo", "quzo", "fogzo"]},
        trial={"num_evals": 2},
        budget={"steps": 40},
        retries=1,
        checkpoint_every=0,
        time_limit_s=TIME_LIMIT_S,
        memory_limit_mb=MEMORY_LIMIT_MB,
        estimators={
            "ste": {"lr": [0.05, 0.1]},  # two well-behaved siblings
            "nspsa": {"model_options": {"hidden": -1}},  # raises ValueError when the model is built
            "mezo": {"lr": 1e30},  # the loss becomes NaN at step 2: TrialDiverged
            "quzo": {
                "steps": 10**9
            },  # would run for hours: stopped between evaluations by the watchdog
            "fogzo": {"model_options": {"hidden": 300_000}},  # ~1.9 GB resident if let run
        },
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    assert len(planned) == 6
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
    # failed trials are results (every row written), and the exit code says some failed
    assert run.returncode == 1, explain(run)
    assert run.stdout.strip().splitlines()[-1] == (
        "4 of 6 trials failed; exit 1 (--allow-failures exits 0)"
    ), explain(run)

    rows = {
        r["trial_id"]: r
        for r in pq.read_table(tmp_path / "results" / "bad" / "trials.parquet").to_pylist()
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
    expected = {  # estimator: (attempts, the one-line error, the exception line of the traceback)
        "nspsa": (
            1,
            "ValueError: mlp: option hidden=-1 must be a positive integer",
            "ValueError: mlp: option hidden=-1 must be a positive integer",
        ),
        "mezo": (
            1,
            "mezo: training loss became nan at step 2",
            "trainers.trial.TrialDiverged: mezo: training loss became nan at step 2",
        ),
        "quzo": (
            2,
            f"time limit of {TIME_LIMIT_S} s exceeded (ran ",
            f"service.limits.TrialLimitExceeded: time limit of {TIME_LIMIT_S} s exceeded",
        ),
        "fogzo": (
            2,
            f"memory limit of {MEMORY_LIMIT_MB} MB exceeded (worker process resident memory ",
            f"service.limits.TrialLimitExceeded: memory limit of {MEMORY_LIMIT_MB} MB exceeded",
        ),
    }
    for estimator, (attempts, error, exception) in expected.items():
        (row,) = by_estimator[estimator]
        assert row["status"] == "failed" and row["attempts"] == attempts, (
            estimator,
            row["status"],
            row["attempts"],
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
    # The time-limited trial ran its two attempts for about the limit each, not for its budget.
    assert elapsed < 300, elapsed

    status = qsweep("status", tmp_path / "results" / "bad")
    assert status.returncode == 0, explain(status)
    assert "bad: 2 completed, 0 running, 4 failed, 0 pending of 6" in status.stdout
    for tid, row in rows.items():  # the CLI shows each failure's one-line reason
        if row["status"] == "failed":
            assert f"failed: {tid}: {row['error']}" in status.stdout, (row["error"], status.stdout)


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
