"""Teacher-student synthetic classification: a tunable, download-free benchmark."""

from __future__ import annotations

import math

import torch

from .base import DataSplits, positive_int


def load_teacher_student(
    *,
    data_dir: str | None = None,
    dim: int = 32,
    num_classes: int = 10,
    n_train: int = 4096,
    n_test: int = 1024,
    teacher_hidden: int = 64,
    teacher_seed: int = 0,
) -> DataSplits:
    """Gaussian inputs labelled by the argmax of a random teacher MLP's logits.

    Everything is drawn from a private generator seeded with `teacher_seed`, so the task is
    identical across trials. The teacher's logits are centred and scaled per class (using
    the training inputs) before the argmax; otherwise a random bias makes one class dominate.
    `data_dir` is ignored.
    """
    name = "teacher_student"
    dim = positive_int(name, "dim", dim)
    num_classes = positive_int(name, "num_classes", num_classes)
    n_train = positive_int(name, "n_train", n_train)
    n_test = positive_int(name, "n_test", n_test)
    teacher_hidden = positive_int(name, "teacher_hidden", teacher_hidden)
    g = torch.Generator().manual_seed(int(teacher_seed))

    x = torch.randn(n_train + n_test, dim, generator=g)
    w1 = torch.randn(dim, teacher_hidden, generator=g) / math.sqrt(dim)
    b1 = 0.1 * torch.randn(teacher_hidden, generator=g)
    w2 = torch.randn(teacher_hidden, num_classes, generator=g) / math.sqrt(teacher_hidden)
    logits = torch.tanh(x @ w1 + b1) @ w2
    ref = logits[:n_train]
    logits = (logits - ref.mean(0)) / ref.std(0).clamp_min(1e-6)
    y = logits.argmax(dim=1).to(torch.int64)

    return DataSplits(
        train_x=x[:n_train].contiguous(),
        train_y=y[:n_train].contiguous(),
        test_x=x[n_train:].contiguous(),
        test_y=y[n_train:].contiguous(),
        num_classes=num_classes,
        input_shape=(dim,),
        name=name,
    )
