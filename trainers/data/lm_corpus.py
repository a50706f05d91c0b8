"""Next-token language modelling on a local corpus with a Hugging Face tokenizer.

The corpus is a .txt file (one document) or the text column of a JSONL / Parquet file (one
document per row). With ``template`` and ``label_words`` (meaning as in ``prompt_cls``)
each row is rendered as the full prompt with its answer, so a float pre-training stage
learns exactly the prompt format and, with the "train" tokenizer, gets the very vocabulary
``prompt_cls`` builds from the same file.

Documents are encoded with the tokenizer's special tokens and closed by its EOS, then
concatenated into one token stream, which is cut into consecutive non-overlapping windows
of ``seq_len + 1`` tokens (x = window[:-1], y = window[1:]). The windows are shuffled once
with ``SPLIT_SEED``: the first ``n_test`` are the test set, the next (at most) ``n_train``
the train set, so no token of a test window is ever trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import SPLIT_SEED, DatasetError, DataSplits, positive_int
from .prompt_cls import (
    ROW_SUFFIXES,
    answered,
    check_template,
    label_classes,
    read_columns,
    resolve_file,
    texts_of,
)

NAME = "lm"
TEXT_SUFFIXES = (".txt", ".text", ".md")


def documents(
    file: Any,
    *,
    text_field: str,
    template: str | None,
    label_words: object,
    label_field: str,
) -> list[str]:
    """The corpus as documents: the whole .txt file, or one per row (rendered with its
    answer when a template is given)."""
    if (template is None) != (label_words is None):
        raise DatasetError(
            f"{NAME}: give template= and label_words= together (rows rendered as prompt + "
            f"answer) or neither (the text column as it is)"
        )
    if file.suffix.lower() in TEXT_SUFFIXES:
        if template is not None:
            raise DatasetError(
                f"{NAME}: template= needs rows with a label: a .jsonl or .parquet file, not {file}"
            )
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{NAME}: cannot read {file} as UTF-8 text ({exc})") from exc
        if not text.strip():
            raise DatasetError(f"{NAME}: {file} is empty")
        return [text]
    if file.suffix.lower() not in ROW_SUFFIXES:
        raise DatasetError(
            f"{NAME}: {file} has suffix {file.suffix or '(none)'!r}; expected "
            f"{' / '.join((*TEXT_SUFFIXES, *ROW_SUFFIXES))}"
        )
    if template is None:
        columns = read_columns(NAME, file, [text_field])
        return texts_of(NAME, file, text_field, columns[text_field])
    template = check_template(NAME, template)
    columns = read_columns(NAME, file, [text_field, label_field])
    texts = texts_of(NAME, file, text_field, columns[text_field])
    y, words = label_classes(NAME, file, columns[label_field], label_words)
    return answered(template, texts, y, words)


def token_stream(tok: Any, docs: list[str]) -> np.ndarray:
    """Each document with the tokenizer's special tokens, closed by EOS, back to back."""
    eos = tok.eos_token_id
    out: list[int] = []
    for ids in tok(docs, add_special_tokens=True)["input_ids"]:
        out += ids
        if eos is not None and (not ids or ids[-1] != eos):
            out.append(eos)
    return np.asarray(out, dtype=np.int64)


def load_lm(
    *,
    data_dir: str | None = None,
    path: str | None = None,
    tokenizer: str = "train",
    seq_len: int = 64,
    n_train: int = 2048,
    n_test: int = 128,
    text_field: str = "text",
    template: str | None = None,
    label_words: Sequence[str] | Mapping[Any, str] | None = None,
    label_field: str = "label",
    answers: bool = True,
) -> DataSplits:
    """Token windows of a local corpus: x = window[:-1], y = window[1:], int64 token ids.

    Args:
        data_dir: resolves a relative ``path`` (and a relative tokenizer folder).
        path: a .txt file, or a .jsonl / .parquet file with a text column.
        tokenizer: ``"train"`` (word level, vocabulary from the documents) or a
            ``save_pretrained`` folder (the checkpoint's).
        seq_len: context length T (the model's ``input_shape`` is ``(T,)``).
        n_train: at most this many train windows (fewer when the corpus is short).
        n_test: test windows; the corpus must hold at least ``n_test + 1`` windows.
        text_field: the text column of a JSONL / Parquet file.
        template, label_words, label_field: render every row as ``template.format(text=..)
            + " " + label word`` (as ``prompt_cls`` does); both or neither.
        answers: with ``false`` the rows are rendered as prompts without their label word:
            a model pre-trained on them learns the task's language, not its answers (the
            test rows of ``prompt_cls`` are in the file too). A ``"train"`` tokenizer still
            sees the answers, so its vocabulary equals ``prompt_cls``'s.
    """
    seq_len = positive_int(NAME, "seq_len", seq_len)
    n_train = positive_int(NAME, "n_train", n_train)
    n_test = positive_int(NAME, "n_test", n_test)
    if path is None:
        raise DatasetError(f"{NAME}: option path= is required (a .txt, .jsonl or .parquet file)")
    file = resolve_file(NAME, path, data_dir)
    docs = documents(
        file,
        text_field=text_field,
        template=template,
        label_words=label_words,
        label_field=label_field,
    )

    from ..hf.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer, docs, data_dir=data_dir)
    if not answers and template is not None:
        raw = documents(
            file, text_field=text_field, template=None, label_words=None, label_field=label_field
        )
        docs = [check_template(NAME, template).format(text=t) for t in raw]
    stream = token_stream(tok, docs)
    span = seq_len + 1
    count = len(stream) // span
    if count < n_test + 1:
        raise DatasetError(
            f"{NAME}: corpus too short: {len(stream)} tokens make {count} windows of "
            f"seq_len+1={span}, need n_test={n_test} plus at least one to train on; "
            f"lower n_test or seq_len, or add text"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test : n_test + n_train])
    windows = torch.from_numpy(stream[: count * span].reshape(count, span))
    train_w, test_w = windows[torch.from_numpy(train)], windows[torch.from_numpy(test)]
    return DataSplits(
        train_x=train_w[:, :-1].contiguous(),
        train_y=train_w[:, 1:].contiguous(),
        test_x=test_w[:, :-1].contiguous(),
        test_y=test_w[:, 1:].contiguous(),
        num_classes=len(tok),
        input_shape=(seq_len,),
        name=NAME,
        task="language_modeling",
        # No pad id: windows are never padded, and a tokenizer that pads with EOS would have
        # a window starting with EOS read as padding.
        model_hints={"vocab_size": len(tok)},
    )
