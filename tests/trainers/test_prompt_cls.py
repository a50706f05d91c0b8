"""Tests for the Hugging Face datasets: ``prompt_cls`` (MeZO-style prompt classification),
``lm`` (token windows of a local corpus) and ``trainers.hf.tokenizer``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.data import DatasetError, DataSplits, dataset_options, load_dataset

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[2]
SST2 = ROOT / "examples" / "data" / "sst2_tiny.jsonl"
WORDS = ["terrible", "great"]
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _prompt_cls(path: Path, **options) -> DataSplits:
    options.setdefault("label_words", WORDS)
    return load_dataset("prompt_cls", data_dir=str(path.parent), path=path.name, **options)


# ------------------------------------------------------------------ the loss, by hand

THREE = [
    {"text": "A fine film.", "label": 1},
    {"text": "Dull", "label": 0},
    {"text": "The plot was a total mess.", "label": 0},
]
TEMPLATE = "Review: {text} Sentiment:"
LABELS = ["bad", "good"]
#: The three prompts split into words by hand (Whitespace: word runs, punctuation runs).
PROMPT_WORDS = [
    ["Review", ":", "A", "fine", "film", ".", "Sentiment", ":"],
    ["Review", ":", "Dull", "Sentiment", ":"],
    ["Review", ":", "The", "plot", "was", "a", "total", "mess", ".", "Sentiment", ":"],
]


class DecayedBagOfTokens(nn.Module):
    """Fixed logits: at position t, sum over s <= t of decay**(t - s) * W[x_s] (W[pad] = 0).

    Order matters (the decay) and so does where the padding is: left padding adds nothing
    before the prompt, while a right-padded row would be read at a pad position."""

    def __init__(self, vocab: int, pad: int, decay: float = 0.5) -> None:
        super().__init__()
        weight = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0))
        weight[pad] = 0.0
        self.weight, self.decay = weight.double(), decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.weight[x]  # [B, T, V]
        out, running = torch.empty_like(rows), torch.zeros_like(rows[:, 0])
        for t in range(x.shape[1]):
            running = self.decay * running + rows[:, t]
            out[:, t] = running
        return out


def test_loss_by_hand_on_three_examples(tmp_path: Path) -> None:
    d = _prompt_cls(
        _jsonl(tmp_path / "three.jsonl", THREE),
        template=TEMPLATE,
        label_words=LABELS,
        k_shot=0,
        n_test=1,
    )
    # The "train" vocabulary, by hand: specials, then the sorted words of every full prompt
    # with its answer.
    words = sorted({w for ws in PROMPT_WORDS for w in ws} | {"bad", "good"})
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    assert d.model_hints == {
        "vocab_size": len(vocab),
        "pad_token_id": vocab["[PAD]"],
        "label_token_ids": [vocab["bad"], vocab["good"]],
    }
    assert d.task == "classification" and d.num_classes == 2
    assert d.train_x.dtype == torch.int64 and d.input_shape == (1 + len(PROMPT_WORDS[2]),)

    x = torch.cat([d.train_x, d.test_x])
    y = torch.cat([d.train_y, d.test_y])
    by_label = {tuple(y.tolist()).count(c) for c in (0, 1)}
    assert by_label == {1, 2}
    # Map each encoded row back to its source row (the test row is one fixed sample).
    width = d.input_shape[0]
    expected = {}
    for row, ws in zip(THREE, PROMPT_WORDS):
        ids = [vocab["[BOS]"]] + [vocab[w] for w in ws]
        expected[tuple([vocab["[PAD]"]] * (width - len(ids)) + ids)] = (ws, row["label"])
    assert {tuple(r) for r in x.tolist()} == set(expected)  # left-padded template prompts

    model = DecayedBagOfTokens(len(vocab), vocab["[PAD]"])
    logits = model(x)
    loss = F.cross_entropy(logits[:, -1, d.model_hints["label_token_ids"]], y)

    manual = 0.0
    for r, label in zip(x.tolist(), y.tolist()):
        ws, source_label = expected[tuple(r)]
        assert label == source_label
        tokens = ["[BOS]"] + ws
        scores = [
            sum(
                0.5 ** (len(tokens) - 1 - j) * float(model.weight[vocab[w], vocab[answer]])
                for j, w in enumerate(tokens)
            )
            for answer in LABELS
        ]
        manual += math.log(sum(math.exp(s) for s in scores)) - scores[label]
    assert float(loss) == pytest.approx(manual / 3, rel=1e-9)


def test_long_prompts_keep_their_end(tmp_path: Path) -> None:
    d = _prompt_cls(
        _jsonl(tmp_path / "three.jsonl", THREE),
        template=TEMPLATE,
        label_words=LABELS,
        k_shot=0,
        n_test=1,
        max_length=4,
    )
    x = torch.cat([d.train_x, d.test_x])
    assert d.input_shape == (4,)
    # [BOS] kept, then the last three tokens: "." "Sentiment" ":" or "Dull" "Sentiment" ":"
    assert len({tuple(r[2:]) for r in x.tolist()}) == 1  # every row ends "Sentiment :"
    assert len({r[0] for r in x.tolist()}) == 1  # the same BOS everywhere
    assert len({tuple(r) for r in x.tolist()}) == 2  # "Dull" vs "." before the end


# ------------------------------------------------------------------ label words / errors


def test_multi_token_label_word_is_rejected_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(SST2, label_words=["terrible", "very great"], n_test=100)
    msg = _one_line(exc)
    assert "'very great'" in msg and "2 tokens" in msg and "'very'" in msg


def _bpe_folder(tmp_path: Path) -> Path:
    """A GPT-2-style byte-level BPE tokenizer without a pad token, saved like a checkpoint's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["It was great.", "It was terrible."] * 50  # " wonderful": bytes
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    folder = tmp_path / "ckpt"
    tok.save_pretrained(str(folder))
    return folder


def test_checkpoint_tokenizer_pads_with_eos_and_finds_the_answer_tokens(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = _bpe_folder(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.pad_token is None  # the fallback below is needed
    d = _prompt_cls(SST2, tokenizer=str(folder), n_test=100, k_shot=4)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert d.model_hints["pad_token_id"] == eos
    assert d.model_hints["vocab_size"] == len(tok)
    # The answer as the model sees it after the prompt: with its leading space (Ġ).
    assert d.model_hints["label_token_ids"] == tok.convert_tokens_to_ids(["Ġterrible", "Ġgreat"])
    it_was = tok("Very dull. It was", add_special_tokens=False)["input_ids"][-2:]
    assert d.train_x[:, -2:].unique(dim=0).tolist() == [it_was]  # every prompt ends there

    with pytest.raises(DatasetError) as exc:
        _prompt_cls(SST2, tokenizer=str(folder), label_words=["terrible", "wonderful"], n_test=9)
    msg = _one_line(exc)
    assert "'wonderful'" in msg and "tokens" in msg and "exactly one token" in msg


def test_missing_tokenizer_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(SST2, tokenizer=str(tmp_path / "nowhere"), n_test=100)
    assert str(tmp_path / "nowhere") in _one_line(exc)
    (tmp_path / "weights_only").mkdir()  # a checkpoint saved without its tokenizer
    (tmp_path / "weights_only" / "config.json").write_text("{}")
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(SST2, tokenizer=str(tmp_path / "weights_only"), n_test=100)
    assert "no tokenizer files" in _one_line(exc) and "weights_only" in str(exc.value)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(SST2, tokenizer=str(tmp_path / "broken"), n_test=100)
    assert str(tmp_path / "broken") in _one_line(exc)


@pytest.mark.parametrize(
    ("rows", "options", "needle"),
    [
        ([{"text": "a", "label": 0}, {"text": "b", "label": 2}], {}, "label 2"),
        (
            [{"text": "a", "label": "neg"}, {"text": "b", "label": "meh"}],
            {"label_words": {"neg": "terrible", "pos": "great"}},
            "'meh'",
        ),
        ([{"text": "a", "label": 0}, {"text": "b"}], {}, "'label'"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": 1}], {"text_field": "s"}, "'s'"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": 1.5}], {}, "1.5"),
        ([{"text": "a", "label": 0}, {"text": 3, "label": 1}], {}, "expected text"),
        ([], {}, "no rows"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": 1}], {"n_test": 2}, "n_test=2"),
        ([{"text": "a", "label": 0}, {"text": "b", "label": 1}], {"k_shot": 2}, "k_shot=2"),
        ([{"text": "a", "label": 0}], {"template": "{txt} It was"}, "template"),
        ([{"text": "a", "label": 0}], {"label_words": None}, "label_words"),
    ],
)
def test_bad_rows_and_options_are_one_line(
    tmp_path: Path, rows: list[dict], options: dict, needle: str
) -> None:
    options.setdefault("n_test", 1)
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(_jsonl(tmp_path / "rows.jsonl", rows), **options)
    assert needle in _one_line(exc)


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("text,label\na,0\n")
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(csv)
    assert "'.csv'" in _one_line(exc) and ".jsonl" in str(exc.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 0}\nnot json\n')
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(bad)
    assert "line 2" in _one_line(exc)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(fake)
    assert "parquet" in _one_line(exc)
    with pytest.raises(DatasetError) as exc:
        _prompt_cls(tmp_path / "absent.jsonl")
    assert "absent.jsonl" in _one_line(exc)


def test_parquet_with_string_labels(tmp_path: Path) -> None:
    import pandas as pd

    rows = [json.loads(line) for line in SST2.read_text().splitlines()]
    frame = pd.DataFrame(
        {"review": [r["text"] for r in rows], "y": [["neg", "pos"][r["label"]] for r in rows]}
    )
    frame.to_parquet(tmp_path / "sst2.parquet")
    as_strings = _prompt_cls(
        tmp_path / "sst2.parquet",
        text_field="review",
        label_field="y",
        label_words={"neg": "terrible", "pos": " great"},  # a leading space is the same word
        n_test=100,
        seed=5,
    )
    as_ints = _prompt_cls(SST2, n_test=100, seed=5)
    # Int labels with a mapping, keys as JSON leaves them ("0", "1"): the same as the list.
    keyed = _prompt_cls(SST2, n_test=100, seed=5, label_words={"1": "great", "0": "terrible"})
    assert torch.equal(keyed.train_x, as_ints.train_x) and keyed.model_hints == as_ints.model_hints
    for a, b in [(as_strings.train_x, as_ints.train_x), (as_strings.test_y, as_ints.test_y)]:
        assert torch.equal(a, b)
    assert as_strings.model_hints == as_ints.model_hints


# ------------------------------------------------------------------ few-shot sampling


def test_k_shot_per_class_varies_with_the_seed_and_the_test_set_does_not() -> None:
    runs = {seed: _prompt_cls(SST2, k_shot=16, n_test=200, seed=seed) for seed in (0, 1, 2)}
    for d in runs.values():
        assert d.train_y.bincount().tolist() == [16, 16]
        assert d.num_test == 200 and d.input_shape == runs[0].input_shape
        train_rows = {tuple(r) for r in d.train_x.tolist()}
        assert len(train_rows) == 32 and not train_rows & {tuple(r) for r in d.test_x.tolist()}
        assert torch.equal(d.test_x, runs[0].test_x) and torch.equal(d.test_y, runs[0].test_y)
    assert not torch.equal(runs[0].train_x, runs[1].train_x)
    assert not torch.equal(runs[1].train_x, runs[2].train_x)
    again = _prompt_cls(SST2, k_shot=16, n_test=200, seed=1)
    assert torch.equal(again.train_x, runs[1].train_x)

    everything = [_prompt_cls(SST2, k_shot=0, n_test=150, seed=s) for s in (0, 1)]
    assert everything[0].num_train == 250 and torch.equal(
        everything[0].train_x, everything[1].train_x
    )


def test_load_dataset_passes_the_trial_seed_but_users_cannot_set_it() -> None:
    assert "seed" not in dataset_options("prompt_cls") and "data_dir" not in dataset_options("lm")
    assert "k_shot" in dataset_options("prompt_cls")
    a = load_dataset("prompt_cls", path=str(SST2), label_words=WORDS, n_test=100, seed=0)
    b = load_dataset("prompt_cls", path=str(SST2), label_words=WORDS, n_test=100, seed=1)
    assert not torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)


# ------------------------------------------------------------------ lm and the shared vocab


def test_train_tokenizer_vocab_is_the_same_for_prompt_cls_and_lm(monkeypatch) -> None:
    import trainers.hf.tokenizer as hf_tok

    vocabs, build = [], hf_tok.train_word_level

    def spy(texts):
        tok = build(texts)
        vocabs.append(tok.get_vocab())
        return tok

    monkeypatch.setattr(hf_tok, "train_word_level", spy)
    cls = _prompt_cls(SST2, n_test=100, template="Review: {text} It was")
    lm = load_dataset(
        "lm", path=str(SST2), template="Review: {text} It was", label_words=WORDS, seq_len=16
    )
    plain = load_dataset("lm", path=str(SST2), seq_len=16)  # no template: another vocabulary
    assert len(vocabs) == 3 and vocabs[0] == vocabs[1] != vocabs[2]
    assert cls.model_hints["vocab_size"] == lm.model_hints["vocab_size"] == lm.num_classes
    assert "pad_token_id" not in lm.model_hints  # lm windows are never padded
    assert [vocabs[0][w] for w in WORDS] == cls.model_hints["label_token_ids"]
    assert {"Review", "It", "was", "terrible", "great"} <= set(vocabs[0])
    assert "Review" not in vocabs[2] and plain.num_classes < lm.num_classes


def test_lm_windows_are_consecutive_tokens_with_y_shifted(tmp_path: Path) -> None:
    rows = [{"text": " ".join(f"w{10 * r + i:03d}" for i in range(10))} for r in range(20)]
    file = _jsonl(tmp_path / "corpus.jsonl", rows)
    d = load_dataset("lm", data_dir=str(tmp_path), path=file.name, seq_len=7, n_test=5, n_train=100)
    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(f"w{k:03d}" for k in range(200)))}
    stream = []
    for row in rows:  # each document: [BOS] words [EOS]
        stream += [vocab["[BOS]"], *(vocab[w] for w in row["text"].split()), vocab["[EOS]"]]
    assert len(stream) == 240  # 30 windows of 8
    tiles = [tuple(stream[k : k + 8]) for k in range(0, 240, 8)]
    assert d.task == "language_modeling" and d.input_shape == (7,) and d.num_classes == 204
    assert d.model_hints == {"vocab_size": 204}  # never padded: no pad id for the model
    assert d.num_test == 5 and d.num_train == 25  # n_train capped by the corpus
    seen = []
    for x, y in [(d.train_x, d.train_y), (d.test_x, d.test_y)]:
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for xr, yr in zip(x.tolist(), y.tolist()):
            window = tuple(xr + yr[-1:])
            assert window in tiles
            seen.append(window)
    assert sorted(seen) == sorted(tiles)  # every window once, train and test disjoint
    same = load_dataset("lm", path=str(file), seq_len=7, n_test=5, n_train=100)
    assert torch.equal(same.test_x, d.test_x) and torch.equal(same.train_x, d.train_x)


def test_lm_reads_a_text_file_and_rejects_what_it_cannot_use(tmp_path: Path) -> None:
    txt = tmp_path / "book.txt"
    txt.write_text(" ".join(f"w{i}" for i in range(99)))  # [BOS] + 99 + [EOS] = 101 tokens
    d = load_dataset("lm", path=str(txt), seq_len=9, n_test=2)
    assert d.num_test == 2 and d.num_train == 8
    cases = [
        ({"n_test": 10}, "too short"),
        ({"template": "{text} It was"}, "label_words"),
        ({"template": "{text} It was", "label_words": WORDS}, ".jsonl"),
    ]
    for options, needle in cases:
        with pytest.raises(DatasetError) as exc:
            load_dataset("lm", path=str(txt), seq_len=9, **{"n_test": 2, **options})
        assert needle in _one_line(exc)


# ------------------------------------------------------------------ DataSplits / imports / file


def test_data_splits_take_token_ids_for_classification_and_nothing_else() -> None:
    ids, y = torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)
    d = DataSplits(ids, y, ids, y, num_classes=2, input_shape=(3,), name="t")
    assert d.model_hints == {}
    with pytest.raises(TypeError, match="float32 or int64"):
        DataSplits(ids.int(), y, ids.int(), y, num_classes=2, input_shape=(3,), name="t")
    with pytest.raises(TypeError, match="int64 x"):
        DataSplits(
            ids.float(), y, ids.float(), y, 2, (3,), "t", task="language_modeling"
        )  # fmt: skip


def test_importing_the_data_package_needs_no_transformers() -> None:
    code = (
        "import sys, trainers.data, trainers.data.prompt_cls, trainers.data.lm_corpus, "
        "trainers.hf, trainers.hf.tokenizer; "
        "heavy = {m.split('.')[0] for m in sys.modules} & {'transformers', 'tokenizers'}; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_without_the_llm_extra_loading_is_one_line_naming_it() -> None:
    code = (
        "import sys; sys.modules['transformers'] = None; "
        "from trainers.data import DatasetError, load_dataset\n"
        "try:\n"
        f"    load_dataset('prompt_cls', path={str(SST2)!r}, label_words=['a', 'b'], n_test=9)\n"
        "except DatasetError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.count("\n") == 1 and "llm extra" in done.stdout, done.stdout


def test_the_shipped_task_file_is_what_its_script_writes(tmp_path: Path) -> None:
    out = tmp_path / "sst2_tiny.jsonl"
    script = ROOT / "examples" / "data" / "make_sst2_tiny.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    assert out.read_bytes() == SST2.read_bytes()
    assert SST2.stat().st_size < 40_000
    rows = [json.loads(line) for line in SST2.read_text().splitlines()]
    assert len(rows) == 400 and sum(r["label"] for r in rows) == 200
    assert not any(w in r["text"].lower() for r in rows for w in WORDS)
