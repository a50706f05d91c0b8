"""Byte-level language modelling on local text (vocabulary 256), offline by construction.

Without ``path`` the corpus is the running Python's own standard-library ``.py`` sources:
always present, no download, and deterministic for a given Python install (files in
sorted path order, ``site-packages``/``dist-packages`` left out since they vary between
environments). Bytes, not characters, so any file decodes and the vocabulary is fixed.

The byte stream is split once: the last 10% is the held-out test region, the rest the
train region, so no test byte is ever seen in training. Test windows tile the start of
the test region; train windows start at offsets drawn from ``SPLIT_SEED``, so every trial
of a sweep trains and is scored on identical data.
"""

from __future__ import annotations

import fnmatch
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch

from .base import SPLIT_SEED, DatasetError, DataSplits, positive_int

NAME = "text"
VOCAB = 256
TEST_SHARE = 10  # the last 1/10 of the corpus is held out
TEXT_SUFFIXES = (".txt", ".md", ".py")
#: Third-party code installed inside the stdlib tree differs between environments.
_STDLIB_SKIP = ("site-packages", "dist-packages")


def _files_under(root: Path, suffixes: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[Path]:
    """Files below ``root`` with one of ``suffixes``, sorted by relative path (deterministic).

    Directories named in ``skip`` are pruned, not walked (site-packages can be huge).
    """
    found = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        found += [Path(folder, f) for f in filenames if f.endswith(suffixes)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _concatenate(files: list[Path], max_bytes: int) -> bytes:
    """The files' bytes back to back, stopping (and truncating) at ``max_bytes``."""
    chunks, total = [], 0
    for file in files:
        if total >= max_bytes:
            break
        data = file.read_bytes()[: max_bytes - total]
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def read_corpus(
    path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    max_bytes: int = 2_000_000,
    include: str | None = None,
) -> tuple[bytes, str]:
    """The corpus bytes (at most ``max_bytes``) and a description of where they came from.

    ``path`` is a text file or a directory of .txt/.md/.py files (searched recursively);
    relative paths are resolved against ``data_dir``. None means the stdlib sources.
    ``include`` keeps only files whose path relative to the corpus root matches the fnmatch
    pattern (e.g. ``email/*`` — a "downstream" domain for fine-tuning a model pre-trained
    on the whole standard library).
    """
    if path is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        files, source = _files_under(root, (".py",), _STDLIB_SKIP), f"stdlib sources in {root}"
        if include:
            files = [f for f in files if fnmatch.fnmatch(f.relative_to(root).as_posix(), include)]
            source += f" matching {include!r}"
    else:
        full = Path(path).expanduser()
        if not full.is_absolute() and data_dir is not None:
            full = Path(data_dir).expanduser() / full
        if not full.exists():
            raise DatasetError(f"{NAME}: path {str(full)!r} does not exist")
        files = [full] if full.is_file() else _files_under(full, TEXT_SUFFIXES)
        if include and full.is_dir():
            files = [f for f in files if fnmatch.fnmatch(f.relative_to(full).as_posix(), include)]
        source = str(full) + (f" matching {include!r}" if include else "")
    stream = _concatenate(files, max_bytes)
    if not stream:
        kinds = "/".join(TEXT_SUFFIXES)
        raise DatasetError(
            f"{NAME}: empty corpus: no text in {source} ({len(files)} {kinds} file(s) found)"
        )
    return stream, source


def split_windows(
    stream: bytes, seq_len: int, n_train: int, n_test: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Window start offsets (train, test) over ``stream`` and the first byte of the test region.

    Every window spans ``seq_len + 1`` bytes (inputs plus the shifted targets) and lies
    wholly inside its region.
    """
    span = seq_len + 1
    test_start = len(stream) - len(stream) // TEST_SHARE
    needed = TEST_SHARE * n_test * span  # then train gets >= 9 windows' worth as well
    if len(stream) < needed:
        raise DatasetError(
            f"{NAME}: corpus too short: found {len(stream)} bytes, need at least {needed} "
            f"(n_test={n_test} windows of seq_len+1={span} bytes in the last "
            f"1/{TEST_SHARE}); lower n_test or seq_len, raise max_bytes, or add text"
        )
    test = test_start + span * np.arange(n_test)
    train = np.random.default_rng(SPLIT_SEED).integers(0, test_start - span + 1, size=n_train)
    return np.sort(train), test, test_start


def load_text(
    *,
    data_dir: str | None = None,
    path: str | None = None,
    seq_len: int = 64,
    n_train: int = 2048,
    n_test: int = 256,
    max_bytes: int = 2_000_000,
    include: str | None = None,
) -> DataSplits:
    """Byte-level next-token data: x = window[:-1], y = window[1:], int64 ids in 0..255.

    Args:
        data_dir: resolves a relative ``path``.
        path: a text file or a directory of .txt/.md/.py files; None = the stdlib sources.
        seq_len: context length T (the model's ``input_shape`` is ``(T,)``).
        n_train: train windows, at seeded random offsets (they may overlap each other).
        n_test: test windows, contiguous and non-overlapping, from the held-out last 10%.
        max_bytes: read at most this many bytes of the corpus (files in sorted order).
        include: fnmatch pattern on file paths relative to the corpus root (e.g. ``email/*``).
    """
    seq_len = positive_int(NAME, "seq_len", seq_len)
    n_train = positive_int(NAME, "n_train", n_train)
    n_test = positive_int(NAME, "n_test", n_test)
    max_bytes = positive_int(NAME, "max_bytes", max_bytes)
    stream, _ = read_corpus(path, data_dir=data_dir, max_bytes=max_bytes, include=include)
    train_starts, test_starts, _ = split_windows(stream, seq_len, n_train, n_test)
    tokens = torch.from_numpy(np.frombuffer(stream, dtype=np.uint8).astype(np.int64))
    offsets = torch.arange(seq_len + 1)

    def windows(starts: np.ndarray) -> torch.Tensor:
        return tokens[torch.from_numpy(starts.astype(np.int64))[:, None] + offsets]

    train, test = windows(train_starts), windows(test_starts)
    return DataSplits(
        train_x=train[:, :-1].contiguous(),
        train_y=train[:, 1:].contiguous(),
        test_x=test[:, :-1].contiguous(),
        test_y=test[:, 1:].contiguous(),
        num_classes=VOCAB,
        input_shape=(seq_len,),
        name=NAME,
        task="language_modeling",
    )
