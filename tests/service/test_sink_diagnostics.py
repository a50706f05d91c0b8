"""The sink writes each trial's probes to <sweep>/diagnostics/<trial_id>.parquet (curves' dedupe
rule)."""

from __future__ import annotations

from ray.tune.experiment import Trial

from contract.schema import DIAGNOSTIC_FIGURES, DIAGNOSTICS_SCHEMA, SCHEMA_VERSION
from contract.storage import read_diagnostics, read_results
from service.sink import ParquetSink
from service.spec_loading import parse_spec
from trainers.diagnostics import FIGURES


def test_figures_agree_between_trainers_and_the_contract():
    assert FIGURES == DIAGNOSTIC_FIGURES


def test_sink_writes_probes_keyed_by_trial_and_step(tmp_path):
    spec = parse_spec(
        {
            "name": "diag",
            "grid": {"estimators": ["fogzo"], "bits": [2]},
            "trial": {"diagnostics": {"every": 2, "repeats": 4}},
            "budget": {"steps": 40},
        }
    )
    planned = {p.trial_id: p.config for p in spec.trials}
    (tid,) = planned
    trial = Trial("trainable", config={"planned_id": tid}, trial_id="t0", stub=True)
    sink = ParquetSink(
        str(tmp_path / "diag"), "diag", planned, {"qsweep": "test"}, journal_every_s=0
    )
    sink.on_trial_start(iteration=0, trials=[trial], trial=trial)

    def result(step, cosine=None, flat=False):
        out = {"step": step, "eval_loss": 1.0, "eval_metric": 0.5, "progress": step / 40}
        if cosine is not None:
            probe = {name: 1.0 for name in FIGURES} | {"est_cosine": cosine}
            out |= (
                {f"diagnostics/{k}": v for k, v in probe.items()}
                if flat
                else {"diagnostics": probe}
            )
        return out

    for step, cosine in ((0, 0.1), (10, None), (20, 0.2), (30, None)):
        sink.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result(step, cosine))
    # A rewind to step 20 (restart from a checkpoint): rows from step 20 on are replaced.
    sink.on_trial_result(
        iteration=0, trials=[trial], trial=trial, result=result(20, 0.25, flat=True)
    )
    sink.on_trial_result(
        iteration=0, trials=[trial], trial=trial, result={**result(40, 0.4), "done": True}
    )
    sink.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    table = read_diagnostics(str(tmp_path / "diag"))
    assert table.schema == DIAGNOSTICS_SCHEMA
    rows = table.to_pylist()
    assert [(r["step"], r["est_cosine"]) for r in rows] == [(0, 0.1), (20, 0.25), (40, 0.4)]
    assert all(
        r["trial_id"] == tid
        and r["estimator"] == "fogzo"
        and r["bits"] == 2
        and r["schema_version"] == SCHEMA_VERSION
        for r in rows
    )
    assert read_results(str(tmp_path / "diag"))[1].num_rows == 4  # the curve: 0, 10, 20, 40
    # A new sink over the folder (a resumed driver) keeps the rows, without duplicates.
    again = ParquetSink(
        str(tmp_path / "diag"), "diag", planned, {"qsweep": "test"}, journal_every_s=0
    )
    assert sorted(again.ledger.diagnostics[tid]) == [0, 20, 40]
