"""Load: 500 tiny trials (MLP on digits, 1 step, 1 evaluation, no checkpoints) through one
``qsweep run``: every trial and curve row present, once; the driver's memory sampled from
/proc (VmRSS every 0.25 s, and the kernel's VmHWM peak) from start to end; and a
``qsweep status`` timed while the sweep runs.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.spec_loading import load_spec
from tests.reliability.helpers import RssSampler, check_every_trial_once, wait_for
from tests.service.harness import explain, write_spec

SEEDS = 250  # x 2 bit-widths = 500 trials
STATUS_LIMIT_S = (
    60  # generous: the CLI imports torch and Ray on a 2-core machine the sweep keeps busy
)


def _completed(sweep_dir) -> int:
    try:
        table = pq.read_table(sweep_dir / "trials.parquet", columns=["status"])
    except (OSError, pa.ArrowInvalid):
        return 0
    return table.column("status").to_pylist().count("completed")


@pytest.mark.slow
def test_500_tiny_trials_all_land_with_bounded_driver_memory_and_a_responsive_status(
    qsweep, tmp_path
):
    spec_file = write_spec(
        tmp_path,
        "load",
        grid={"estimators": ["ste"], "bits": [2, 4], "seeds": list(range(SEEDS))},
        trial={"num_evals": 1, "batch_size": 16},
        budget={"steps": 1},
        retries=0,
        checkpoint_every=0,
    )
    planned = {t.trial_id: t.config for t in load_spec(spec_file).trials}
    assert len(planned) == 500
    sweep_dir = tmp_path / "results" / "load"
    log_path = tmp_path / "driver.log"
    log = log_path.open("w")
    started = time.monotonic()
    driver = qsweep.start(
        "run",
        spec_file,
        "--results",
        tmp_path / "results",
        "--no-dashboard",
        "--num-cpus",
        2,
        stdout=log,
        stderr=log,
    )
    with RssSampler(driver.pid) as memory:
        wait_for(
            lambda: (sweep_dir / "trials.parquet").exists(),
            240,
            "the first trial",
            driver,
            log_path,
        )
        rss_at_start_kb = memory.samples[-1][1]
        done_then = wait_for(
            lambda: _completed(sweep_dir) >= 100 and _completed(sweep_dir),
            1200,
            "100 completed trials",
            driver,
            log_path,
            every=0.5,
        )
        status_started = time.monotonic()
        status = qsweep("status", sweep_dir, timeout=STATUS_LIMIT_S * 2)
        status_s = time.monotonic() - status_started
        assert status.returncode == 0, explain(status)
        done_after = _completed(sweep_dir)
        driver.wait(timeout=1800)
    log.close()
    wall_s = time.monotonic() - started
    assert driver.returncode == 0, log_path.read_text()[-4000:]

    assert "load: " in status.stdout and " of 500; " in status.stdout, status.stdout
    assert status_s < STATUS_LIMIT_S, status_s
    assert done_after < 500, "the status call did not overlap the sweep"

    rows = check_every_trial_once(
        sweep_dir, planned, num_evals=1, steps=1
    )  # 500 rows, 1000 curve rows
    assert {r["attempts"] for r in rows.values()} == {1}
    assert pq.read_table(sweep_dir / "curves").num_rows == 1000

    first_kb = memory.samples[0][1]
    print(
        f"\nload: 500/500 trials, 1000 curve rows, 0 lost, 0 duplicated in {wall_s:.0f}s; "
        f"driver RSS {first_kb / 1024:.0f} MB at launch, {rss_at_start_kb / 1024:.0f} MB when "
        f"trials began, {memory.samples[-1][1] / 1024:.0f} MB at the end, peak "
        f"{memory.peak_kb / 1024:.0f} MB; `qsweep status` took {status_s:.1f}s with "
        f"{done_then}-{done_after} trials done"
    )
    assert (
        memory.peak_kb < 2 * 1024 * 1024
    )  # 2 GB: a driver that keeps per-trial state unboundedly would blow it
