"""Section 2: peak tensor memory of one training step relative to inference.

``trainers.metering.track_peak_memory`` as ``run_trial`` uses it on its first step: live
tensor storages (parameters, gradients, optimizer state created in the step, activations,
temporaries), not RSS. INT8 fake-quantized weights. Deterministic, so each count is taken once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import Bar, Section, Table, fmt_bytes
from trainers.data import load_dataset
from trainers.estimators import build_estimator
from trainers.metering import measure_cost, track_peak_memory
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model
from trainers.tasks import classification_loss, token_loss

KEY = "memory"
TITLE = "2. Peak memory of a step (live tensor bytes)"
INPLACE_BAR = 1.15
ARMS = {  # label: (estimator, optimizer); no estimator = inference: forward + loss, no_grad
    "inference": (None, None),
    "MeZO": ("mezo", None),
    "QuZO": ("quzo", None),
    "STE + SGD(momentum)": ("ste", lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.9)),
    "STE + Adam": ("ste", lambda ps: torch.optim.Adam(ps, lr=1e-4)),
}


@dataclass
class Case:
    label: str
    model: str
    options: dict
    dataset: str  # "digits", "text", or "random<side>" (CIFAR-shaped noise)
    batch: int
    seq_len: int = 64


SMALL = {"size": "small"}
QUICK = [
    Case("MLP 64-10-10 (digits, batch 64)", "mlp", {}, "digits", 64),
    Case("CNN w16 (3x16x16, batch 4; stands in for ResNet-18)", "cnn", {}, "random16", 4),
    Case("LLaMA tiny (text, batch 4 x 32 tokens)", "llama", {"size": "tiny"}, "text", 4, 32),
]
FULL = [
    Case("MLP 64-10-10 (digits, batch 64)", "mlp", {}, "digits", 64),
    Case("ResNet-18 w64 (3x32x32, batch 32)", "resnet18", {"width": 64}, "random32", 32),
    Case("LLaMA small (dim 256, depth 4; text, batch 16 x 64 tokens)", "llama", SMALL, "text", 16),
    Case("LLaMA small (dim 256, depth 4; text, batch 2 x 64 tokens)", "llama", SMALL, "text", 2),
]


def _setup(case: Case):
    torch.manual_seed(0)
    if case.dataset.startswith("random"):
        side = int(case.dataset.removeprefix("random"))
        shape, classes, loss_fn = (3, side, side), 10, classification_loss
        x, y = torch.randn(case.batch, *shape), torch.randint(0, classes, (case.batch,))
    else:
        text = case.dataset == "text"
        options = {"seq_len": case.seq_len, "n_train": max(256, case.batch), "n_test": 16}
        data = load_dataset(case.dataset, **(options if text else {}))
        x, y = data.train_x[: case.batch], data.train_y[: case.batch]
        shape, classes = data.input_shape, data.num_classes
        loss_fn = token_loss if text else classification_loss
    model = build_model(case.model, shape, classes, **case.options)
    quantize_model(model, QuantSpec(kind="int", bits=8))
    model.train()
    return model, (x, y), loss_fn


def measure(case: Case, log) -> dict[str, int]:
    """Peak bytes of each arm's first step, each on its own copy of the model."""
    base, batch, loss_fn = _setup(case)
    cost = measure_cost(base, loss_fn, batch)
    peaks = {"params": sum(p.numel() * p.element_size() for p in base.parameters())}
    for label, (name, opt) in ARMS.items():
        model = copy.deepcopy(base)
        estimator = None if name is None else build_estimator(name, {}, cost, seed=0, lr=1e-4)
        if estimator is not None:
            estimator.prepare(model)
        optimizer = opt(model.parameters()) if opt else None

        def step(model=model, estimator=estimator, optimizer=optimizer):
            if estimator is None:
                with torch.no_grad():
                    return loss_fn(model(batch[0]), batch[1])
            estimator.step(model, loss_fn, batch, 0.0)
            if optimizer is not None:
                optimizer.step()

        objects = [m for m in (model, optimizer) if m is not None]
        _, peaks[label] = track_peak_memory(step, objects, torch.device("cpu"))
        log(f"  {case.label}: {label} {fmt_bytes(peaks[label])}")
    return peaks


def run(quick: bool, workdir: Path, log=print) -> Section:
    rows, bars, measurements = [], [], {}
    for case in QUICK if quick else FULL:
        peaks = measure(case, log)
        inf = peaks["inference"]
        row = [case.label, fmt_bytes(peaks["params"]), fmt_bytes(inf)]
        row += [f"{fmt_bytes(peaks[k])} ({peaks[k] / inf:.2f}x)" for k in list(ARMS)[1:]]
        rows.append(row + [f"{peaks['STE + Adam'] / peaks['QuZO']:.2f}"])
        bars += [
            Bar(f"§2 {k} peak / inference peak, {case.label}", peaks[k] / inf, INPLACE_BAR)
            for k in ("MeZO", "QuZO")
        ]
        measurements[case.label] = peaks
    header = ["model", "parameters", *ARMS, "STE + Adam / QuZO"]
    table = Table("Peak live tensor bytes of one step (/ inference)", header, rows)
    return Section(KEY, TITLE, [table], bars, measurements)
