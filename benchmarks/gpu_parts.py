"""GPU parts 1-2. Agreement: the same trial on the CPU and the device (fp32, TF32 off), and one
n-SPSA estimate with the same directions. Step cost: every registered estimator's step against
an STE step (interleaved ratio, CUDA-synchronized, lr 0) and its peak memory vs inference."""

from __future__ import annotations

import copy
import gc
import math
import time
from statistics import median
from typing import Any

import torch

from benchmarks.common import Bar, Ratio, Table, fmt_bytes, fmt_s, ratio
from trainers import run_trial
from trainers.data import load_dataset
from trainers.estimators import ESTIMATORS, build_estimator
from trainers.estimators.perturb import perturbation_plan, sample_directions, zo_gradient
from trainers.metering import measure_cost, track_peak_memory
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model
from trainers.tasks import classification_loss, token_loss

Part = tuple[list[Table], list[Bar], dict[str, Any]]
REL_BAR, ZO_N, NAN = 1e-3, 8, math.nan  # REL_BAR: CPU vs device, fp32 with TF32 off
NOISELESS = ("ste",)  # draw no random numbers, so their whole curves must agree
ZO_HEAD = "mean perturbed loss|estimate (L2)|perturbation scales (max)|error"
COST_HEAD = "estimator|forwards / backwards|step / STE (wall)|step (abs.)|peak memory|peak / "
COST_HEAD += "inference|error"
FOGZO_BAR, INPLACE_MEMORY_BAR = 1.8, 1.15  # as sections 1 (FOGZO / STE) and 2 (MeZO, QuZO)


def gbar(name: str, value: float, limit: float, op: str = "<=") -> Bar:
    return Bar(f"§GPU {name}", value, limit, op)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def attempt(fn, deadline: float = math.inf) -> dict:
    """``fn()``, or why not: a failing estimator is a row of the table, not a crashed part.
    Its tensors are freed before the next one runs."""
    if time.monotonic() > deadline:
        return {"error": "not run: the part's time limit was reached"}
    try:
        return fn()
    except Exception as err:
        return {"error": first_line(err)}
    finally:
        gc.collect()
        torch.cuda.empty_cache()  # a no-op without CUDA


def rel_diff(a: list[float], b: list[float]) -> list[float]:
    """[max absolute, max relative] difference of two equally long series."""
    pairs = [(x, y) for x, y in zip(a, b) if not (math.isnan(x) and math.isnan(y))]
    if not pairs or len(a) != len(b):
        return [NAN, NAN]
    return [max(c) for c in zip(*[(abs(x - y), abs(x - y) / max(abs(x), 1e-12)) for x, y in pairs])]


def _trial_agreement(name: str, device: torch.device, steps: int) -> dict:
    """run_trial on both devices: MLP on digits, INT4, seed 0, an evaluation after each step."""
    config = {"estimator": name, "model": "mlp", "dataset": "digits", "bits": 4, "seed": 0}
    curves = []
    for dev in ("cpu", device.type):
        reports: list[dict] = []
        trial = {**config, "steps": steps, "num_evals": steps, "threads": 1, "device": dev}
        run_trial(trial, lambda metrics, _r=reports, **_: _r.append(dict(metrics)))
        curves.append(([r["train_loss"] for r in reports[1:]], [r["eval_loss"] for r in reports]))
    (train, evals), (dev_train, dev_evals) = curves
    diff = {"eval0": rel_diff(evals[:1], dev_evals[:1]), "train": rel_diff(train, dev_train)}
    return diff | {"eval": rel_diff(evals, dev_evals)}


def _same_directions(device: torch.device) -> dict:
    """One n-SPSA estimate on both devices, its directions drawn once on the CPU."""
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model("mlp", data.input_shape, data.num_classes)
    quantize_model(model, QuantSpec(kind="int", bits=4))
    batch = (data.train_x[:64], data.train_y[:64])
    flops = measure_cost(model, classification_loss, batch).forward_flops
    directions = sample_directions(
        perturbation_plan(model, "alpha", 1e-3), ZO_N, torch.Generator().manual_seed(0)
    )
    flat = lambda ts: torch.cat([t.detach().cpu().flatten() for t in ts])  # noqa: E731
    got = []
    for dev, m in (("cpu", model), (device, copy.deepcopy(model).to(device))):
        plan, draw = perturbation_plan(m, "alpha", 1e-3), [d.to(dev) for d in directions]
        b = tuple(t.to(dev) for t in batch)
        grads, loss = zo_gradient(
            m, classification_loss, b, plan, ZO_N, lambda k, d=draw: d, 64, flops
        )
        got.append((flat(grads), loss, flat(p.eps.expand_as(p.param) for p in plan)))
    (g, loss, eps), (dev_g, dev_loss, dev_eps) = got
    return {
        "loss_rel": abs(loss - dev_loss) / abs(loss),
        "grad_rel": float((g - dev_g).norm() / g.norm()),
        "eps_rel": float(((eps - dev_eps).abs() / eps.abs()).max()),
    }


def agreement(device: torch.device, dry_run: bool, log) -> Part:
    steps, dev = (3 if dry_run else 10), device.type
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    saved = [torch.get_num_threads()] + [f.allow_tf32 for f in flags]
    for f in flags:
        f.allow_tf32 = False
    try:
        rows = {n: attempt(lambda n=n: _trial_agreement(n, device, steps)) for n in ESTIMATORS}
        zo = attempt(lambda: _same_directions(device))
    finally:  # run_trial's `threads: 1` set the process's torch threads
        torch.set_num_threads(saved[0])
        for f, allow in zip(flags, saved[1:]):
            f.allow_tf32 = allow
    log(f"  agreement: {rows}; same directions: {zo}")
    ran = [r for r in rows.values() if "error" not in r]
    worst = lambda v: math.inf if math.isnan(v) else v  # noqa: E731
    initial = max((r["eval0"][1] for r in ran), key=worst, default=NAN)
    bars = [
        gbar(f"estimators whose trial runs on {dev} (of {len(rows)})", len(ran), len(rows), ">="),
        gbar(f"initial eval loss, {dev} vs cpu, max rel diff", initial, REL_BAR),
    ]
    for n in NOISELESS:
        name = f"{n} train-loss curve ({steps} steps), {dev} vs cpu, max rel diff"
        bars.append(gbar(name, rows[n].get("train", [NAN, NAN])[1], REL_BAR))
    zo_name = f"n-SPSA estimate (n={ZO_N}, same directions), {dev} vs cpu, rel L2 diff"
    bars.append(gbar(zo_name, zo.get("grad_rel", NAN), REL_BAR))
    pair = lambda r, k: f"{r[k][0]:.2e} / {r[k][1]:.2e}" if k in r else "—"  # noqa: E731
    trials = [
        [f"`{n}`", *(pair(r, k) for k in ("eval0", "train", "eval")), r.get("error", "")]
        for n, r in rows.items()
    ]
    zo_row = [f"{zo[k]:.2e}" if k in zo else "—" for k in ("loss_rel", "grad_rel", "eps_rel")]
    caption = f"CPU vs {dev}: the same trial's first {steps} steps (MLP, digits, INT4, seed 0)"
    head = "estimator|initial eval loss|train loss, every step|eval loss, every step|error"
    zo_caption = f"One n-SPSA estimate (n = {ZO_N}) with the same directions, {dev} vs cpu"
    tables = [
        Table(caption + ", fp32, TF32 off: max abs / max rel diff", head.split("|"), trials),
        Table(zo_caption + ": rel diff", ZO_HEAD.split("|"), [[*zo_row, zo.get("error", "")]]),
    ]
    return tables, bars, {"agreement": rows, "same_directions": zo}


# By dry run: (label, model, options, batch, image side or tokens), on random CIFAR-shaped
# images or the byte-level text bundled with the repo (nothing downloaded).
LLAMA_SMALL = "LLaMA small (dim 256, depth 4; text, batch 16 x 128 tokens)"
CASES = {
    False: [
        ("ResNet-18 w64 (3x32x32 random, batch 64)", "resnet18", {"width": 64}, 64, 32),
        (LLAMA_SMALL, "llama", {"size": "small"}, 16, 128),
    ],
    True: [
        ("ResNet-18 w4 (3x8x8 random, batch 2)", "resnet18", {"width": 4}, 2, 8),
        ("LLaMA tiny (text, batch 2 x 32 tokens)", "llama", {"size": "tiny"}, 2, 32),
    ],
}


def _setup(name: str, options: dict, size: int, side: int, device: torch.device):
    torch.manual_seed(0)
    if name == "llama":
        data = load_dataset("text", seq_len=side, n_train=max(64, size), n_test=16)
        shape, classes, loss_fn = data.input_shape, data.num_classes, token_loss
        batch = (data.train_x[:size], data.train_y[:size])
    else:
        shape, classes, loss_fn = (3, side, side), 10, classification_loss
        batch = (torch.randn(size, *shape), torch.randint(0, classes, (size,)))
    model = build_model(name, shape, classes, **options)
    quantize_model(model, QuantSpec(kind="int", bits=4))
    return model.train(), tuple(t.to(device) for t in batch), loss_fn


def _case_cost(case: tuple, device: torch.device, reps: int, min_time: float, deadline) -> dict:
    base, batch, loss_fn = _setup(*case[1:], device)
    probe = copy.deepcopy(base).to(device)
    cost = measure_cost(probe, loss_fn, batch)

    def inference():
        with torch.no_grad():
            return loss_fn(probe(batch[0]), batch[1])

    inference()
    out = {"params": sum(p.numel() for p in base.parameters())}
    out["inference_peak"] = track_peak_memory(inference, [probe], device)[1]
    probe = None  # freed by the first attempt

    def stepper(name: str):
        """A step (+ SGD as in run_trial if it fills gradients) on its own model copy, lr 0 so
        it does not drift, synchronized so the kernels are timed, not the launch queue."""
        model = copy.deepcopy(base).to(device)
        estimator = build_estimator(name, {}, cost, seed=0, lr=0.0)
        estimator.prepare(model)
        opt = [] if estimator.updates_in_place else [torch.optim.SGD(model.parameters(), 0.0, 0.9)]

        def step():
            result = estimator.step(model, loss_fn, batch, 0.5)
            for o in opt:
                o.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return result

        return step, [model, *opt]

    def peak(name: str) -> dict:  # pass 1: only this estimator's copy on the device
        step, objects = stepper(name)
        (_, first), (result, second) = (track_peak_memory(step, objects, device) for _ in range(2))
        return {"peak": max(first, second), "fb": [result.forwards, result.backwards]}

    rows = out["rows"] = {n: attempt(lambda n=n: peak(n), deadline) for n in ESTIMATORS}
    if "error" in rows["ste"]:
        return out
    ste = stepper("ste")[0]  # pass 2, wall time: each estimator against STE, interleaved
    warm = 1 if device.type == "cpu" else 2  # first calls: cuDNN/cuBLAS plans, vmap tracing

    def wall(name: str) -> dict:
        step = ste if name == "ste" else stepper(name)[0]
        for _ in range(warm):
            step()
        r = ratio(step, ste, reps, min_time=min_time)
        return {"vs_ste": r.ratios, "step_s": median(r.a), "ste_s": median(r.b)}

    for _ in range(warm):
        ste()
    for name, row in rows.items():
        if "error" not in row:
            row |= attempt(lambda n=name: wall(n), deadline)
    return out


def _cost_row(name: str, r: dict, inference_peak: int) -> list[str]:
    if "peak" not in r:
        return [f"`{name}`", *["—"] * 5, r["error"]]
    vs, peak = Ratio(r.get("vs_ste", []), [], []).fmt(), fmt_bytes(r["peak"])
    cells = ["{} / {}".format(*r["fb"]), vs, fmt_s(r.get("step_s", NAN)), peak]
    return [f"`{name}`", *cells, f"{r['peak'] / inference_peak:.2f}x", r.get("error", "")]


def step_cost(device: torch.device, dry_run: bool, seconds: float, log) -> Part:
    reps, min_time = (2, 0.01) if dry_run else (7, 0.2)
    deadline = time.monotonic() + seconds
    tables, bars, measured = [], [], {}
    for case in CASES[dry_run]:
        label = case[0]
        m = measured[label] = _case_cost(case, device, reps, min_time, deadline)
        log(f"  {label}: {m}")
        rows, inf = m["rows"], max(m["inference_peak"], 1)
        ste_s = fmt_s(rows["ste"].get("ste_s", NAN))
        caption = f"{label}: {m['params']:,} parameters, inference peak {fmt_bytes(inf)}, "
        caption += f"STE step {ste_s}; {device}, {reps} interleaved reps of >= {min_time:g} s"
        table_rows = [_cost_row(n, r, inf) for n, r in rows.items()]
        tables.append(Table(caption, COST_HEAD.split("|"), table_rows))
        ok = sum("error" not in r for r in rows.values())
        bars.append(gbar(f"estimators that step on {device.type}, {label}", ok, len(rows), ">="))
        if "fogzo" in rows:
            fogzo = Ratio(rows["fogzo"].get("vs_ste", []), [], []).median
            bars.append(gbar(f"FOGZO n=1 / STE wall, {label}", fogzo, FOGZO_BAR))
        for n in [n for n in ("mezo", "quzo") if n in rows]:
            value = NAN if "error" in rows[n] else rows[n]["peak"] / inf
            bars.append(gbar(f"{n} peak / inference peak, {label}", value, INPLACE_MEMORY_BAR))
    return tables, bars, {"step_cost": measured, "reps": reps, "min_time_s": min_time}
