"""Vision models (ResNet-18/50, DeiT-Tiny/Small), BatchNorm under zeroth-order estimators, and
the CIFAR / ImageFolder loaders, on tiny fake datasets this file writes to disk."""

from __future__ import annotations

import copy
import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trainers import run_trial
from trainers.data import DatasetError, load_dataset
from trainers.data.augment import RandomCropFlip
from trainers.data.cifar import VARIANTS
from trainers.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from trainers.data.safe_pickle import UnsafePickleError, load_restricted
from trainers.estimators import CostModel, build_estimator, perturb
from trainers.models import build_model
from trainers.models.resnet import ResNet
from trainers.quant import (
    QuantConv2d,
    QuantLinear,
    QuantSpec,
    quantize_model,
    quantized_layers,
    snap_to_grid,
)

SMOKE = {
    "resnet18": {"width": 4},
    "resnet50": {"width": 4},
    "deit_tiny": {"depth": 1},
    "deit_small": {"depth": 1},
}
ESTIMATOR_LR = {"ste": 0.05, "fogzo": 0.05, "nspsa": 1e-3, "mezo": 1e-3, "quzo": 1e-3, "qfo": 0.05}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core box: extra intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def _batch(size: int, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


# ------------------------------------------------------------------------------ fake data on disk


def write_cifar(
    root: Path, variant: str, fmt: str, per_file: int = 3, n_test: int = 4, protocol: int = 2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny CIFAR in the official layout; returns {split: (images N,3,32,32, fine labels)}."""
    v = VARIANTS[variant]
    rng = np.random.default_rng(len(variant) + protocol)
    folder = root / (v.python_dir if fmt == "python" else v.binary_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        names = v.python_files[split] if fmt == "python" else v.binary_files[split]
        k = per_file if split == "train" else n_test
        parts = []
        for name in names:
            data = rng.integers(0, 256, (k, 3072), dtype=np.uint8)
            fine = rng.integers(0, v.num_classes, k)
            parts.append((data, fine))
            if fmt == "binary":
                labels = [fine] if v.label_bytes == 1 else [fine // 5, fine]
                np.concatenate([np.stack(labels, 1).astype(np.uint8), data], 1).tofile(
                    folder / name
                )
                continue
            batch = {
                "batch_label": "fake",
                "data": data,
                v.label_key: fine.tolist(),
                "filenames": ["x.png"] * k,
            }
            if variant == "cifar100":
                batch["coarse_labels"] = (fine // 5).tolist()
            else:  # what pickle.load(encoding="bytes") style files look like: bytes keys
                batch = {key.encode(): value for key, value in batch.items()}
            blob = pickle.dumps(batch, protocol=protocol)
            # The official archive was written by numpy 1, whose module is numpy.core.
            (folder / name).write_bytes(
                blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            )
        out[split] = (
            np.concatenate([d for d, _ in parts]).reshape(-1, 3, 32, 32),
            np.concatenate([f for _, f in parts]),
        )
    return out


def write_imagefolder(root: Path) -> None:
    """train: a_dog (3 images), b_cat (2); val: one each. Solid colours, varied sizes/formats."""
    colours = {"a_dog": (255, 0, 0), "b_cat": (0, 0, 255)}
    sizes = {"train": [(20, 12), (12, 20), (16, 16)], "val": [(10, 30)]}
    for split, shapes in sizes.items():
        for cls, colour in colours.items():
            (root / split / cls).mkdir(parents=True)
            for i, shape in enumerate(shapes[: 2 if (split, cls) == ("train", "b_cat") else None]):
                ext = ".png" if i % 2 == 0 else ".JPG"
                Image.new("RGB", shape, colour).save(
                    root / split / cls / f"img{i}{ext}",
                    format="PNG" if ext == ".png" else "JPEG",
                    quality=100,
                )
    (root / "train" / "a_dog" / "notes.txt").write_text("not an image")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", "python", per_file=4, n_test=8)
    return root


# ------------------------------------------------------------------------------ models


@pytest.mark.parametrize("name", list(SMOKE))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 16, 16), (3, 224, 224)])
def test_models_build_for_input_shapes(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 7, **SMOKE[name])
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    if name.startswith("resnet"):  # CIFAR stem by default for small images only
        assert isinstance(model.maxpool, nn.Identity) == (shape[1] <= 64)
        assert model.conv1.kernel_size == ((3, 3) if shape[1] <= 64 else (7, 7))
    else:  # patch 16 at 224 px, else an 8x8 token grid (patch 4 at 32 px)
        assert model.patch_embed.proj.kernel_size[0] == {32: 4, 16: 2, 224: 16}[shape[1]]


def test_parameter_counts_match_torchvision_and_timm() -> None:
    counts = {
        "resnet18": 11_689_512,
        "resnet50": 25_557_032,
        "deit_tiny": 5_717_416,
        "deit_small": 22_050_664,
    }
    for name, count in counts.items():
        model = build_model(name, (3, 224, 224), 1000)
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_model_options_are_validated() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        build_model("deit_tiny", (3, 30, 30), 10, patch_size=4)
    with pytest.raises(ValueError, match="cifar_stem"):
        build_model("resnet18", (3, 32, 32), 10, cifar_stem="yes")
    with pytest.raises(ValueError, match="C, H, W"):
        build_model("resnet50", (32,), 10)
    assert isinstance(
        build_model("resnet18", (3, 32, 32), 10, width=2, cifar_stem=False).maxpool, nn.MaxPool2d
    )
    assert len(build_model("deit_small", (3, 32, 32), 10, depth=2, patch_size=8).blocks) == 2


@pytest.mark.parametrize("name", list(SMOKE))
def test_every_weight_layer_is_quantized(name: str) -> None:
    torch.manual_seed(0)
    model = quantize_model(
        build_model(name, (3, 16, 16), 10, **SMOKE[name]), QuantSpec(bits=4, act_bits=4)
    )
    layers = dict(quantized_layers(model))
    assert not [
        m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)
    ]  # every one swapped
    assert all(
        type(m) in (QuantLinear, QuantConv2d) and m.act_quantizer is not None
        for m in layers.values()
    )
    # No weight escapes: every matrix/kernel parameter belongs to a quantized layer.
    matrices = {
        n
        for n, p in model.named_parameters()
        if p.dim() >= 2 and n not in ("cls_token", "pos_embed")
    }
    assert matrices == {f"{n}.weight" for n in layers}
    snap_to_grid(model)
    for layer in layers.values():
        assert torch.equal(layer.weight_quantizer.round_nearest(layer.weight), layer.weight)
    calls = []

    def on_grid(module, inputs, output):  # a 4-bit activation has at most 16 levels
        calls.append(torch.unique(output).numel() <= 16)

    for layer in layers.values():
        layer.act_quantizer.register_forward_hook(on_grid)
    model(torch.randn(2, 3, 16, 16))
    assert len(calls) == len(layers) and all(calls)
    ends = quantize_model(
        build_model(name, (3, 16, 16), 10, **SMOKE[name]), QuantSpec(bits=4, first_last="float")
    )
    assert len(quantized_layers(ends)) == len(layers) - 2


# ------------------------------------------------------------------------------ BatchNorm + vmap


def tiny_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = quantize_model(build_model("resnet18", (3, 16, 16), 10, width=2), QuantSpec(bits=4))
    return model.train()


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()}


def test_batched_losses_equal_a_loop_for_vit() -> None:
    torch.manual_seed(0)
    model = quantize_model(build_model("deit_tiny", (3, 16, 16), 10, depth=1), QuantSpec(bits=4))
    plan = perturb.perturbation_plan(model, "alpha", 1e-3)
    deltas = [
        i.eps * d
        for i, d in zip(plan, perturb.sample_directions(plan, 4, torch.Generator().manual_seed(0)))
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither our loop fallback nor torch's per-op fallback
        batched = perturb.perturbed_losses(model, F.cross_entropy, _batch(16), plan, deltas)
    looped = perturb._loop_losses(
        model,
        F.cross_entropy,
        _batch(16),
        [i.name for i in plan],
        {i.name: i.param.detach() for i in plan},
        deltas,
    )
    assert torch.allclose(batched, looped, atol=1e-5)


def test_bn_perturbed_losses_read_the_running_stats_and_never_write_them(monkeypatch) -> None:
    model, batch = tiny_resnet(), _batch(16)
    with torch.no_grad():
        model(batch[0])  # move the running stats off their init: eval and train forwards differ
    plan = perturb.perturbation_plan(model, "alpha", 1e-3)
    deltas = [
        i.eps * d
        for i, d in zip(plan, perturb.sample_directions(plan, 4, torch.Generator().manual_seed(1)))
    ]
    before, reference = _bn_stats(model), copy.deepcopy(model).eval()
    with torch.no_grad():  # one ordinary eval-mode forward per theta + delta_j
        expected = []
        for j in range(4):
            for item, d in zip(plan, deltas):
                reference.get_parameter(item.name).copy_(item.param + d[j])
            expected.append(F.cross_entropy(reference(batch[0]), batch[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched = perturb.perturbed_losses(model, F.cross_entropy, batch, plan, deltas)
    looped = perturb._loop_losses(
        model,
        F.cross_entropy,
        batch,
        [i.name for i in plan],
        {i.name: i.param.detach() for i in plan},
        deltas,
    )
    assert torch.allclose(batched, torch.stack(expected), atol=1e-5) and torch.allclose(
        batched, looped, atol=1e-5
    )
    assert all(m.training for m in model.modules())
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
    # The loop fallback follows the same rule.
    monkeypatch.setattr(perturb, "_VMAP_UNSUPPORTED", {ResNet})
    fallback_losses = perturb.perturbed_losses(model, F.cross_entropy, batch, plan, deltas)
    assert torch.allclose(fallback_losses, batched, atol=1e-5)
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())


@pytest.mark.parametrize(
    "name, options", [("nspsa", {"n": 3, "chunk": 2}), ("fogzo", {"n": 2, "beta_min": 0.9})]
)
def test_bn_resnet_trains_with_zeroth_order_estimators(name: str, options: dict) -> None:
    model, batch = tiny_resnet(), _batch(16)
    estimator = build_estimator(name, options, CostModel(1.0, 2.0), seed=0, lr=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ste_forward = copy.deepcopy(model)
    with torch.no_grad():
        ste_forward(batch[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "vmap failed ... loop" fallback warning
        for step in range(2):
            before = _bn_stats(model)
            result = estimator.step(model, F.cross_entropy, batch, step / 2)
            optimizer.step()
            assert math.isfinite(result.loss)
            if name == "nspsa":  # eval-mode perturbed forwards only: the running stats never move
                assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
                continue
            assert not torch.equal(model.bn1.running_mean, before["bn1.running_mean"])
            for n, b in model.named_buffers():  # FOGZO's stats advance once per step...
                if n.endswith("num_batches_tracked"):
                    assert int(b) == int(before[n]) + 1, n
            if step == 0:  # ...from its STE forward, not its perturbations
                assert all(
                    torch.equal(b, dict(ste_forward.named_buffers())[n])
                    for n, b in model.named_buffers()
                )
    assert ResNet not in perturb._VMAP_UNSUPPORTED


# ------------------------------------------------------------------------------ end-to-end trials


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("estimator", list(ESTIMATOR_LR))
@pytest.mark.parametrize("model", list(SMOKE))
def test_trains_two_steps_with_every_estimator(model: str, estimator: str, cifar_dir: Path) -> None:
    reports: list[dict] = []
    final = run_trial(
        {
            "model": model,
            "model_options": SMOKE[model],
            "dataset": "cifar10",
            "data_dir": str(cifar_dir),
            "estimator": estimator,
            "bits": 4,
            "quant_options": {"act_bits": 8},
            "lr": ESTIMATOR_LR[estimator],
            "batch_size": 8,
            "steps": 2,
            "num_evals": 1,
            "eval_batch_size": 8,
            "threads": 1,
        },
        reports.append,
    )
    assert final["step"] == 2 and final["done"] and math.isfinite(final["train_loss"])
    assert final["forwards"] > 0 and len(reports) == 2


def test_imagefolder_trial(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "in100")
    final = run_trial(
        {
            "model": "resnet18",
            "model_options": {"width": 4},
            "dataset": "imagefolder",
            "dataset_options": {"path": "in100", "image_size": 16},
            "data_dir": str(tmp_path),
            "estimator": "fogzo",
            "bits": 4,
            "batch_size": 4,
            "steps": 2,
            "num_evals": 1,
            "threads": 1,
        },
        lambda metrics: None,
    )
    assert final["step"] == 2 and math.isfinite(final["train_loss"])


# ------------------------------------------------------------------------------ CIFAR loaders


@pytest.mark.parametrize("variant, protocol", [("cifar10", 2), ("cifar100", 5)])
def test_cifar_python_and_binary_versions(tmp_path: Path, variant: str, protocol: int) -> None:
    v = VARIANTS[variant]
    written = write_cifar(tmp_path / "py", variant, "python", protocol=protocol)
    write_cifar(tmp_path / "bin", variant, "binary", protocol=protocol)  # same rng: same content
    py = load_dataset(variant, data_dir=str(tmp_path / "py"), augment=False)
    binary = load_dataset(variant, data_dir=str(tmp_path / "bin"), augment=False)
    n_train = 3 * len(v.python_files["train"])
    assert py.train_x.shape == (n_train, 3, 32, 32) and py.test_x.shape == (4, 3, 32, 32)
    assert py.input_shape == (3, 32, 32) and py.num_classes == v.num_classes and py.augment is None
    for split, x, y in (("train", py.train_x, py.train_y), ("test", py.test_x, py.test_y)):
        images, labels = written[split]
        assert y.tolist() == labels.tolist()  # fine labels for CIFAR-100
        expected = (images[:, 1, 5, 7] / 255.0 - v.mean[1]) / v.std[1]
        assert np.allclose(x[:, 1, 5, 7].numpy(), expected, atol=1e-6)
    for a, b in (
        (py.train_x, binary.train_x),
        (py.train_y, binary.train_y),
        (py.test_x, binary.test_x),
    ):
        assert torch.equal(a, b)
    small = load_dataset(variant, data_dir=str(tmp_path / "bin"), limit_train=2, limit_test=1)
    assert (small.num_train, small.num_test) == (2, 1) and isinstance(small.augment, RandomCropFlip)


def test_cifar_errors_are_one_line_and_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "cifar-10-batches-py" in _one_line(exc) and "cifar-10-batches-bin" in str(exc.value)
    write_cifar(tmp_path, "cifar10", "binary")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetError, match="data_batch_3.bin"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="3073-byte"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="limit_train"):
        load_dataset("cifar100", data_dir=str(tmp_path), limit_train=0)


class _Evil:
    """Unpickling this calls ``func(arg)``: what a hostile file in data_dir would do."""

    def __init__(self, func, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", "python")
    marker = tmp_path / "pwned"
    batch = {
        "data": np.zeros((1, 3072), np.uint8),
        "labels": [0],
        "x": _Evil(os.system, f"touch {marker}"),
    }
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert (
        "data_batch_2" in _one_line(exc)
        and "refused" in str(exc.value)
        and "system" in str(exc.value)
    )
    assert not marker.exists()
    (tmp_path / "eval.pkl").write_bytes(pickle.dumps(_Evil(eval, "print('pwned')"), protocol=5))
    with pytest.raises(UnsafePickleError):
        load_restricted(tmp_path / "eval.pkl")


def test_random_crop_flip_is_deterministic_and_a_real_crop() -> None:
    aug = RandomCropFlip(4, (-1.0, -2.0, -3.0))
    x = torch.randn(16, 3, 32, 32)
    a, b = aug(x, torch.Generator().manual_seed(7)), aug(x, torch.Generator().manual_seed(7))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(8)))
    padded = torch.stack(
        [torch.full((40, 40), -1.0), torch.full((40, 40), -2.0), torch.full((40, 40), -3.0)]
    )
    for i in range(16):  # each output is some crop of the padded image, possibly mirrored
        canvas = padded.clone()
        canvas[:, 4:36, 4:36] = x[i]
        crops = [canvas[:, r : r + 32, c : c + 32] for r in range(9) for c in range(9)]
        assert any(torch.equal(a[i], crop) or torch.equal(a[i], crop.flip(-1)) for crop in crops)


# ------------------------------------------------------------------------------ ImageFolder


def test_imagefolder_decodes_resizes_and_labels(tmp_path: Path) -> None:
    write_imagefolder(tmp_path)
    d = load_dataset("imagefolder", data_dir=str(tmp_path), image_size=8, augment=False)
    assert d.train_x.shape == (5, 3, 8, 8) and d.test_x.shape == (2, 3, 8, 8) and d.num_classes == 2
    assert d.train_y.tolist() == [0, 0, 0, 1, 1] and d.test_y.tolist() == [0, 1]  # a_dog < b_cat
    red = torch.tensor(
        [(1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1]]
    )
    assert torch.allclose(
        d.train_x[0, :2], red.view(2, 1, 1).expand(2, 8, 8), atol=0.02
    )  # JPEGs: near
    limited = load_dataset("imagefolder", data_dir=str(tmp_path), image_size=8, limit_per_class=1)
    assert limited.num_train == 2 and isinstance(limited.augment, RandomCropFlip)
    assert limited.augment(limited.train_x, torch.Generator().manual_seed(0)).shape == (2, 3, 8, 8)


def test_imagefolder_center_crops_the_short_side(tmp_path: Path) -> None:
    half = np.zeros((8, 16, 3), np.uint8)
    half[:, :8, 0], half[:, 8:, 2] = 255, 255  # left half red, right half blue
    for split in ("train", "val"):
        (tmp_path / split / "c").mkdir(parents=True)
        Image.fromarray(half).save(tmp_path / split / "c" / "x.png")
    x = load_dataset("imagefolder", data_dir=str(tmp_path), image_size=8, augment=False).train_x[0]
    assert (x[0, :, :3] > 2).all() and (x[2, :, 5:] > 2).all()  # crop = columns 4..11


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("imagefolder", data_dir=str(tmp_path), path="in100")
    assert str(tmp_path / "in100" / "train") in _one_line(exc)
    write_imagefolder(tmp_path / "in100")
    (tmp_path / "in100" / "val" / "zebra").mkdir()
    with pytest.raises(DatasetError, match="zebra"):
        load_dataset("imagefolder", data_dir=str(tmp_path), path="in100")
    (tmp_path / "in100" / "val" / "zebra").rmdir()
    (tmp_path / "in100" / "train" / "b_cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset("imagefolder", data_dir=str(tmp_path), path="in100")
