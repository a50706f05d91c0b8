"""Tests for trainers.data: loaders, IDX parsing, table input, sampler resume."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.data import DATASETS, BatchSampler, DatasetError, DataSplits, load_dataset


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- registry / digits


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError) as exc:
        load_dataset("cifar")
    msg = _one_line(exc)
    for name in DATASETS:
        assert name in msg


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="bogus") as exc:
        load_dataset("teacher_student", bogus=1)
    assert "dim" in str(exc.value)  # valid options listed too


def test_digits_shapes_labels_and_standardisation() -> None:
    d = load_dataset("digits")
    assert isinstance(d, DataSplits) and d.name == "digits"
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert d.num_train + d.num_test == 1797
    assert abs(d.num_test - 0.2 * 1797) <= 1
    assert set(d.train_y.tolist()) == set(range(10)) == set(d.test_y.tolist())
    assert abs(d.train_x.mean().item()) < 1e-4
    assert abs(d.train_x.std().item() - 1.0) < 1e-2
    # test split uses train stats, so it is close to but not exactly standardised
    assert abs(d.test_x.mean().item()) < 0.2


def test_digits_split_independent_of_trial_seed() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=123)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert torch.equal(a.train_x, b.train_x)


# ---------------------------------------------------------------- teacher_student


def test_teacher_student_deterministic_and_balanced() -> None:
    a = load_dataset("teacher_student", seed=0)
    b = load_dataset("teacher_student", seed=99)
    assert a.input_shape == (32,) and a.num_classes == 10
    assert a.train_x.shape == (4096, 32) and a.test_x.shape == (1024, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert int(a.train_y.min()) >= 0 and int(a.train_y.max()) < 10
    c = load_dataset("teacher_student", teacher_seed=1)
    assert not torch.equal(a.train_y, c.train_y)
    for d in (a, c, load_dataset("teacher_student", teacher_seed=2)):
        counts = torch.bincount(d.train_y, minlength=10)
        # the teacher's logits are calibrated per class, so no class is rare (let alone empty)
        assert int(counts.min()) > 0.6 * 4096 / 10


def test_teacher_student_options() -> None:
    d = load_dataset("teacher_student", dim=5, num_classes=3, n_train=64, n_test=16)
    assert d.train_x.shape == (64, 5) and d.test_x.shape == (16, 5)
    assert d.input_shape == (5,) and int(d.train_y.max()) < 3
    with pytest.raises(DatasetError, match="dim"):
        load_dataset("teacher_student", dim=0)


# ---------------------------------------------------------------- MNIST-style IDX files


def _write_idx(path: Path, arr: np.ndarray, *, gz: bool = False, magic: int | None = None) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def _make_idx_dataset(root: Path, folder: str, *, gz_test: bool = False) -> dict[str, tuple]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(7)
    data = {}
    for split, prefix, n in (("train", "train", 20), ("test", "t10k", 7)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)  # known pattern: pixel (0,0) encodes the index
        labels = (np.arange(n) * 3) % 10
        gz = gz_test and split == "test"
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize(
    "name,folder,mean,std",
    [
        ("mnist", "MNIST", 0.1307, 0.3081),
        ("fashion_mnist", "FashionMNIST", 0.2860, 0.3530),
    ],
)
def test_idx_loader_roundtrip(
    tmp_path: Path, name: str, folder: str, mean: float, std: float
) -> None:
    written = _make_idx_dataset(tmp_path, folder, gz_test=True)
    d = load_dataset(name, data_dir=str(tmp_path))
    assert d.name == name and d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_x.shape == (7, 1, 28, 28)
    for split, x, y in (("train", d.train_x, d.train_y), ("test", d.test_x, d.test_y)):
        images, labels = written[split]
        assert y.tolist() == labels.tolist()
        expected = (images.astype(np.float32) / 255.0 - mean) / std
        np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=0, atol=1e-5)


def test_idx_loader_limits(tmp_path: Path) -> None:
    written = _make_idx_dataset(tmp_path, "MNIST")
    d = load_dataset("mnist", data_dir=str(tmp_path), limit_train=5, limit_test=3)
    assert d.train_x.shape[0] == 5 and d.test_x.shape[0] == 3
    # the subset is made of real rows (pixel (0,0) encodes the original index) ...
    raw = torch.round(d.train_x[:, 0, 0, 0] * 0.3081 * 255 + 0.1307 * 255).long()
    idx = raw.tolist()
    assert len(set(idx)) == 5
    assert d.train_y.tolist() == written["train"][1][idx].tolist()
    # ... and is the same on every call
    again = load_dataset("mnist", data_dir=str(tmp_path), limit_train=5, limit_test=3, seed=4)
    assert torch.equal(d.train_x, again.train_x)


def test_idx_missing_file_names_path(tmp_path: Path) -> None:
    _make_idx_dataset(tmp_path, "MNIST")
    missing = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    missing.unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(missing) in _one_line(exc)


@pytest.mark.parametrize("magic", [0x12345678, 0xFF000803, 0x00000801])
def test_idx_bad_magic_names_path(tmp_path: Path, magic: int) -> None:
    _make_idx_dataset(tmp_path, "FashionMNIST")
    bad = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    _write_idx(bad, np.zeros((2, 28, 28)), magic=magic)
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    msg = _one_line(exc)
    assert str(bad) in msg and f"magic number 0x{magic:08X}" in msg


def test_idx_requires_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data_dir"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="MNIST"):
        load_dataset("mnist", data_dir=str(tmp_path))  # empty folder


# ---------------------------------------------------------------- table


def test_table_npz_with_remapping(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 4))
    y = np.repeat([5, 9, 20], [20, 15, 15])
    np.savez(tmp_path / "t.npz", x=x, y=y)
    d = load_dataset("table", path=str(tmp_path / "t.npz"))
    assert d.num_classes == 3 and d.input_shape == (4,)
    assert d.num_train == 40 and d.num_test == 10
    assert set(d.train_y.tolist()) == {0, 1, 2} == set(d.test_y.tolist())
    np.testing.assert_allclose(d.train_x.mean(0).numpy(), 0.0, atol=1e-5)
    # relative path resolved against data_dir
    d2 = load_dataset("table", data_dir=str(tmp_path), path="t.npz")
    assert torch.equal(d.test_x, d2.test_x)


def test_table_npz_explicit_test_split_and_keys(tmp_path: Path) -> None:
    f = tmp_path / "s.npz"
    np.savez(
        f,
        feats=np.arange(12.0).reshape(6, 2),
        lab=np.array([1, 1, 3, 3, 1, 3]),
        feats_test=np.ones((2, 2)),
        lab_test=np.array([3, 7]),
    )
    d = load_dataset("table", path=str(f), x_key="feats", y_key="lab")
    assert d.num_train == 6 and d.num_test == 2 and d.num_classes == 3
    assert d.test_y.tolist() == [1, 2]
    with pytest.raises(DatasetError, match="'x'") as exc:
        load_dataset("table", path=str(f))
    assert str(f) in _one_line(exc)


def test_table_parquet(tmp_path: Path) -> None:
    import pandas as pd

    n = 40
    df = pd.DataFrame(
        {
            "a": np.arange(n, dtype=float),
            "b": np.arange(n) % 3,
            "note": ["x"] * n,
            "target": np.where(np.arange(n) % 2 == 0, "cat", "dog"),
        }
    )
    f = tmp_path / "t.parquet"
    df.to_parquet(f)
    d = load_dataset("table", path=str(f), label="target")
    assert d.input_shape == (2,) and d.num_classes == 2  # 'note' is not numeric: dropped
    assert d.num_train == 32 and d.num_test == 8
    with pytest.raises(DatasetError, match="label") as exc:
        load_dataset("table", path=str(f))  # default label column "label" is absent
    assert "target" in _one_line(exc)


def test_table_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="path"):
        load_dataset("table")
    with pytest.raises(DatasetError) as exc:
        load_dataset("table", path=str(tmp_path / "nope.npz"))
    assert "nope.npz" in _one_line(exc)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"\.npz or \.parquet"):
        load_dataset("table", path=str(tmp_path / "t.csv"))


# ---------------------------------------------------------------- BatchSampler


def test_sampler_deterministic_and_epochwise() -> None:
    a, b = BatchSampler(10, 3, seed=5), BatchSampler(10, 3, seed=5)
    seq_a = [a.next_indices() for _ in range(9)]
    seq_b = [b.next_indices() for _ in range(9)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b))
    assert all(x.dtype == torch.int64 and x.shape == (3,) for x in seq_a)
    epoch0 = torch.cat(seq_a[:3])
    assert len(set(epoch0.tolist())) == 9  # no repeats within an epoch
    assert not all(torch.equal(x, y) for x, y in zip(seq_a, _draw(BatchSampler(10, 3, 6), 9)))


def _draw(sampler: BatchSampler, k: int) -> list[torch.Tensor]:
    return [sampler.next_indices() for _ in range(k)]


def test_sampler_ignores_global_rng() -> None:
    torch.manual_seed(0)
    a = _draw(BatchSampler(50, 7, seed=1), 5)
    torch.manual_seed(123)
    torch.rand(100)
    b = _draw(BatchSampler(50, 7, seed=1), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("k,m", [(0, 5), (2, 7), (3, 4), (5, 12)])
def test_sampler_resume_continues_exact_sequence(k: int, m: int) -> None:
    s = BatchSampler(13, 4, seed=3)  # 3 batches/epoch: k crosses epoch boundaries
    _draw(s, k)
    state = s.state_dict()
    expected = _draw(s, m)
    fresh = BatchSampler(13, 4, seed=999)
    fresh.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(_draw(fresh, m), expected))


def test_sampler_state_survives_torch_save(tmp_path: Path) -> None:
    s = BatchSampler(100, 8, seed=0)
    _draw(s, 20)
    torch.save(s.state_dict(), tmp_path / "s.pt")
    expected = _draw(s, 10)
    fresh = BatchSampler(100, 8, seed=0)
    fresh.load_state_dict(torch.load(tmp_path / "s.pt"))
    assert all(torch.equal(x, y) for x, y in zip(_draw(fresh, 10), expected))


def test_sampler_clamps_and_validates() -> None:
    s = BatchSampler(5, 64, seed=0)
    assert s.batch_size == 5
    assert sorted(s.next_indices().tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        BatchSampler(0, 4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(10, 4, seed=0).load_state_dict(BatchSampler(10, 5, seed=0).state_dict())
