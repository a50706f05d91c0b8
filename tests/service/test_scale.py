"""Scale: 2,000 trials through qsweep's service with a trivial trainable (no torch work,
``benchmarks.scale``), on the module's embedded Ray: every trial has exactly one row, the
curves no duplicate ``(trial_id, step)``, and the cost of one status event does not grow
with the number of trials.

The driver-side time of every ``ResultsLedger.start`` / ``complete`` call (what the Parquet
sink runs for a trial's status changes) is taken in place; per trial, start + complete.
The median over the first 200 trials to start is compared with the median over the last
200: with a table rewritten at every event (the cost grows with the rows) the last ones
cost ~10x the first; with the event journal both are one small file write. Medians,
because the fold (a whole-table rewrite on the ledger's timer) lands in some events; its
share is bounded by the ledger's timer, not by this test.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import pytest

from benchmarks.scale import CONCURRENT, TRIAL_CPU, make_trivial_trainable, spec_data
from contract.storage import read_results
from service.ledger import ResultsLedger
from service.runner import _callbacks, prepare
from service.spec_loading import parse_spec
from service.tuner import build_tuner

TRIALS = 2000
EDGE = 200  # first / last trials compared
GROWTH_LIMIT = 3.0  # last / first median event cost; rewriting the table every event: ~10x
SLEEP_S = 0.03  # per trial: the driver, not the trials, sets the pace
EVALS = 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_2000_trials_land_once_and_a_status_event_costs_the_same_first_and_last(
    ray_cluster, tmp_path, monkeypatch
):
    from ray import tune

    plan = parse_spec(spec_data(TRIALS, str(tmp_path / "results")))
    assert len(plan.trials) == TRIALS
    run = prepare(plan, str(tmp_path / "results"))

    spent: dict[str, float] = defaultdict(float)
    order: list[str] = []  # trial ids in the order they started

    def timed(method):
        def wrapper(self, tid, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(self, tid, *args, **kwargs)
            finally:
                spent[tid] += time.perf_counter() - t0

        return wrapper

    original_start = ResultsLedger.start

    def start(self, tid):
        if tid not in spent:
            order.append(tid)
        return timed(original_start)(self, tid)

    monkeypatch.setattr(ResultsLedger, "start", start)
    monkeypatch.setattr(ResultsLedger, "complete", timed(ResultsLedger.complete))

    barrier = tmp_path / "barrier"  # 16 live actors before the first trial ends (see there)
    barrier.mkdir()
    trivial = make_trivial_trainable(SLEEP_S, EVALS, str(barrier), CONCURRENT)
    trainable = tune.with_resources(trivial, {"cpu": TRIAL_CPU})
    started = time.perf_counter()
    build_tuner(plan, run.sweep_dir, _callbacks(run, live=False), trainable=trainable).fit()
    wall = time.perf_counter() - started

    trials, curves = read_results(run.sweep_dir)
    ids = trials.column("trial_id").to_pylist()
    assert sorted(ids) == sorted(t.trial_id for t in plan.trials)  # every trial, once
    assert set(trials.column("status").to_pylist()) == {"completed"}
    keys = list(zip(curves.column("trial_id").to_pylist(), curves.column("step").to_pylist()))
    assert len(keys) == len(set(keys)) == TRIALS * EVALS

    assert len(order) == TRIALS
    first = statistics.median(spent[tid] for tid in order[:EDGE])
    last = statistics.median(spent[tid] for tid in order[-EDGE:])
    print(
        f"{TRIALS} trials in {wall:.0f} s; start + complete per trial: first {EDGE} "
        f"{first * 1e3:.2f} ms, last {EDGE} {last * 1e3:.2f} ms (median)"
    )
    assert last <= GROWTH_LIMIT * first, (
        f"a trial's status events cost {last * 1e3:.2f} ms for the last {EDGE} trials vs "
        f"{first * 1e3:.2f} ms for the first {EDGE}: the cost grows with the sweep"
    )
