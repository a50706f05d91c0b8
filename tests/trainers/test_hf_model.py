"""``hf_causal_lm``: tiny Hugging Face LLaMA and OPT checkpoints, saved with
``save_pretrained``, loaded offline, quantized and trained with every estimator; LoRA,
prompt classification, left padding, one-line errors and the stage hand-over."""

from __future__ import annotations

import json
import math
import shutil
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers import run_trial
from trainers.checkpoints import canonical_name, load_model, save_model
from trainers.estimators import ESTIMATORS, CostModel, build_estimator, perturb
from trainers.hf import check_checkpoint
from trainers.models import build_model
from trainers.models.hf_causal_lm import HFCausalLM
from trainers.quant import QuantSpec, quantize_model, quantized_layers
from trainers.quant.layers import QuantEmbedding, QuantLinear

VOCAB, SEQ, PAD = 64, 8, 0
LABELS = [5, 9, 17]  # one token id per class
COST = CostModel(forward_flops=1.0, backward_flops=2.0)
LORA = {"r": 2, "alpha": 4, "targets": ["q_proj", "v_proj"], "dropout": 0.0}
KINDS = ("llama", "opt")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from intra-op threads (see test_llama.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """A tiny LLaMA (untied head) and a tiny OPT (head tied to the embedding), each saved
    with ``save_pretrained`` as HF would ship them."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    common = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2}
    configs = {
        "llama": (
            LlamaForCausalLM,
            LlamaConfig(
                **common,
                intermediate_size=32,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=32,
            ),
        ),
        "opt": (
            OPTForCausalLM,
            OPTConfig(
                **common,
                ffn_dim=32,
                num_attention_heads=2,
                max_position_embeddings=32,
                word_embed_proj_dim=16,
                dropout=0.0,
                attention_dropout=0.0,
            ),
        ),
    }
    root = tmp_path_factory.mktemp("hf")
    paths = {}
    with torch.random.fork_rng(devices=[]):
        for kind, (cls, config) in configs.items():
            torch.manual_seed(0)
            cls(config).save_pretrained(root / kind)
            paths[kind] = str(root / kind)
    return paths


def hf_model(path: str | None, bits: int | None = 4, **options) -> HFCausalLM:
    """The checkpoint at ``path`` (or ``config=``) for 3-class prompt classification,
    quantized to ``bits`` (None: float)."""
    options.setdefault("pad_token_id", PAD)
    options.setdefault("label_token_ids", LABELS)
    classes = len(options["label_token_ids"]) if options["label_token_ids"] else VOCAB
    model = build_model("hf_causal_lm", (SEQ,), classes, path=path, **options)
    return quantize_model(model, QuantSpec(kind="int", bits=bits)) if bits else model


def batch(seed: int = 0, rows: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(1, VOCAB, (rows, SEQ), generator=gen)
    x[0, :3] = PAD  # left padding
    x[1, :1] = PAD
    return x, torch.randint(0, len(LABELS), (rows,), generator=gen)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bypassed_loss(model: nn.Module, seen: list[set[str]]):
    """Cross-entropy that records which quantized layers evaluate their weight as-is (QuZO's
    bypass of the quantizer for on-grid weights) while the loss is taken."""

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append({n for n, m in quantized_layers(model) if m.bypass_weight_quant})
        return F.cross_entropy(logits, targets)

    return loss_fn


def one_step(
    model: nn.Module, name: str, lr: float, steps: int = 1, loss_fn=F.cross_entropy, **options
) -> list[float]:
    est = build_estimator(name, options, COST, seed=0, lr=lr)
    est.prepare(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = None if est.updates_in_place else torch.optim.SGD(trainable, lr=lr)
    losses = []
    for step in range(steps):
        losses.append(est.step(model, loss_fn, batch(step), 0.5).loss)
        if opt:
            opt.step()
    return losses


def is_adapter(key: str) -> bool:
    return ".lora_" in key


# --- loading, quantizing, training --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_linear_but_the_head_is_quantized(checkpoints, kind) -> None:
    model = hf_model(checkpoints[kind])
    lm = model.lm
    assert type(lm).__name__ == {"llama": "LlamaForCausalLM", "opt": "OPTForCausalLM"}[kind]
    head, embed = lm.get_output_embeddings(), lm.get_input_embeddings()
    assert (head.weight is embed.weight) == (kind == "opt")  # OPT ties, this LLaMA does not
    assert type(head) is nn.Linear and type(embed) is nn.Embedding  # both stay float
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not head]
    assert linears and all(type(m) is QuantLinear for m in linears)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_quantize_embeddings_keeps_tied_weights_tied(checkpoints, kind) -> None:
    model = hf_model(checkpoints[kind], quantize_embeddings=True)
    head, embed = model.lm.get_output_embeddings(), model.lm.get_input_embeddings()
    assert type(head) is QuantLinear and type(embed) is QuantEmbedding
    assert embed.act_quantizer is None  # token ids are never quantized
    tied = kind == "opt"
    assert (head.weight is embed.weight) == tied
    assert (head.weight_quantizer is embed.weight_quantizer) == tied  # one grid per tensor
    one_step(model, "quzo", lr=0.05, steps=2, master_weights="none")  # snaps, updates on grid
    assert (head.weight is embed.weight) == tied
    for _, layer in quantized_layers(model):
        assert torch.equal(layer.weight_quantizer.round_nearest(layer.weight), layer.weight)
    x, _ = batch()
    with torch.no_grad():  # the lookup reads the quantized table
        hidden = embed(x)
    assert torch.equal(hidden, F.embedding(x, embed.weight_quantizer(embed.weight)))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_estimator_trains_a_step(checkpoints, kind, name) -> None:
    model = hf_model(checkpoints[kind])
    before = snapshot(model)
    loss = one_step(model, name, lr=0.05, **({"n": 4} if name in ("nspsa", "fogzo") else {}))[0]
    assert math.isfinite(loss) and 0.5 < loss < 3.0  # ~ln(3) for 3 classes at init
    after = model.state_dict()  # QuZO / qfo's prepare adds frozen scales: compare the rest
    moved = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert any(k.endswith("proj.weight") for k in moved), moved


@pytest.mark.parametrize("name", ["mezo", "quzo"])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_lr_leaves_parameters_unchanged(checkpoints, kind, name) -> None:
    """QuZO's on-grid weights (``master_weights: none``, float probes) return bit for bit (its
    update pass re-rounds onto the grid).
    Float tensors (all of MeZO's; QuZO's norms, biases, embeddings) go theta + eps z - 2 eps z
    + eps z in float arithmetic, which lands within a rounding error of theta, not on it:
    exactness there would need a copy of theta, which MeZO exists to avoid."""
    model = hf_model(checkpoints[kind])
    options = {"master_weights": "none", "probe": "float"} if name == "quzo" else {}
    est = build_estimator(name, {"n": 2, **options}, COST, seed=0, lr=0.0)
    est.prepare(model)
    before, seen = snapshot(model), []
    for step in range(3):
        est.step(model, bypassed_loss(model, seen), batch(step), 0.5)
    after = model.state_dict()
    on_grid = {f"{n}.weight" for n, _ in quantized_layers(model)} if name == "quzo" else set()
    assert len(on_grid) == (14 if kind == "llama" else 12) or name == "mezo"
    # QuZO's perturbed forwards read every (on-grid, trained) weight as-is; MeZO's none.
    assert len(seen) == 12 and all(s == {k[: -len(".weight")] for k in on_grid} for s in seen)
    for key, value in after.items():
        if key in on_grid:
            assert torch.equal(value, before[key]), key
        else:
            torch.testing.assert_close(value, before[key], rtol=0, atol=1e-6, msg=key)


# --- LoRA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mezo", "quzo", "nspsa"])
@pytest.mark.parametrize("kind", KINDS)
def test_lora_zo_steps_move_adapters_only(checkpoints, kind, name) -> None:
    model = hf_model(checkpoints[kind], lora=LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter(n) for n in trainable)
    assert not any(is_adapter(n) for n, _ in quantized_layers(model))  # adapters stay float
    assert any(n.endswith("q_proj.base_layer") for n, _ in quantized_layers(model))
    before, seen = snapshot(model), []
    options = {"n": 4} if name == "nspsa" else {}
    one_step(model, name, lr=0.05, steps=2, loss_fn=bypassed_loss(model, seen), **options)
    assert seen and not any(seen)  # frozen base layers quantize their weights in every forward
    after = model.state_dict()
    assert set(after) == set(before)  # QuZO's prepare froze no scale of a frozen layer
    for key, value in after.items():
        if not is_adapter(key):
            assert torch.equal(value, before[key]), key  # base weights: bit for bit
    moved = [k for k in after if is_adapter(k) and not torch.equal(after[k], before[k])]
    assert any(".lora_B." in k for k in moved) and any(".lora_A." in k for k in moved), moved
    assert not any(getattr(m, "bypass_weight_quant", False) for m in model.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_stage_hand_over_loads_a_plain_checkpoint_into_the_lora_model(
    checkpoints, kind, tmp_path
) -> None:
    """A float stage saved without LoRA; the fine-tune's base tensors gain peft's names."""
    plain = hf_model(checkpoints[kind], bits=None)
    with torch.no_grad():  # make the saved weights differ from the checkpoint directory's
        for p in plain.parameters():
            p.add_(torch.randn_like(p))
    location = str(tmp_path / "stage.pt")
    save_model(plain, location)
    saved = plain.state_dict()
    tuned = hf_model(checkpoints[kind], bits=None, lora=LORA)
    skipped = load_model(tuned, location)
    assert skipped and all(is_adapter(k) for k in skipped), skipped
    base = {k: v for k, v in tuned.state_dict().items() if not is_adapter(k)}
    assert any(".base_layer." in k for k in base) and any("base_model.model." in k for k in base)
    assert {canonical_name(k) for k in base} == set(saved)  # every base tensor matched...
    for key, value in base.items():
        assert torch.equal(value, saved[canonical_name(key)]), key  # ...and loaded


# --- outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_classification_is_the_last_position_at_the_label_ids(checkpoints, kind) -> None:
    classify = hf_model(checkpoints[kind], bits=None).eval()
    full = HFCausalLM(classify.lm, pad_token_id=PAD)  # the same LM, every logit
    x, _ = batch()
    with torch.no_grad():
        logits, everything = classify(x), full(x)
    assert logits.shape == (len(x), len(LABELS)) and everything.shape == (len(x), SEQ, VOCAB)
    by_hand = torch.stack([everything[i, -1, LABELS] for i in range(len(x))])
    torch.testing.assert_close(logits, by_hand, rtol=0, atol=1e-5)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_does_not_change_a_rows_logits(checkpoints, kind) -> None:
    model = HFCausalLM(hf_model(checkpoints[kind], bits=4).lm, pad_token_id=PAD).eval()
    row = torch.tensor([[7, 3, PAD, 12, 40]])  # a pad id inside the text is a token
    padded = torch.cat([torch.full((1, 3), PAD), row], dim=1)
    other = torch.randint(1, VOCAB, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        alone, together = model(row), model(torch.cat([padded, other]))
    torch.testing.assert_close(together[0, 3:], alone[0], rtol=0, atol=1e-5)
    mask, positions = model.attention_inputs(padded)
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1]]
    assert positions.tolist() == [[0, 0, 0, 0, 1, 2, 3, 4]]
    with torch.no_grad():  # unmasked, the pad prefix would change the row
        unmasked = HFCausalLM(model.lm)(padded)
    assert (unmasked[0, 3:] - alone[0]).abs().max() > 1e-3


def test_perturbed_losses_vmap_and_the_loop_switch(checkpoints, monkeypatch) -> None:
    model = hf_model(checkpoints["opt"], lora=LORA)
    plan = perturb.perturbation_plan(model, "alpha", 1e-2)
    gen = torch.Generator().manual_seed(0)
    deltas = [item.eps * d for item, d in zip(plan, perturb.sample_directions(plan, 4, gen))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "vmap failed ... loop" fallback warning
        batched = perturb.perturbed_losses(model, F.cross_entropy, batch(), plan, deltas)
    assert type(model) not in perturb._VMAP_UNSUPPORTED and len(set(batched.tolist())) == 4

    def no_vmap(*args, **kwargs):
        raise AssertionError("vmap used although the model says supports_vmap = False")

    monkeypatch.setattr(perturb, "vmap", no_vmap)
    model.supports_vmap = False  # the documented switch (instance or class attribute)
    looped = perturb.perturbed_losses(model, F.cross_entropy, batch(), plan, deltas)
    torch.testing.assert_close(looped, batched, rtol=0, atol=1e-5)


# --- options and errors ---------------------------------------------------------------------


def one_line_error(call, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_missing_and_corrupt_checkpoints_are_one_line_errors(
    checkpoints, tmp_path, monkeypatch
) -> None:
    missing = str(tmp_path / "nowhere")
    one_line_error(
        lambda: hf_model(missing),
        f"model_options.path: no Hugging Face checkpoint at {missing}",
        "expected config.json and model.safetensors saved with save_pretrained",
    )
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["llama"], broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    for call in (lambda: check_checkpoint(broken), lambda: hf_model(str(broken))):
        one_line_error(call, "model_options.path", str(weights), "corrupt or truncated")
    with monkeypatch.context() as patch:  # no safetensors: the header is checked by hand
        patch.setitem(sys.modules, "safetensors", None)
        one_line_error(lambda: check_checkpoint(broken), str(weights), "truncated")
        weights.write_bytes(data)
        assert check_checkpoint(broken)["model_type"] == "llama"
    weights.write_bytes(b"not a safetensors file")
    one_line_error(lambda: check_checkpoint(broken), str(weights), "corrupt")
    weights.unlink()
    one_line_error(lambda: check_checkpoint(broken), "no model.safetensors", str(broken))
    (broken / "config.json").write_text("{not json")
    one_line_error(lambda: check_checkpoint(broken), "config.json is not valid JSON")


def test_weights_that_do_not_fit_the_config_are_an_error(checkpoints, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    short = tmp_path / "short"
    shutil.copytree(checkpoints["llama"], short)
    tensors = load_file(short / "model.safetensors")
    del tensors["model.layers.0.self_attn.q_proj.weight"]
    save_file(tensors, short / "model.safetensors", metadata={"format": "pt"})
    one_line_error(
        lambda: hf_model(str(short)), "do not fit its config", "1 missing", "q_proj.weight"
    )


def test_without_the_llm_extra_the_error_says_how_to_install(checkpoints, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    one_line_error(lambda: hf_model(checkpoints["opt"]), "pip install -e '.[llm]'", "path")
    one_line_error(
        lambda: hf_model(None, config={"model_type": "opt"}), "model_options.config", "llm"
    )


CONFIG = {
    "model_type": "opt",
    "hidden_size": 16,
    "ffn_dim": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "word_embed_proj_dim": 16,
    "max_position_embeddings": 16,
}


def test_config_builds_a_random_model_from_the_global_rng() -> None:
    def build(seed: int, **options) -> HFCausalLM:
        torch.manual_seed(seed)
        return build_model("hf_causal_lm", (SEQ,), 40, config=CONFIG, **options)

    a, b, c = build(0), build(0), build(1)
    assert a.lm.get_input_embeddings().num_embeddings == 40  # language modelling: num_classes
    assert a(torch.zeros(2, SEQ, dtype=torch.int64)).shape == (2, SEQ, 40)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.lm.get_input_embeddings().weight, c.lm.get_input_embeddings().weight)
    hinted = build(0, vocab_size=50, label_token_ids=[3, 4] * 20)  # the tokenizer's vocabulary
    assert hinted.lm.get_input_embeddings().num_embeddings == 50
    bf16 = build(0, dtype="bf16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert bf16(torch.ones(1, SEQ, dtype=torch.int64)).dtype == torch.float32


@pytest.mark.parametrize(
    "options, fragments",
    [
        ({}, ["exactly one of path"]),
        ({"config": {**CONFIG, "hidden_sizes": 3}}, ["model_options.config", "hidden_sizes"]),
        ({"config": {"model_type": "nope"}}, ["unknown model_type 'nope'"]),
        ({"config": CONFIG, "vocab_size": 50, "pad_token_id": 50}, ["pad_token_id: 50"]),
        ({"config": CONFIG, "label_token_ids": [1, 2]}, ["2 ids for 40 classes"]),
        ({"config": CONFIG, "dtype": "fp16"}, ["model_options.dtype", "fp32, bf16"]),
        ({"config": CONFIG, "lora": {"rank": 2}}, ["model_options.lora", "rank"]),
        ({"config": CONFIG, "lora": {"targets": ["nope"]}}, ["model_options.lora", "nope"]),
        ({"config": CONFIG, "lora": [2]}, ["option lora=[2] must be a mapping"]),
        ({"config": CONFIG, "label_token_ids": 3}, ["must be a list"]),
        ({"config": CONFIG, "path": 3}, ["must be a string"]),
        ({"config": CONFIG, "dtype": 16}, ["must be a string"]),
    ],
)
def test_bad_options_are_one_line_errors(options, fragments) -> None:
    one_line_error(lambda: build_model("hf_causal_lm", (SEQ,), 40, **options), *fragments)


def test_a_trial_fine_tunes_a_config_model_with_lora() -> None:
    reports: list[dict] = []
    config = {
        "estimator": "mezo",
        "model": "hf_causal_lm",
        "model_options": {"config": CONFIG, "lora": {"r": 2, "targets": ["q_proj"]}},
        "dataset": "text",
        "dataset_options": {"seq_len": 16, "n_train": 32, "n_test": 8, "max_bytes": 20_000},
        "bits": 4,
        "lr": 1e-3,
        "batch_size": 8,
        "steps": 2,
        "num_evals": 1,
    }
    run_trial(config, reports.append)
    final = reports[-1]
    assert final["done"] and final["step"] == 2 and final["metric_name"] == "perplexity"
    assert math.isfinite(final["train_loss"]) and final["flops"] > 0
    bits = json.loads(reports[0]["layer_bits"])  # adapters and head float, the rest 4-bit
    assert bits["*"] == "int4" and bits["lm.base_model.model.lm_head"] == "float"
    assert bits["lm.base_model.model.model.decoder.layers.0.self_attn.q_proj.lora_A.default"] == (
        "float"
    )
