"""The LLaMA-style decoder and the byte-level text loader: shapes, causality, rotary
embeddings, paper-scale parameter counts, W2A2 quantization, vmap, and end-to-end trials."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from trainers import run_trial
from trainers.data import DATASETS, DatasetError
from trainers.data.text import load_text, read_corpus, split_windows
from trainers.estimators import ESTIMATORS
from trainers.estimators.perturb import (
    _VMAP_UNSUPPORTED,
    _loop_losses,
    perturbation_plan,
    perturbed_losses,
    sample_directions,
)
from trainers.models import MODELS
from trainers.models.llama import (
    SIZES,
    apply_rotary,
    build_llama,
    ffn_dim,
    llama_num_params,
    rotary_tables,
)
from trainers.quant import QuantSpec, quantize_model
from trainers.quant.layers import quantized_layers
from trainers.tasks import token_loss

VOCAB, SEQ = 256, 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from intra-op threads, and on a busy 2-core machine the
    spinning worker threads made the 100-step training test ~10x slower (2 s -> 20+ s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(seq_len: int = SEQ, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_llama((seq_len,), VOCAB, **options)


def tokens(batch: int = 3, seq_len: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


# --- model -------------------------------------------------------------------------------


def test_shapes_overrides_and_bad_options() -> None:
    model = tiny()
    assert model(tokens()).shape == (3, SEQ, VOCAB)
    assert model(tokens(seq_len=5)).shape == (3, 5, VOCAB)  # shorter contexts are fine
    with pytest.raises(ValueError, match="exceeds max_seq_len=16"):
        model(tokens(seq_len=SEQ + 1))
    custom = tiny(dim=32, depth=3, heads=2)
    assert len(custom.blocks) == 3 and custom.embed.embedding_dim == 32
    assert custom.blocks[0].attn.heads == 2 and custom(tokens()).shape == (3, SEQ, VOCAB)
    with pytest.raises(ValueError, match="valid sizes: tiny, small, 95m"):
        build_llama((SEQ,), VOCAB, size="huge")
    with pytest.raises(ValueError, match="divisible"):
        build_llama((SEQ,), VOCAB, dim=60, heads=8)
    with pytest.raises(ValueError, match="even head_dim"):
        build_llama((SEQ,), VOCAB, dim=36, heads=4)
    with pytest.raises(ValueError, match=r"\(seq_len,\)"):
        build_llama((1, 8, 8), VOCAB)


def test_future_tokens_do_not_change_earlier_logits() -> None:
    model = tiny().eval()
    x = tokens(batch=2)
    changed = x.clone()
    changed[:, 9] = (changed[:, 9] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=0)
    assert (before[:, 9:] - after[:, 9:]).abs().amax(-1).min() > 0  # every later position sees it


def test_rotary_preserves_norms_and_encodes_relative_position() -> None:
    head_dim, length = 16, 40
    cos, sin = rotary_tables(length, head_dim)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, head_dim, generator=gen)
    rq = apply_rotary(q.expand(length, head_dim), cos, sin)  # q placed at every position
    rk = apply_rotary(k.expand(length, head_dim), cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(length))
    scores = rq @ rk.T  # scores[t, s] = <q at t, k at s>
    for offset in (-7, 0, 3, 11):
        diagonal = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores[5, 5], scores[5, 9])  # yet it does depend on the offset


@pytest.mark.parametrize(
    "size,exact", [("95m", 96_844_160), ("200m", 198_665_600), ("300m", 296_784_896)]
)
def test_paper_scale_parameter_counts_on_meta_device(size: str, exact: int) -> None:
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = build_llama((1024,), 32_000, size=size)
    assert all(p.is_meta for p in model.parameters())
    count = sum(p.numel() for p in model.parameters())
    dim, depth, heads = SIZES[size]
    assert count == exact == llama_num_params(32_000, dim, depth)
    assert abs(count - int(size[:-1]) * 1e6) / (int(size[:-1]) * 1e6) < 0.035
    assert dim // heads == 64 and ffn_dim(dim) % 256 == 0


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_small_sizes_match_the_closed_form(size: str) -> None:
    model = build_llama((SEQ,), VOCAB, size=size)
    dim, depth, _ = SIZES[size]
    assert sum(p.numel() for p in model.parameters()) == llama_num_params(VOCAB, dim, depth)
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # rotary not saved


class _LinearInputs(TorchFunctionMode):
    """Records the distinct values of every input that reaches ``F.linear``."""

    def __init__(self) -> None:
        super().__init__()
        self.levels: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            self.levels.append(int(torch.unique(args[0]).numel()))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("first_last", ["same", "float"])
def test_w2a2_quantizes_every_linear_and_its_inputs(first_last: str) -> None:
    model = tiny()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear == 7 * len(model.blocks) + 1
    quantize_model(model, QuantSpec(kind="int", bits=2, act_bits=2, first_last=first_last))
    names = [name for name, _ in quantized_layers(model)]
    if first_last == "float":  # the 'first' Linear is block 0's query projection, not the embedding
        assert len(names) == n_linear - 2 and {"blocks.0.attn.q", "head"}.isdisjoint(names)
        return
    assert len(names) == n_linear and names[-1] == "head"
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert isinstance(model.embed, nn.Embedding)  # a lookup, never quantized
    raw_levels: dict[str, int] = {}
    for name, layer in quantized_layers(model):
        assert layer.act_quantizer is not None and layer.act_quantizer.bits == 2
        layer.register_forward_pre_hook(
            lambda _m, args, name=name: raw_levels.__setitem__(
                name, int(torch.unique(args[0]).numel())
            )
        )
    recorder = _LinearInputs()
    with torch.no_grad(), recorder:
        model(tokens())
    assert set(raw_levels) == set(names)  # every quantized layer ran
    assert min(raw_levels.values()) > 4  # what the layers receive is full precision...
    assert (
        len(recorder.levels) == len(names) and max(recorder.levels) <= 4
    )  # ...what they multiply is not


@pytest.mark.parametrize(
    "spec,atol",
    [
        (QuantSpec(kind="none"), 1e-5),
        (QuantSpec(kind="int", bits=2), 1e-5),
        (QuantSpec(kind="int", bits=8, act_bits=8), 1e-5),
        # 2-bit activations are piecewise constant: last-ulp differences between a batched and a
        # single matmul flip a few roundings, so the two evaluations agree only to ~1e-2.
        (QuantSpec(kind="int", bits=2, act_bits=2), 2e-2),
    ],
    ids=["float", "W2", "W8A8", "W2A2"],
)
def test_vmap_over_functional_call_matches_a_loop(spec: QuantSpec, atol: float) -> None:
    model = quantize_model(tiny(), spec)
    batch = (tokens(batch=4), tokens(batch=4, seed=1))
    plan = perturbation_plan(model, "alpha" if spec.is_quantized else "fixed", 1e-3)
    directions = sample_directions(plan, 3, torch.Generator().manual_seed(0))
    deltas = [torch.cat([item.eps * d, -item.eps * d]) for item, d in zip(plan, directions)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batched = perturbed_losses(model, token_loss, batch, plan, deltas)
    assert not [w for w in caught if "evaluating directions in a loop" in str(w.message)]
    assert type(model) not in _VMAP_UNSUPPORTED
    names = [item.name for item in plan]
    base = {item.name: item.param.detach() for item in plan}
    with torch.no_grad():
        looped = _loop_losses(model, token_loss, batch, names, base, deltas)
    assert batched.shape == (6,) and len(set(batched.tolist())) > 1
    torch.testing.assert_close(batched, looped, rtol=0, atol=atol)


# --- end to end --------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the model and dataset for run_trial (the registries are edited elsewhere)."""
    monkeypatch.setitem(MODELS, "llama", build_llama)
    monkeypatch.setitem(DATASETS, "text", load_text)


LR = {"ste": 3e-3, "fogzo": 3e-3, "nspsa": 1e-4, "mezo": 1e-4, "quzo": 1e-4, "qfo": 1e-3}
SMALL_TEXT = {"seq_len": 32, "n_train": 64, "n_test": 8, "max_bytes": 50_000}


@pytest.mark.parametrize("bits", [2, 8])
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_trains_the_tiny_model(registered, estimator: str, bits: int) -> None:
    reports: list[dict] = []
    config = {
        "estimator": estimator,
        "model": "llama",
        "model_options": {"size": "tiny"},
        "dataset": "text",
        "dataset_options": SMALL_TEXT,
        "bits": bits,
        "quant_options": {"act_bits": bits},
        "lr": LR[estimator],
        "batch_size": 8,
        "steps": 3,
        "num_evals": 1,
    }
    if estimator in ("ste", "nspsa", "fogzo"):  # in-place estimators use no optimizer
        config["optimizer"] = "adam"
    run_trial(config, reports.append)
    final = reports[-1]
    assert final["done"] and final["step"] == 3 and final["metric_name"] == "perplexity"
    assert math.isfinite(final["train_loss"]) and 1.0 < final["eval_metric"] < 10 * VOCAB
    assert final["num_params"] >= llama_num_params(VOCAB, *SIZES["tiny"][:2]) and final["flops"] > 0


def test_ste_adam_lowers_float_perplexity(registered) -> None:
    reports: list[dict] = []
    config = {
        "estimator": "ste",
        "quantizer": "none",
        "model": "llama",
        "dataset": "text",
        "dataset_options": {"n_train": 1024, "n_test": 64},
        "optimizer": "adam",
        "lr": 3e-3,
        "batch_size": 32,
        "steps": 100,
        "num_evals": 2,
    }
    run_trial(config, reports.append)
    ppl = [r["eval_metric"] for r in reports]
    assert 200 < ppl[0] < 300  # ~uniform over 256 bytes at init
    assert ppl[-1] < ppl[1] < ppl[0] and ppl[-1] < 0.25 * ppl[0]


# --- text loader -------------------------------------------------------------------------


def _write_corpus(root: Path) -> bytes:
    """A few files of seeded random text (multi-byte characters included); their bytes in
    the loader's order (sorted relative paths)."""
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghij klmnop\n") + ["é", "λ", "→"]
    files = {"b.md": 3000, "a.txt": 5000, "sub/c.py": 4000}
    for rel, n in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(rng.choice(alphabet, n)), encoding="utf-8")
    (root / "skip.bin").write_bytes(b"\x00" * 999)  # not a text suffix
    return b"".join((root / rel).read_bytes() for rel in sorted(files))


def test_text_windows_round_trip_and_stay_in_their_region(tmp_path: Path) -> None:
    stream = _write_corpus(tmp_path / "corpus")
    data = load_text(data_dir=str(tmp_path), path="corpus", seq_len=20, n_train=50, n_test=30)
    assert read_corpus("corpus", data_dir=tmp_path)[0] == stream
    assert (
        data.task == "language_modeling" and data.num_classes == 256 and data.input_shape == (20,)
    )
    assert data.train_x.shape == (50, 20) and data.test_x.shape == (30, 20)
    train_starts, test_starts, test_start = split_windows(stream, 20, 50, 30)
    assert test_start == len(stream) - len(stream) // 10
    assert train_starts.max() + 21 <= test_start <= test_starts.min()  # no window crosses the split
    assert np.array_equal(np.diff(test_starts), np.full(29, 21))  # contiguous, non-overlapping
    for x, y, start in [
        *zip(data.train_x, data.train_y, train_starts),
        *zip(data.test_x, data.test_y, test_starts),
    ]:
        window = bytes(x.tolist()) + bytes(y[-1:].tolist())
        assert window == stream[start : start + 21] and bytes(y.tolist()) == window[1:]
    again = load_text(data_dir=str(tmp_path), path="corpus", seq_len=20, n_train=50, n_test=30)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    single = load_text(
        path=str(tmp_path / "corpus" / "a.txt"), seq_len=8, n_train=4, n_test=4, max_bytes=400
    )
    assert bytes(single.test_x[0].tolist()) in (tmp_path / "corpus" / "a.txt").read_bytes()[:400]


def test_default_corpus_is_the_stdlib_sources() -> None:
    stream, source = read_corpus(max_bytes=10_000)
    assert len(stream) == 10_000 and "stdlib" in source
    data = load_text(seq_len=16, n_train=8, n_test=4, max_bytes=10_000)
    assert bytes(data.test_x[0].tolist()) in stream[9_000:]


def test_text_errors_are_one_line_and_say_why(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_text(data_dir=str(tmp_path), path="nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.bin").write_bytes(b"abc")
    with pytest.raises(DatasetError, match="empty corpus: no text in .*empty"):
        load_text(path=str(tmp_path / "empty"))
    (tmp_path / "short.txt").write_text("x" * 1000)
    with pytest.raises(DatasetError, match="found 1000 bytes, need at least 2560") as err:
        load_text(path=str(tmp_path / "short.txt"), seq_len=63, n_test=4)
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="seq_len=0"):
        load_text(seq_len=0)


def test_attention_flops_are_counted_on_cpu():
    """The fused CPU attention kernel has no built-in FLOP formula; metering registers one."""
    from torch import nn

    from trainers.metering import measure_cost
    from trainers.tasks import token_loss

    torch.manual_seed(0)
    model = build_llama((64,), 256, size="tiny")
    x = torch.randint(0, 256, (4, 64))
    linear = sum(
        2 * 4 * 64 * m.in_features * m.out_features
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )
    attention = (
        2 * 2 * 2 * 4 * 64 * 64 * 64
    )  # depth x (QK^T, AV) x 2 FLOPs per MAC x B x T x T x dim
    assert measure_cost(model, token_loss, (x, x)).forward_flops == linear + attention
