"""GPU section, part 2: step cost and CUDA peak memory of every registered estimator.

For each model, every estimator in ``trainers.estimators.ESTIMATORS`` (the registry, so a
plugin estimator gets its row too) runs with its default options on an INT4 fake-quantized
copy of the same model (lr 0, so the model does not drift between repetitions); STE and
FOGZO-like estimators are followed by an SGD(momentum) step as in ``run_trial``.

- *Wall time*: ``benchmarks.common.ratio`` of one step of the estimator against one STE
  step, interleaved with alternating order; each timed call ends with
  ``torch.cuda.synchronize()`` so the time is the kernels', not the launch queue's.
- *Peak memory*: ``trainers.metering.track_peak_memory`` as ``run_trial`` uses it on its
  first two steps (on CUDA: ``reset_peak_memory_stats`` / ``max_memory_allocated``), with
  only that estimator's model copy on the device; "inference" is one forward + loss under
  ``torch.no_grad()``.

An estimator whose step raises is reported with the exception's first line (the row says
so, and the section's bar on how many estimators run counts it).
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.common import Bar, Ratio, fmt_bytes, fmt_s, ratio, table
from trainers.data import load_dataset
from trainers.estimators import ESTIMATORS, build_estimator
from trainers.metering import measure_cost, track_peak_memory
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model
from trainers.tasks import classification_loss, token_loss

FOGZO_BAR = 1.8  # as section 1: (3F + B) / (F + B) plus a margin
INPLACE_MEMORY_BAR = 1.15  # as section 2: MeZO / QuZO peak <= 1.15x inference


@dataclass
class Case:
    label: str
    model: str
    options: dict
    data: str  # "image" (random CIFAR-shaped) or "text" (the bundled byte-level corpus)
    batch: int
    side: int = 32  # image side
    seq_len: int = 128


def cases(dry_run: bool) -> list[Case]:
    if dry_run:
        return [
            Case("ResNet-18 w4 (3x8x8 random, batch 2)", "resnet18", {"width": 4}, "image", 2, 8),
            Case(
                "LLaMA tiny (text, batch 2 x 32 tokens)",
                "llama",
                {"size": "tiny"},
                "text",
                2,
                seq_len=32,
            ),
        ]
    return [
        Case("ResNet-18 w64 (3x32x32 random, batch 64)", "resnet18", {"width": 64}, "image", 64),
        Case(
            "LLaMA small (dim 256, depth 4; text, batch 16 x 128 tokens)",
            "llama",
            {"size": "small"},
            "text",
            16,
            seq_len=128,
        ),
    ]


@dataclass
class Row:
    name: str
    forwards: int = 0
    backwards: int = 0
    peak: int = 0
    vs_ste: Ratio | None = None
    error: str = ""


@dataclass
class Measured:
    case: Case
    params: int = 0
    inference_peak: int = 0
    ste_s: float = float("nan")
    rows: dict[str, Row] = field(default_factory=dict)
    skipped: str = ""


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def _setup(case: Case):
    torch.manual_seed(0)
    if case.data == "text":
        data = load_dataset("text", seq_len=case.seq_len, n_train=max(64, case.batch), n_test=16)
        shape, classes, loss_fn = data.input_shape, data.num_classes, token_loss
        batch = (data.train_x[: case.batch], data.train_y[: case.batch])
    else:
        shape, classes, loss_fn = (3, case.side, case.side), 10, classification_loss
        batch = (torch.randn(case.batch, *shape), torch.randint(0, classes, (case.batch,)))
    model = build_model(case.model, shape, classes, **case.options)
    quantize_model(model, QuantSpec(kind="int", bits=4))
    model.train()
    return model, batch, loss_fn


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _stepper(name, model, batch, loss_fn, cost, device):
    """One training step of estimator ``name`` (+ SGD if it fills gradients), synchronized."""
    estimator = build_estimator(name, {}, cost, seed=0, lr=0.0)
    estimator.prepare(model)
    optimizer = (
        None
        if estimator.updates_in_place
        else torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    )
    sync = _sync(device)

    def step():
        result = estimator.step(model, loss_fn, batch, 0.5)
        if optimizer is not None:
            optimizer.step()
        sync()
        return result

    return step, [m for m in (model, optimizer) if m is not None]


def measure(
    case: Case, device: torch.device, reps: int, min_time: float, deadline: float, log
) -> Measured:
    base, batch_cpu, loss_fn = _setup(case)
    batch = tuple(t.to(device) for t in batch_cpu)
    out = Measured(case, params=sum(p.numel() for p in base.parameters()))
    probe = copy.deepcopy(base).to(device)
    cost = measure_cost(probe, loss_fn, batch)

    def inference():
        with torch.no_grad():
            return loss_fn(probe(batch[0]), batch[1])

    inference()
    _, out.inference_peak = track_peak_memory(inference, [probe], device)
    probe = None  # freed before the estimators run
    _free(device)
    # Pass 1, memory: one model copy on the device at a time, the max over two steps.
    for name in ESTIMATORS:
        row = out.rows[name] = Row(name)
        if time.monotonic() > deadline:
            row.error = "not run: the part's time limit was reached"
            continue
        model = copy.deepcopy(base).to(device)
        try:
            step, objects = _stepper(name, model, batch, loss_fn, cost, device)
            for _ in range(2):
                result, peak = track_peak_memory(step, objects, device)
                row.peak = max(row.peak, peak)
            row.forwards, row.backwards = result.forwards, result.backwards
            log(f"  {case.label}: {name} peak {fmt_bytes(row.peak)}")
        except Exception as err:  # reported in the table: which estimators fail on this device
            row.error = first_line(err)
            log(f"  {case.label}: {name} FAILED {row.error}")
        del model
        _free(device)
    # Pass 2, wall time: each estimator against STE, both copies on the device.
    if out.rows["ste"].error:
        out.skipped = "STE itself failed, so no ratios"
        return out
    ste, _ = _stepper("ste", copy.deepcopy(base).to(device), batch, loss_fn, cost, device)
    warm = 1 if device.type == "cpu" else 2
    for _ in range(warm):
        ste()
    for name, row in out.rows.items():
        if row.error:
            continue
        if time.monotonic() > deadline:
            row.error = "timing not run: the part's time limit was reached"
            continue
        step = ste
        try:
            if name != "ste":
                model = copy.deepcopy(base).to(device)
                step, _ = _stepper(name, model, batch, loss_fn, cost, device)
            for _ in range(warm):  # first calls: cuDNN/cuBLAS plans, vmap tracing
                step()
            row.vs_ste = ratio(step, ste, reps, min_time=min_time)
            log(f"  {case.label}: {name} / STE {row.vs_ste.fmt()}")
        except Exception as err:
            row.error = first_line(err)
        if name == "ste" and row.vs_ste is not None:
            out.ste_s = statistics.median(row.vs_ste.b)
        step = model = None
        _free(device)
    return out


def run(device: torch.device, dry_run: bool, seconds: float, log) -> tuple[list[str], list[Bar]]:
    """Measure every case within about ``seconds``; the Markdown lines and the bars."""
    reps, min_time = (2, 0.01) if dry_run else (7, 0.2)
    deadline = time.monotonic() + seconds
    measured = [measure(c, device, reps, min_time, deadline, log) for c in cases(dry_run)]
    return render(measured, device, reps, min_time)


def render(measured: list[Measured], device: torch.device, reps: int, min_time: float):
    bars: list[Bar] = []
    lines = [
        "### Step cost and peak memory of every registered estimator",
        "",
        f"Each estimator with its default options (`{', '.join(ESTIMATORS)}`: the registry "
        "`trainers.estimators.ESTIMATORS`), INT4 fake-quantized weights, lr 0; STE-like "
        "estimators followed by `SGD(momentum=0.9).step()` as in `run_trial`. *Step / STE*: "
        f"median (min–max) over {reps} interleaved repetitions, order alternating, each timing "
        f"≥ {min_time:g} s and every step ending in `torch.cuda.synchronize()` on CUDA. *Peak*: "
        "`trainers.metering.track_peak_memory` over the first two steps (on CUDA "
        "`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`), with only that "
        "estimator's model copy and the batch on the device; inference = forward + loss under "
        f"`no_grad`. Device: `{device}`.",
        "",
    ]
    for m in measured:
        ok = 0
        rows = []
        for row in m.rows.values():
            if row.error:
                rows.append([f"`{row.name}`", "—", "—", "—", "—", "—", f"**{row.error}**"])
                continue
            ok += 1
            rows.append(
                [
                    f"`{row.name}`",
                    f"{row.forwards} / {row.backwards}",
                    row.vs_ste.fmt() if row.vs_ste else "—",
                    fmt_s(statistics.median(row.vs_ste.a)) if row.vs_ste else "—",
                    fmt_bytes(row.peak),
                    f"{row.peak / max(m.inference_peak, 1):.2f}x",
                    "",
                ]
            )
        lines += [
            f"**{m.case.label}** — {m.params:,} parameters, inference peak "
            f"{fmt_bytes(m.inference_peak)}, STE step {fmt_s(m.ste_s)}"
            + (f"; {m.skipped}" if m.skipped else "")
            + ".",
            "",
            table(
                [
                    "estimator",
                    "forwards / backwards",
                    "step / STE (wall)",
                    "step (abs.)",
                    "peak memory",
                    "peak / inference",
                    "error",
                ],
                rows,
            ),
            "",
        ]
        bars.append(
            Bar(
                f"§GPU estimators that step on {device.type}, {m.case.label}",
                ok,
                len(m.rows),
                ">=",
            )
        )
        fogzo = m.rows.get("fogzo")
        if fogzo is not None:
            value = fogzo.vs_ste.median if fogzo.vs_ste else float("nan")
            bars.append(Bar(f"§GPU FOGZO n=1 / STE wall, {m.case.label}", value, FOGZO_BAR))
        for name in ("mezo", "quzo"):
            row = m.rows.get(name)
            if row is not None:
                value = row.peak / m.inference_peak if not row.error else float("nan")
                bars.append(
                    Bar(
                        f"§GPU {name} peak / inference peak, {m.case.label}",
                        value,
                        INPLACE_MEMORY_BAR,
                    )
                )
    return lines, bars
