"""The paper presets in examples/: every scale validates; the reproduction presets
(repro_*.yaml, one per claim family) have >= 3 seeds per arm at every scale and the arms the
paper compares; every smoke scale runs end to end; QuZO and quantized first-order (qfo) keep
their weights on the INT8 / INT4 / FP8 grid through fine-tuning from a pre-trained float model."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from service.errors import SpecError
from service.spec_loading import load_spec
from tests.service.harness import explain
from trainers import run_trial
from trainers.quant import functional as qf

PRESETS = sorted(Path("examples").glob("*.yaml"))
PAPER_PRESETS = [p for p in PRESETS if "scales" in yaml.safe_load(p.read_text())]


def test_every_paper_experiment_has_a_preset():
    names = {p.stem for p in PAPER_PRESETS}
    assert {
        "fogzo_mlp_vs_nspsa",
        "fogzo_resnet18",
        "fogzo_deit_tiny",
        "fogzo_llama_w2a2",
        "repro_fogzo_mlp",
        "repro_fogzo_deep",
        "repro_fogzo_walltime",
        "repro_quzo",
    } <= names


REPRO = ["repro_fogzo_mlp", "repro_fogzo_deep", "repro_fogzo_walltime", "repro_quzo"]


def _arms(configs: list[dict]) -> dict[tuple, set[int]]:
    """Seeds per arm: an arm is everything of a trial's config but its seed."""
    arms: dict[tuple, set[int]] = {}
    for c in configs:
        key = json.dumps({k: v for k, v in c.items() if k != "seed"}, sort_keys=True, default=str)
        arms.setdefault(key, set()).add(c["seed"])
    return arms


@pytest.mark.parametrize("preset", REPRO)
@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_every_repro_arm_has_3_seeds(preset, scale):
    configs = [t.config for t in load_spec(f"examples/{preset}.yaml", scale).trials]
    arms = _arms(configs)
    assert len(arms) >= 2 and all(len(seeds) >= 3 for seeds in arms.values()), arms


def _configs(preset: str, scale: str) -> list[dict]:
    return [t.config for t in load_spec(f"examples/{preset}.yaml", scale).trials]


@pytest.mark.parametrize("scale,dataset,size", [("smoke", "digits", 28), ("paper", "mnist", None)])
def test_repro_mlp_is_the_papers_784_10_10_at_2_bits_fixed_alpha(scale, dataset, size):
    configs = _configs("repro_fogzo_mlp", scale)
    assert {(c["estimator"], c["estimator_options"].get("n")) for c in configs} == {
        ("ste", None),
        ("nspsa", 1),
        ("nspsa", 7960),
        ("fogzo", 1),
    }
    for c in configs:
        assert (c["bits"], c["dataset"], c.get("dataset_options", {}).get("size")) == (
            2,
            dataset,
            size,
        )
        assert c["quant_options"] == {"scale": "fixed", "surrogate": "identity"}
        assert c["model_options"] == {"hidden": 10} and "init_from" not in c
    fogzo = next(c for c in configs if c["estimator"] == "fogzo")["estimator_options"]
    assert fogzo["beta_start"] == fogzo["beta_min"] == 0.999
    # n = d is held to a few steps by its flops; n = 1 runs every step it is given
    flops_per_step_nd = 1.6e10
    nd = next(c for c in configs if c["estimator_options"].get("n") == 7960)
    assert nd["flops"] / flops_per_step_nd < nd["steps"]
    assert 2 * 1 * 1e6 * nd["steps"] < nd["flops"]  # n = 1: ~1e6 FLOPs a forward, under the cap


@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_repro_deep_pairs_each_model_with_its_data_fixed_alpha_equal_iterations(scale):
    configs = _configs("repro_fogzo_deep", scale)
    vision = "digits" if scale == "smoke" else "cifar10"
    assert {(c["model"], c["dataset"]) for c in configs} == {
        ("deit_tiny", vision),
        ("resnet18", vision),
        ("llama", "text"),
    }
    assert {c["estimator"] for c in configs} == {"ste", "fogzo"}
    for c in configs:
        assert (
            c["quant_options"]["scale"] == "fixed" and c["quant_options"]["surrogate"] == "identity"
        )
        assert c["lr_schedule"] == "cosine" and c["flops"] is None
        if c["estimator"] == "fogzo":
            assert (
                c["estimator_options"].get("warm_start", 0.0) == 0.0
            )  # pure FOGZO at equal iterations
            assert (
                c["estimator_options"]["beta_min"] == "auto"
                and c["estimator_options"]["zo_params"] == "quantized"
            )
    steps = {}
    for c in configs:  # equal iterations: STE and FOGZO of a model get the same steps
        steps.setdefault(c["model"], set()).add(c["steps"])
    assert all(len(s) == 1 for s in steps.values()), steps
    assert all(
        c["quant_options"].get("act_bits") == 2 for c in configs if c["model"] == "llama"
    )  # W2A2


@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_repro_walltime_gives_ste_and_70_30_fogzo_the_same_flops(scale):
    configs = _configs("repro_fogzo_walltime", scale)
    assert {c["estimator"] for c in configs} == {"ste", "fogzo"}
    assert len({c["flops"] for c in configs}) == 1 and all(c["steps"] is None for c in configs)
    assert all(
        c["estimator_options"]["warm_start"] == 0.7 for c in configs if c["estimator"] == "fogzo"
    )


@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_each_preset_validates_at_each_scale(preset, scale):
    # Paper-scale checkpoints and data live on a cluster's storage, not here: the spec is
    # checked (as `qsweep validate` does), the files it names are not; smoke reads them.
    spec = load_spec(preset, scale, check_files=scale == "smoke")
    assert spec.name.endswith(f"-{scale}") and spec.trials


def test_unknown_scale_is_a_clear_error():
    with pytest.raises(SpecError, match="--scale huge: not one of smoke, paper"):
        load_spec(PAPER_PRESETS[0], "huge")


def _run_preset(qsweep, preset: str, tmp_path: Path, timeout: int = 400) -> tuple[list[dict], Path]:
    result = qsweep(
        "run",
        f"examples/{preset}.yaml",
        "--results",
        tmp_path,
        "--no-dashboard",
        "--num-cpus",
        2,
        timeout=timeout,
    )
    assert result.returncode == 0, explain(result)
    sweep_dir = tmp_path / f"{load_spec(f'examples/{preset}.yaml').name}"
    rows = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert rows and all(r["status"] == "completed" for r in rows), [
        (r["trial_id"], r["error"]) for r in rows
    ]
    assert (sweep_dir / "report.html").is_file()
    return rows, sweep_dir


@pytest.mark.slow  # a whole preset sweep: keeps the default suite near 15 min
def test_mlp_preset_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "fogzo_mlp_vs_nspsa", tmp_path)
    by_estimator = {r["estimator"]: r for r in rows}
    assert set(by_estimator) == {"fogzo", "nspsa", "ste"}
    assert by_estimator["nspsa"]["forwards"] == 2 * 760 * 300  # n = d directions, 300 steps


@pytest.mark.slow  # a whole preset sweep: keeps the default suite near 15 min
def test_llama_w2a2_preset_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "fogzo_llama_w2a2", tmp_path)
    assert {r["estimator"] for r in rows} == {"ste", "fogzo"}
    assert all(r["metric_name"] == "perplexity" and r["final_eval_metric"] < 256 for r in rows)


def test_repro_quzo_compares_the_papers_arms_with_3_seeds():
    """QuZO vs MeZO vs quantized first-order (qfo) vs STE + Adam (the fp32-master reference),
    INT8 / INT4 / FP8 at every scale, 3 seeds per arm, the authors' QuZO settings, every
    trial fine-tuning the pre-trained model."""
    for scale in ("smoke", "paper"):
        formats = {("int", 8), ("int", 4), ("fp8_e4m3", 8)}
        configs = [t.config for t in load_spec("examples/repro_quzo.yaml", scale).trials]
        assert all(c["init_from"].startswith("stage:pretrain-") for c in configs)
        arms = {}
        for c in configs:
            arms.setdefault((c["estimator"], c["quantizer"], c["bits"]), set()).add(c["seed"])
        assert set(arms) == {
            (e, q, b) for e in ("quzo", "mezo", "qfo", "ste") for q, b in formats
        }, scale
        assert all(len(seeds) >= 3 for seeds in arms.values()), arms
        quzo = [c for c in configs if c["estimator"] == "quzo"]
        assert all(
            c["estimator_options"]["perturb_bits"] == 4
            and c["estimator_options"]["eps"] == 1e-3
            and c["lr_schedule"] == "linear"
            for c in quzo
        )


def _every_arm_completed_with_3_seeds(rows: list[dict]) -> None:
    configs = [json.loads(r["config"]) for r in rows if not r["trial_id"].startswith("pretrain-")]
    assert all(r["status"] == "completed" for r in rows)
    assert all(len(seeds) >= 3 for seeds in _arms(configs).values()), _arms(configs)


@pytest.mark.slow  # ~2 min on 2 cores (the n = d arm: ~30 s a trial)
def test_repro_fogzo_mlp_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "repro_fogzo_mlp", tmp_path)
    _every_arm_completed_with_3_seeds(rows)
    assert len(rows) == 12


@pytest.mark.slow
def test_repro_fogzo_deep_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "repro_fogzo_deep", tmp_path, timeout=900)
    _every_arm_completed_with_3_seeds(rows)
    assert {r["model"] for r in rows} == {"deit_tiny", "resnet18", "llama"}


@pytest.mark.slow
def test_repro_fogzo_walltime_smoke_run(qsweep, tmp_path):
    rows, _ = _run_preset(qsweep, "repro_fogzo_walltime", tmp_path)
    _every_arm_completed_with_3_seeds(rows)
    steps = {r["estimator"]: r["steps"] for r in rows}
    assert steps["fogzo"] < steps["ste"]  # the same FLOPs buy the 70/30 arm fewer steps


@pytest.mark.slow  # ~3-4 min: pre-training plus 36 fine-tuning trials
def test_repro_quzo_runs_pretraining_then_all_four_methods(qsweep, tmp_path):
    rows, sweep_dir = _run_preset(qsweep, "repro_quzo", tmp_path, timeout=900)
    _every_arm_completed_with_3_seeds(rows)
    pretrain = [r for r in rows if r["trial_id"].startswith("pretrain-")]
    finetune = [r for r in rows if not r["trial_id"].startswith("pretrain-")]
    assert len(pretrain) == 1 and list((sweep_dir / "stages").glob("*.pt"))
    assert {r["estimator"] for r in finetune} == {"quzo", "mezo", "qfo", "ste"}
    assert {(r["quantizer"], r["bits"]) for r in finetune} == {
        ("int", 8),
        ("int", 4),
        ("fp8_e4m3", 8),
    }
    assert all(r["peak_memory_bytes"] > 0 for r in finetune)
    # Fine-tuning starts from the pre-trained model: its first evaluation is already far
    # better than a random model's (perplexity ~256 for bytes).
    first = {
        r["trial_id"]: r for r in pq.read_table(sweep_dir / "curves").to_pylist() if r["step"] == 0
    }
    assert all(first[r["trial_id"]]["eval_metric"] < 100 for r in finetune)


@pytest.mark.parametrize("estimator,lr", [("quzo", 0.05), ("qfo", 0.1)])
@pytest.mark.parametrize("quantizer,bits", [("int", 8), ("int", 4), ("fp8_e4m3", 8)])
def test_quzo_finetuning_keeps_weights_on_the_grid(tmp_path, quantizer, bits, estimator, lr):
    """With ``master_weights: none`` (weights stored on the grid; the default, ``fp32``, keeps a
    float copy as the QuZO authors' code does) the fine-tuned weights end on the grid."""
    base = {"model": "mlp", "dataset": "digits", "num_evals": 1, "threads": 1}
    run_trial(
        {
            **base,
            "quantizer": "none",
            "estimator": "ste",
            "optimizer": "adam",
            "lr": 0.01,
            "steps": 60,
            "save_model_to": str(tmp_path / "pre.pt"),
        },
        lambda m: None,
    )
    run_trial(
        {
            **base,
            "quantizer": quantizer,
            "bits": bits,
            "estimator": estimator,
            "estimator_options": {"master_weights": "none"},
            "lr": lr,
            "steps": 30,
            "init_from": str(tmp_path / "pre.pt"),
            "save_model_to": str(tmp_path / "tuned.pt"),
        },
        lambda m: None,
    )
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
