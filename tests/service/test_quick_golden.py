"""The refactor of issue 17 kept the results: the shortened quick sweep writes the Parquet
it wrote before (``tests/data/quick_golden``), except the contract's version fields and
what differs from run to run. Intended differences are named here, one by one."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq

from tests.service.harness import cli_env, short_tempdir
from tests.service.quick_golden import GOLDEN, ROOT, comparable

# In-place estimators (MeZO, QuZO, QFO) never ran an optimizer: since issue 17 their rows leave
# the optimizer settings empty instead of recording defaults that did not take effect.
IN_PLACE = {"mezo", "quzo", "qfo"}
OPTIMIZER_FIELDS = ("optimizer", "momentum", "weight_decay")


def _expected_trials(rows):
    for row in rows:
        if row["estimator"] in IN_PLACE:
            row.update(dict.fromkeys(OPTIMIZER_FIELDS))
    return rows


def test_the_quick_sweep_writes_the_parquet_it_wrote_before_the_refactor():
    out = short_tempdir("golden-out")
    done = subprocess.run(
        [sys.executable, "-m", "tests.service.quick_golden", str(out)],
        cwd=ROOT,
        env=cli_env(short_tempdir("golden-ray")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trials = comparable(pq.read_table(out / "trials.parquet"), ["trial_id"])
    golden = _expected_trials(comparable(pq.read_table(GOLDEN / "trials.parquet"), ["trial_id"]))
    assert [r["trial_id"] for r in trials] == [r["trial_id"] for r in golden]
    for new, old in zip(trials, golden):
        assert set(new) >= set(old), f"{new['trial_id']}: columns lost"
        assert {k: new[k] for k in old} == old, new["trial_id"]
    curves = comparable(pq.read_table(out / "curves.parquet"), ["trial_id", "step"])
    assert curves == comparable(
        pq.read_table(GOLDEN / "curves.parquet"), ["trial_id", "step"]
    )
