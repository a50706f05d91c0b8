"""The paper presets in examples/: every scale validates; the smoke scales of the MLP, the
small-LLaMA and the QuZO fine-tuning presets run end to end; QuZO and quantized first-order
(qfo) keep their weights on the INT8 / INT4 / FP8 grid through fine-tuning from a
pre-trained float model."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from service.spec import SpecError, load_spec
from tests.service.harness import explain
from trainers import run_trial
from trainers.quant import functional as qf

PRESETS = sorted(Path("examples").glob("*.yaml"))
PAPER_PRESETS = [p for p in PRESETS if "scales" in yaml.safe_load(p.read_text())]


def test_every_paper_experiment_has_a_preset():
    names = {p.stem for p in PAPER_PRESETS}
    assert {"fogzo_mlp_vs_nspsa", "fogzo_resnet18", "fogzo_deit_tiny", "fogzo_llama_w2a2", "quzo_finetune"} <= names


@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_each_preset_validates_at_each_scale(preset, scale):
    spec = load_spec(preset, scale)
    assert spec.name.endswith(f"-{scale}") and spec.trials()


def test_unknown_scale_is_a_clear_error():
    with pytest.raises(SpecError, match="--scale huge: not one of smoke, paper"):
        load_spec(PAPER_PRESETS[0], "huge")


def _run_preset(qsweep, preset: str, tmp_path: Path) -> tuple[list[dict], Path]:
    result = qsweep("run", f"examples/{preset}.yaml", "--results", tmp_path, "--no-dashboard", "--num-cpus", 2,
                    timeout=400)
    assert result.returncode == 0, explain(result)
    sweep_dir = tmp_path / f"{load_spec(f'examples/{preset}.yaml').name}"
    rows = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert rows and all(r["status"] == "completed" for r in rows), [(r["trial_id"], r["error"]) for r in rows]
    assert (sweep_dir / "report.html").is_file()
    return rows, sweep_dir


def test_mlp_preset_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "fogzo_mlp_vs_nspsa", tmp_path)
    by_estimator = {r["estimator"]: r for r in rows}
    assert set(by_estimator) == {"fogzo", "nspsa", "ste"}
    assert by_estimator["nspsa"]["forwards"] == 2 * 760 * 300  # n = d directions, 300 steps


def test_llama_w2a2_preset_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "fogzo_llama_w2a2", tmp_path)
    assert {r["estimator"] for r in rows} == {"ste", "fogzo"}
    assert all(r["metric_name"] == "perplexity" and r["final_eval_metric"] < 256 for r in rows)


def test_quzo_finetune_preset_compares_the_papers_arms_with_3_seeds():
    """QuZO vs MeZO vs quantized first-order (qfo) vs STE + Adam (the fp32-master reference),
    INT8 / INT4 (FP8 too at paper scale), 3 seeds per arm, the authors' QuZO settings."""
    for scale, formats in (("smoke", {("int", 8), ("int", 4)}),
                           ("paper", {("int", 8), ("int", 4), ("fp8_e4m3", 8)})):
        configs = [t.config for t in load_spec("examples/quzo_finetune.yaml", scale).trials()]
        arms = {}
        for c in configs:
            arms.setdefault((c["estimator"], c["quantizer"], c["bits"]), set()).add(c["seed"])
        assert set(arms) == {(e, q, b) for e in ("quzo", "mezo", "qfo", "ste") for q, b in formats}, scale
        assert all(len(seeds) >= 3 for seeds in arms.values()), arms
        quzo = [c for c in configs if c["estimator"] == "quzo"]
        assert all(c["estimator_options"]["perturb_bits"] == 4 and c["estimator_options"]["eps"] == 1e-3
                   and c["lr_schedule"] == "linear" for c in quzo)


@pytest.mark.slow  # ~2-3 min: pre-training plus 24 fine-tuning trials
def test_quzo_finetune_preset_runs_pretraining_then_all_four_methods(qsweep, tmp_path):
    rows, sweep_dir = _run_preset(qsweep, "quzo_finetune", tmp_path)
    pretrain = [r for r in rows if r["trial_id"].startswith("pretrain-")]
    finetune = [r for r in rows if not r["trial_id"].startswith("pretrain-")]
    assert len(pretrain) == 1 and list((sweep_dir / "stages").glob("*.pt"))
    assert {r["estimator"] for r in finetune} == {"quzo", "mezo", "qfo", "ste"}
    assert {(r["quantizer"], r["bits"]) for r in finetune} == {("int", 8), ("int", 4)}
    assert all(r["peak_memory_bytes"] > 0 for r in finetune)
    # Fine-tuning starts from the pre-trained model: its first evaluation is already far
    # better than a random model's (perplexity ~256 for bytes).
    first = {r["trial_id"]: r for r in pq.read_table(sweep_dir / "curves").to_pylist() if r["step"] == 0}
    assert all(first[r["trial_id"]]["eval_metric"] < 100 for r in finetune)


@pytest.mark.parametrize("estimator,lr", [("quzo", 0.05), ("qfo", 0.1)])
@pytest.mark.parametrize("quantizer,bits", [("int", 8), ("int", 4), ("fp8_e4m3", 8)])
def test_quzo_finetuning_keeps_weights_on_the_grid(tmp_path, quantizer, bits, estimator, lr):
    base = {"model": "mlp", "dataset": "digits", "num_evals": 1, "threads": 1}
    run_trial({**base, "quantizer": "none", "estimator": "ste", "optimizer": "adam", "lr": 0.01, "steps": 60,
               "save_model_to": str(tmp_path / "pre.pt")}, lambda m: None)
    run_trial({**base, "quantizer": quantizer, "bits": bits, "estimator": estimator, "lr": lr, "steps": 30,
               "init_from": str(tmp_path / "pre.pt"), "save_model_to": str(tmp_path / "tuned.pt")}, lambda m: None)
    pre, tuned = torch.load(tmp_path / "pre.pt"), torch.load(tmp_path / "tuned.pt")
    for layer in ("1", "3"):  # the two Linear layers of the MLP
        w, scale = tuned[f"{layer}.weight"], tuned[f"{layer}.weight_quantizer.frozen_scale"]
        if quantizer == "int":
            qmin, qmax = qf.int_range(bits)
            on_grid = qf.fake_quantize(w, scale, qmin, qmax)
        else:
            on_grid = qf.round_to_fp8(w / scale, quantizer) * scale
        assert torch.equal(on_grid, w), f"layer {layer} left the {quantizer}{bits} grid"
        assert not torch.equal(w, pre[f"{layer}.weight"])
