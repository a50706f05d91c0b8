"""Prompt-based few-shot classification for causal language models, as in MeZO / QuZO.

Each row (text, label) of a local JSONL or Parquet file becomes the prompt
``template.format(text=text)`` (default ``"{text} It was"``); the model answers with the
next-token logits at the prompt's last position, restricted to one token per class (the
label words, e.g. " terrible" / " great"). So ``x`` is int64 token ids ``[N, T]``
LEFT-padded with the tokenizer's pad id (the last position is always the prompt's end) and
``y`` the class index; ``model_hints`` carries ``vocab_size``, ``pad_token_id`` and
``label_token_ids`` (one id per class, in class order) to the model builder.

Splits follow MeZO: the test set is a fixed sample of ``n_test`` rows drawn with
``SPLIT_SEED`` (every trial is scored on the same rows), the train set ``k_shot`` rows per
class from the rest, drawn with the trial seed (MeZO varies the k-shot sample per seed).

``transformers`` / ``tokenizers`` are imported only when a dataset is loaded.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import SPLIT_SEED, DatasetError, DataSplits, positive_int

NAME = "prompt_cls"
ROW_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
#: Mixed into the trial seed so the k-shot draw is its own random stream.
_K_SHOT_STREAM = 0x6B53


# ------------------------------------------------------------------ shared with lm_corpus


def resolve_file(name: str, path: object, data_dir: str | Path | None) -> Path:
    """``path`` as an existing file; a relative path is resolved against ``data_dir``."""
    if path is None or not str(path):
        raise DatasetError(f"{name}: option path= is required (a .jsonl or .parquet file)")
    file = Path(str(path)).expanduser()
    if not file.is_absolute() and data_dir is not None:
        file = Path(data_dir).expanduser() / file
    if not file.is_file():
        raise DatasetError(f"{name}: no file at {file}")
    return file


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_jsonl(name: str, file: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{name}: cannot read {file} as UTF-8 JSONL ({_first_line(exc)})"
        raise DatasetError(msg) from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{name}: {file} line {number} is not JSON ({_first_line(exc)}); "
                f"expected one JSON object per line"
            ) from exc
        if not isinstance(row, dict):
            raise DatasetError(
                f"{name}: {file} line {number} is a JSON {type(row).__name__}, "
                f'expected an object such as {{"text": ..., "label": ...}}'
            )
        rows.append(row)
    return rows


def read_columns(name: str, file: Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    """The named columns of a JSONL or Parquet file as lists (one value per row, none missing)."""
    kind = ROW_SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DatasetError(
            f"{name}: {file} has suffix {file.suffix or '(none)'!r}; "
            f"expected {' / '.join(ROW_SUFFIXES)}"
        )
    if kind == "parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(file)
        except Exception as exc:  # pyarrow raises several unrelated types for bad files
            msg = f"{name}: cannot read {file} as parquet ({_first_line(exc)})"
            raise DatasetError(msg) from exc
        found = [str(c) for c in frame.columns]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DatasetError(
                f"{name}: {file} has no column {missing[0]!r}; columns: {', '.join(found)}"
            )
        data = {c: frame[c].tolist() for c in columns}
        count = len(frame)
    else:
        rows = _read_jsonl(name, file)
        for number, row in enumerate(rows, start=1):
            missing = [c for c in columns if c not in row]
            if missing:
                raise DatasetError(
                    f"{name}: row {number} of {file} has no field {missing[0]!r} "
                    f"(fields: {', '.join(map(str, row)) or 'none'})"
                )
        data = {c: [row[c] for row in rows] for c in columns}
        count = len(rows)
    if count == 0:
        raise DatasetError(f"{name}: {file} has no rows")
    for column, values in data.items():
        for number, value in enumerate(values, start=1):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                raise DatasetError(f"{name}: row {number} of {file} has no value for {column!r}")
    return data


def check_template(name: str, template: object) -> str:
    """A str.format template whose only field is ``{text}``."""
    if not isinstance(template, str):
        raise DatasetError(f"{name}: template must be a string such as '{{text}} It was'")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise DatasetError(f"{name}: template {template!r} is malformed ({exc})") from exc
    if fields != {"text"}:
        raise DatasetError(
            f"{name}: template {template!r} must use the field {{text}} and no other "
            f"(found {sorted(fields) or 'none'}); write literal braces as {{{{ }}}}"
        )
    return template


def texts_of(name: str, file: Path, column: str, values: list[Any]) -> list[str]:
    for number, value in enumerate(values, start=1):
        if not isinstance(value, str):
            raise DatasetError(
                f"{name}: {column!r} in row {number} of {file} is {type(value).__name__} "
                f"{value!r}; expected text"
            )
    return values


def _words(name: str, words: Sequence[Any]) -> list[str]:
    out = []
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise DatasetError(f"{name}: label word {word!r} must be a non-empty string")
        out.append(word.lstrip())  # " great" and "great" both mean the answer " great"
    return out


def label_classes(
    name: str, file: Path, labels: list[Any], label_words: object
) -> tuple[np.ndarray, list[str]]:
    """(class index per row, label word per class).

    Int labels are the class indices 0..C-1 and ``label_words`` lists one word per class;
    string labels need ``label_words`` as a mapping label -> word (its order is the class
    order). Leading spaces of the words are dropped: the answer is always ``" " + word``.
    """
    if label_words is None:
        raise DatasetError(
            f"{name}: option label_words= is required (one word per class, e.g. "
            f"['terrible', 'great'] for labels 0/1, or a mapping label -> word)"
        )
    is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels]
    is_str = [isinstance(v, str) for v in labels]
    if all(is_int):
        if isinstance(label_words, Mapping):  # {0: w0, 1: w1} from YAML: the same as a list
            # Keys may have become strings on the way ("0", "1": a JSON round trip).
            by_key = {str(k): w for k, w in label_words.items()}
            if set(by_key) != {str(i) for i in range(len(by_key))}:
                raise DatasetError(
                    f"{name}: int labels need label_words as a list, or a mapping with "
                    f"keys 0..{len(by_key) - 1}; got keys {list(label_words)}"
                )
            label_words = [by_key[str(i)] for i in range(len(by_key))]
        if isinstance(label_words, str) or not isinstance(label_words, Sequence):
            raise DatasetError(
                f"{name}: int labels need label_words as a list (one word per class), "
                f"got {label_words!r}"
            )
        words = _words(name, label_words)
        y = np.asarray(labels, dtype=np.int64)
        bad = np.flatnonzero((y < 0) | (y >= len(words)))
        if len(bad):
            raise DatasetError(
                f"{name}: label {int(y[bad[0]])} in row {bad[0] + 1} of {file} is not among "
                f"the classes 0..{len(words) - 1} of label_words {list(label_words)}"
            )
        return y, words
    if all(is_str):
        if not isinstance(label_words, Mapping):
            raise DatasetError(
                f"{name}: string labels need label_words as a mapping label -> word, "
                f"got {label_words!r}"
            )
        index = {str(k): i for i, k in enumerate(label_words)}
        words = _words(name, list(label_words.values()))
        for number, value in enumerate(labels, start=1):
            if value not in index:
                raise DatasetError(
                    f"{name}: label {value!r} in row {number} of {file} is not among the "
                    f"classes {list(index)} of label_words"
                )
        return np.asarray([index[v] for v in labels], dtype=np.int64), words
    for number, (value, a, b) in enumerate(zip(labels, is_int, is_str), start=1):
        if not (a or b):
            raise DatasetError(
                f"{name}: label {value!r} in row {number} of {file} is "
                f"{type(value).__name__}; expected an int class index or a string"
            )
    raise DatasetError(f"{name}: labels in {file} mix ints and strings; use one kind")


def answered(template: str, texts: Sequence[str], y: np.ndarray, words: list[str]) -> list[str]:
    """Every row rendered as the full prompt with its answer: the "train" tokenizer's corpus
    (prompt_cls and lm over the same file and template get the same vocabulary from it)."""
    return [template.format(text=t) + " " + words[c] for t, c in zip(texts, y.tolist())]


def non_negative_int(name: str, option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DatasetError(f"{name}: option {option}={value!r} must be an integer >= 0")
    return int(value)


# ------------------------------------------------------------------ prompt_cls


def label_token_ids(tok: Any, context: str, words: list[str]) -> list[int]:
    """One token id per label word, as the word follows ``context``; one-line errors else."""
    from ..hf.tokenizer import answer_token_ids

    ids = []
    for word in words:
        answer = answer_token_ids(tok, context, word)
        if len(answer) != 1:
            pieces = tok.convert_ids_to_tokens(
                tok(" " + word, add_special_tokens=False)["input_ids"] if not answer else answer
            )
            raise DatasetError(
                f"{NAME}: label word {word!r} is {len(pieces)} tokens {pieces} after the "
                f"prompt; each label word must be exactly one token"
            )
        if tok.unk_token_id is not None and answer[0] == tok.unk_token_id:
            raise DatasetError(
                f"{NAME}: label word {word!r} is unknown to the tokenizer "
                f"({tok.unk_token!r}); each label word must be one known token"
            )
        ids.append(int(answer[0]))
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{NAME}: label words {words} do not map to distinct tokens {ids}")
    return ids


def encode_prompts(tok: Any, prompts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per prompt, special prefix (e.g. BOS) kept, the text truncated from the
    left so the end of the prompt (the answer position) always survives."""
    from ..hf.tokenizer import special_prefix

    prefix = special_prefix(tok)
    keep = max_length - len(prefix)
    if keep < 1:
        raise DatasetError(
            f"{NAME}: max_length={max_length} leaves no room for text after the "
            f"tokenizer's {len(prefix)} special token(s)"
        )
    plain = tok(prompts, add_special_tokens=False)["input_ids"]
    return [prefix + list(ids[-keep:]) for ids in plain]


def left_pad(ids: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(row) for row in ids)
    out = torch.full((len(ids), width), pad_id, dtype=torch.int64)
    for i, row in enumerate(ids):
        if row:
            out[i, width - len(row) :] = torch.tensor(row, dtype=torch.int64)
    return out


def few_shot_split(
    y: np.ndarray, num_classes: int, n_test: int, k_shot: int, seed: int, file: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): n_test rows fixed by SPLIT_SEED, then k_shot per class of the
    rest drawn with the trial seed (all of the rest when k_shot is 0); both sorted."""
    n = len(y)
    if n_test >= n:
        raise DatasetError(
            f"{NAME}: n_test={n_test} leaves no training rows: {file} has {n} rows; "
            f"set n_test below {n}"
        )
    test = np.sort(np.random.default_rng(SPLIT_SEED).permutation(n)[:n_test])
    rest = np.setdiff1d(np.arange(n), test)
    if k_shot == 0:
        return rest, test
    rng = np.random.default_rng([seed, _K_SHOT_STREAM])
    train = []
    for c in range(num_classes):
        pool = rest[y[rest] == c]
        if len(pool) < k_shot:
            raise DatasetError(
                f"{NAME}: class {c} has {len(pool)} rows outside the test set, "
                f"k_shot={k_shot} needs {k_shot}; lower k_shot or n_test"
            )
        train.append(rng.choice(pool, size=k_shot, replace=False))
    return np.sort(np.concatenate(train)), test


def load_prompt_cls(
    *,
    data_dir: str | None = None,
    path: str | None = None,
    template: str = "{text} It was",
    label_words: Sequence[str] | Mapping[Any, str] | None = None,
    tokenizer: str = "train",
    k_shot: int = 16,
    n_test: int = 1000,
    max_length: int = 128,
    text_field: str = "text",
    label_field: str = "label",
    seed: int = 0,
) -> DataSplits:
    """Few-shot prompt classification over a local JSONL / Parquet file of (text, label).

    Args:
        data_dir: resolves a relative ``path`` (and a relative tokenizer folder).
        path: the rows, one JSON object per line (.jsonl) or a Parquet table.
        template: ``str.format`` template with the single field ``{text}``: the prompt.
        label_words: one word per class, each exactly one token after the prompt (with
            the leading space it has there): a list for int labels 0..C-1, a mapping
            label -> word for string labels (its order is the class order).
        tokenizer: ``"train"`` (word level, vocabulary from every row rendered as the full
            prompt with its answer) or a ``save_pretrained`` folder (the checkpoint's).
        k_shot: training rows per class, drawn with the trial seed; 0 = all non-test rows.
        n_test: test rows, a fixed sample drawn with ``SPLIT_SEED``.
        max_length: longest prompt in tokens; longer ones lose their beginning.
        text_field, label_field: the columns to read.
        seed: the trial seed (passed by ``load_dataset``; not a user option).
    """
    n_test = positive_int(NAME, "n_test", n_test)
    max_length = positive_int(NAME, "max_length", max_length)
    k_shot = non_negative_int(NAME, "k_shot", k_shot)
    template = check_template(NAME, template)
    file = resolve_file(NAME, path, data_dir)
    columns = read_columns(NAME, file, [text_field, label_field])
    texts = texts_of(NAME, file, text_field, columns[text_field])
    y, words = label_classes(NAME, file, columns[label_field], label_words)
    num_classes = len(words)
    train, test = few_shot_split(y, num_classes, n_test, k_shot, int(seed), file)

    from ..hf.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer, answered(template, texts, y, words), data_dir=data_dir)
    prompts = [template.format(text=t) for t in texts]
    label_ids = label_token_ids(tok, prompts[0], words)
    # Every row is encoded, so the width T (and the model's cost) is the file's, not the
    # k-shot sample's: equal for every seed of a sweep.
    x = left_pad(encode_prompts(tok, prompts, max_length), int(tok.pad_token_id))
    labels = torch.from_numpy(y)
    rows = {"train": torch.from_numpy(train), "test": torch.from_numpy(test)}
    return DataSplits(
        train_x=x[rows["train"]].contiguous(),
        train_y=labels[rows["train"]].contiguous(),
        test_x=x[rows["test"]].contiguous(),
        test_y=labels[rows["test"]].contiguous(),
        num_classes=num_classes,
        input_shape=(int(x.shape[1]),),
        name=NAME,
        task="classification",
        model_hints={
            "vocab_size": len(tok),
            "pad_token_id": int(tok.pad_token_id),
            "label_token_ids": label_ids,
        },
    )
