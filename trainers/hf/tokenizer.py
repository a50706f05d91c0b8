"""Tokenizers for the Hugging Face datasets: a checkpoint's own, or a tiny word-level one.

``load_tokenizer("train", texts)`` builds a deterministic word-level tokenizer from the
texts themselves (no download, no training randomness): the vocabulary is the special
tokens ``[PAD] [UNK] [BOS] [EOS]`` followed by the sorted unique words of ``texts`` as the
``Whitespace`` pre-tokenizer splits them (runs of word characters, runs of punctuation), and
every encoding starts with ``[BOS]`` like a LLaMA tokenizer's. Any other spec is a folder
written by ``save_pretrained`` (usually the checkpoint's), read offline.

Imported lazily: ``tokenizers`` and ``transformers`` are the optional extra ``llm``, so
nothing here runs when ``trainers.data`` is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..data.base import DatasetError

#: Special tokens of the "train" tokenizer, in vocabulary order (ids 0..3).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD, UNK, BOS, EOS = SPECIAL_TOKENS
#: Files of which a save_pretrained tokenizer folder holds at least one.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
INSTALL_HINT = "pip install -e '.[llm]'"
_MAX_DETAIL = 200  # characters of a library's own error kept in ours (which stays one line)


def _require_llm() -> None:
    """One line naming the extra when transformers / tokenizers are not installed."""
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise DatasetError(
            f"tokenizer: tokenizing datasets need the llm extra ({exc.name} is not "
            f"installed): {INSTALL_HINT}"
        ) from None


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def word_level_vocab(texts: Iterable[str]) -> dict[str, int]:
    """The "train" tokenizer's vocabulary: special tokens, then the sorted unique words."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({piece for text in texts for piece, _ in split(text)} - set(SPECIAL_TOKENS))
    return {token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}


def train_word_level(texts: Iterable[str]) -> Any:
    """A deterministic word-level ``PreTrainedTokenizerFast`` whose vocabulary is ``texts``'."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = word_level_vocab(texts)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS
    )


def _from_directory(folder: Path) -> Any:
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise DatasetError(
            f"tokenizer: no folder at {folder}; expected 'train' or a save_pretrained folder"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DatasetError(
            f"tokenizer: no tokenizer files in {folder} (expected tokenizer.json or "
            f"tokenizer_config.json from save_pretrained); save the tokenizer with the "
            f"checkpoint, or set the dataset option tokenizer ('train' or a tokenizer folder)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, JSON errors, ...
        msg = f"tokenizer: cannot read a tokenizer from {folder} ({_detail(exc)})"
        raise DatasetError(msg) from exc
    if tok.pad_token is None:  # OPT-style tokenizers have one; LLaMA / GPT-2 ones do not
        fallback = tok.eos_token if tok.eos_token is not None else tok.unk_token
        if fallback is None:
            raise DatasetError(
                f"tokenizer: {folder} has no pad, eos or unk token to pad prompts with"
            )
        tok.pad_token = fallback
    return tok


def load_tokenizer(
    spec: str, texts: Iterable[str] = (), *, data_dir: str | Path | None = None
) -> Any:
    """The tokenizer named by ``spec``, always with a pad token.

    Args:
        spec: ``"train"`` (a word-level tokenizer built from ``texts``) or a folder holding a
            ``save_pretrained`` tokenizer; a relative folder is looked up under ``data_dir``
            first, then in the working directory.
        texts: the corpus of the "train" tokenizer (ignored for a folder).
        data_dir: resolves a relative folder.
    """
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise DatasetError(f"tokenizer: {spec!r} is neither 'train' nor a folder")
    _require_llm()
    if spec == "train":
        return train_word_level(texts)
    folder = Path(spec).expanduser()
    if not folder.is_absolute() and data_dir is not None:
        under = Path(data_dir).expanduser() / folder
        if under.exists() or not folder.exists():
            folder = under
    return _from_directory(folder)


def answer_token_ids(tok: Any, context: str, word: str) -> list[int]:
    """Ids ``" " + word`` adds after ``context`` (no special tokens), as the model sees them.

    BPE and SentencePiece tokenizers spell a word differently at the start of a text than
    after one, so the word is encoded in context and the context's own ids are cut off.
    Returns ``[]`` when the context's ids change once the word is appended (a merge across
    the boundary); callers reject that like a multi-token word.
    """
    base = tok(context, add_special_tokens=False)["input_ids"]
    full = tok(context + " " + word, add_special_tokens=False)["input_ids"]
    return full[len(base) :] if full[: len(base)] == base else []


def special_prefix(tok: Any) -> list[int]:
    """The ids the tokenizer puts before a text ([BOS] for LLaMA-style ones, none for GPT-2)."""
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []
