"""ImageNet-style class folders (e.g. ImageNet-100 subsets) decoded into memory at small size.

Layout: ``<data_dir>/<path>/{train,val}/<class>/*.{jpg,jpeg,png}``; classes are the
``train`` sub-folders sorted by name (label = position), as torchvision's ImageFolder
does, so labels agree with it. Every image is decoded once with PIL, resized so its
short side is ``image_size`` and center-cropped (torchvision's ``Resize`` +
``CenterCrop``), and kept as a normalised tensor: the trial loop then indexes memory,
which keeps zeroth-order steps (many forwards per batch) cheap. At 64 px ImageNet-100
is ~6.4 GB in float32; ``limit_per_class`` makes smaller subsets.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .augment import RandomCropFlip, normalised_black
from .base import DatasetError, DataSplits, make_splits, positive_int, subsample

EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_image(path: Path, size: int) -> np.ndarray:
    """RGB ``(3, size, size)`` uint8: short side resized to ``size`` (bilinear, antialiased
    by PIL), then center crop, with torchvision's rounding."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size (fast)
            img = img.convert("RGB")
            w, h = img.size
            if w <= h:
                new_w, new_h = size, int(size * h / w)
            else:
                new_w, new_h = int(size * w / h), size
            if (new_w, new_h) != (w, h):
                img = img.resize((new_w, new_h), Image.BILINEAR)
            top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"imagefolder: cannot decode image {path} ({err})") from None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _scan(
    split_dir: Path, classes: list[str] | None, limit: int | None
) -> tuple[list[str], list[Path], list[int]]:
    """Classes (train's when given) and the (limited) image files with their labels."""
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if classes is None:
        classes = found
        if not classes:
            raise DatasetError(
                f"imagefolder: no class folders in {split_dir} — expected "
                f"{split_dir}/<class>/*.jpg|jpeg|png"
            )
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetError(
            f"imagefolder: {split_dir} has class folder(s) {', '.join(unknown[:5])} "
            f"that {split_dir.parent / 'train'} lacks"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        if not (split_dir / name).is_dir():
            continue
        files = _images(split_dir / name)
        if not files and split_dir.name == "train":
            raise DatasetError(
                f"imagefolder: class folder {split_dir / name} has no {'/'.join(EXTENSIONS)} images"
            )
        keep = subsample(len(files), limit)
        paths += [files[i] for i in keep]
        labels += [label] * len(keep)
    if not paths:
        raise DatasetError(f"imagefolder: no {'/'.join(EXTENSIONS)} images under {split_dir}")
    return classes, paths, labels


def _decode_all(paths: list[Path], size: int) -> np.ndarray:
    """Decode in threads: PIL releases the GIL while decoding and resizing."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(lambda p: decode_image(p, size), paths, chunksize=64)))


def load_imagefolder(
    *,
    data_dir: str | None = None,
    path: str = "",
    image_size: int = 64,
    limit_per_class: int | None = None,
    augment: bool = True,
) -> DataSplits:
    """Train/val class folders under ``<data_dir>/<path>`` as ``image_size`` px tensors.

    ``limit_per_class`` keeps a fixed-seed subset of each class in both splits.
    Normalised with the ImageNet mean/std; ``augment`` adds random crop (padding
    ``image_size // 8``, the CIFAR ratio) + horizontal flip to training batches.
    """
    size = positive_int("imagefolder", "image_size", image_size)
    limit = (
        None
        if limit_per_class is None
        else positive_int("imagefolder", "limit_per_class", limit_per_class)
    )
    if not isinstance(augment, bool):
        raise DatasetError(f"imagefolder: option augment={augment!r} must be true or false")
    if not isinstance(path, str):
        raise DatasetError(f"imagefolder: option path={path!r} must be a string")
    if data_dir is None:
        raise DatasetError(
            "imagefolder: data_dir is required — <data_dir>/<path>/{train,val}/<class>/ "
            "must hold the images"
        )
    root = Path(data_dir).expanduser() / path
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"imagefolder: expected folder {root / split} with one sub-folder "
                f"of images per class (set data_dir and path)"
            )
    classes, train_paths, train_labels = _scan(root / "train", None, limit)
    _, val_paths, val_labels = _scan(root / "val", classes, limit)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    arrays = [
        ((_decode_all(paths, size).astype(np.float32) / 255.0 - mean) / std, np.array(labels))
        for paths, labels in ((train_paths, train_labels), (val_paths, val_labels))
    ]
    splits = make_splits("imagefolder", *arrays[0], *arrays[1], num_classes=len(classes))
    if not augment:
        return splits
    fill = normalised_black(IMAGENET_MEAN, IMAGENET_STD)
    return dataclasses.replace(splits, augment=RandomCropFlip(max(1, size // 8), fill))
