"""Section 1: wall time of one estimator step relative to an STE step or to forwards.

Each case runs in a fresh process with one torch thread; every ratio is interleaved
(``common.ratio``). Weights are INT4 fake-quantized; STE and FOGZO steps include SGD (lr 0),
MeZO and QuZO update in place (lr 0), so the model does not drift between repetitions.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    Bar,
    Ratio,
    Section,
    Table,
    fmt_s,
    profile_table,
    ratio,
    run_json_worker,
)
from trainers.data import load_dataset
from trainers.estimators import NSPSAConfig, build_estimator, perturb
from trainers.estimators.base import trainable_parameters
from trainers.estimators.quzo import rounded_noise
from trainers.estimators.seeded import add_noise_, gaussian_noise
from trainers.metering import measure_cost
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model, quantized_layers
from trainers.tasks import classification_loss

KEY = "estimator_cost"
TITLE = "1. Estimator step cost (wall-time ratios, 1 torch thread)"
REPO = Path(__file__).resolve().parents[1]
MARK = "ESTIMATOR_COST_JSON "
FOGZO_BAR, INPLACE_BAR, NSPSA_BAR = 1.8, 2.2, 1.1
NSPSA_CHUNK = NSPSAConfig().chunk  # directions per evaluation chunk (the default)
CPU = torch.device("cpu")
K = 3  # forwards per timing of a forward denominator (``ratio`` repeats cheap ones further)


@dataclass
class Case:
    label: str
    model: str
    options: dict
    input_shape: tuple[int, ...]
    batch: int
    reps: int  # repetitions of the cheap ratios (FOGZO/STE, MeZO, QuZO, n-SPSA n=8)
    heavy_reps: int  # of the expensive ones (n-SPSA n=32, loop vs vmap on the deep nets)
    ns: tuple[int, ...] = (8, 32)
    vmap_ns: tuple[int, ...] = (8, 32)  # n at which loop vs vmap is timed

    @property
    def cheap(self) -> bool:
        return self.model in ("mlp", "cnn")


MLP, RESNET, DEIT = "MLP 64-10-10 (digits, batch 64)", {"width": 64}, {"patch_size": 4, "depth": 6}
S16, S32 = (3, 16, 16), (3, 32, 32)
QUICK = [
    Case(MLP, "mlp", {}, (64,), 64, 2, 2, (8,), (8,)),
    Case("CNN w16 (3x16x16, batch 8)", "cnn", {}, S16, 8, 2, 2, (8,), (8,)),
    Case("ResNet-18 w8 (3x16x16, batch 4)", "resnet18", {"width": 8}, S16, 4, 2, 2, (8,), ()),
    Case("DeiT-Tiny depth 1 (3x16x16, patch 4, batch 4)", "deit_tiny",
         {"patch_size": 4, "depth": 1}, S16, 4, 2, 2, (8,), ()),
]  # fmt: skip
FULL = [
    Case(MLP, "mlp", {}, (64,), 64, 7, 7),
    Case("CNN w16 (3x32x32, batch 32)", "cnn", {}, S32, 32, 7, 5),
    # n=32 under vmap not timed on the deep nets: about a minute per call.
    Case("ResNet-18 w64 (3x32x32, batch 32)", "resnet18", RESNET, S32, 32, 5, 2, vmap_ns=(8,)),
    Case("DeiT-Tiny depth 6 (3x32x32, patch 4, batch 32)", "deit_tiny", DEIT, S32, 32, 5, 2,
         vmap_ns=(8,)),
    # 4x the forward FLOPs per parameter; n-SPSA left out (minutes per step).
    Case("ResNet-18 w64 (3x32x32, batch 128)", "resnet18", RESNET, S32, 128, 3, 1, (), ()),
    Case("DeiT-Tiny depth 6 (3x32x32, patch 4, batch 128)", "deit_tiny", DEIT, S32, 128, 3, 1,
         (), ()),
]  # fmt: skip
MAIN_HEADER = (
    "model|forward|STE step|FOGZO n=1 / STE (wall)|FOGZO / STE (FLOPs)|"
    "FOGZO − STE, in forwards (ideal 2)|MeZO / forward|MeZO noise pass / forward|2 + 3 × pass|"
    "QuZO / forward|QuZO noise pass / forward|reps"
).split("|")
NSPSA_HEADER = ["model", "n", "step / 2n forwards", "step (approx.)", "path", "loop / vmap", "reps"]


def _setup(case: Case):
    torch.manual_seed(0)
    if case.model == "mlp":
        data = load_dataset("digits")
        x, y = data.train_x[: case.batch], data.train_y[: case.batch]
    else:
        x, y = torch.randn(case.batch, *case.input_shape), torch.randint(0, 10, (case.batch,))
    model = build_model(case.model, case.input_shape, 10, **case.options)
    quantize_model(model, QuantSpec(kind="int", bits=4))
    model.train()
    return model, (x, y)


def _stepper(name: str, options: dict, model, batch, cost):
    """One training step as ``run_trial`` takes it (the optimizer after non-in-place ones)."""
    estimator = build_estimator(name, options, cost, seed=0, lr=0.0)
    estimator.prepare(model)
    optimizer = None
    if not estimator.updates_in_place:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def step():
        result = estimator.step(model, classification_loss, batch, 0.5)
        if optimizer is not None:
            optimizer.step()
        return result

    return step


def measure(case: Case, quick: bool) -> dict[str, Any]:
    """Every ratio of one case (run in the worker process)."""
    min_time = 0.02 if quick else 0.2
    base, batch = _setup(case)
    cost = measure_cost(base, classification_loss, batch)
    models = {name: copy.deepcopy(base) for name in ("ste", "fogzo", "mezo", "quzo", "nspsa")}

    def forwards(model=base):
        for _ in range(K):
            with torch.no_grad():
                classification_loss(model(batch[0]), batch[1])

    def per_forward(fn, model=base, reps=case.reps, warmup=1, forwards_per_call=1):
        return ratio(fn, lambda: forwards(model), reps, warmup, forwards_per_call / K, min_time)

    steps = {"ste": _stepper("ste", {}, models["ste"], batch, cost)}
    steps["fogzo"] = _stepper("fogzo", {"n": 1}, models["fogzo"], batch, cost)
    flops_ratio = steps["fogzo"]().flops / steps["ste"]().flops
    r = {"fogzo": ratio(steps["fogzo"], steps["ste"], case.reps, min_time=min_time)}
    for name in ("mezo", "quzo"):
        steps[name] = _stepper(name, {}, models[name], batch, cost)
        r[name] = per_forward(steps[name], models[name])
    params = [p for _, p in trainable_parameters(models["mezo"])]
    quantized = {id(layer.weight) for _, layer in quantized_layers(models["quzo"])}
    qparams = [p for _, p in trainable_parameters(models["quzo"])]

    def rounded_pass():
        noise = rounded_noise(1234, 5678, 8, quantized)
        for i, p in enumerate(qparams):
            noise(i, p)

    r["gauss_pass"] = per_forward(lambda: add_noise_(params, gaussian_noise(1234), 0.0))
    r["rounded_pass"] = per_forward(rounded_pass)
    for i, n in enumerate(case.ns):
        steps[f"nspsa {n}"] = _stepper("nspsa", {"n": n}, models["nspsa"], batch, cost)
        warmup = 1 if i == 0 or case.cheap else 0
        reps = case.reps if n <= 8 else case.heavy_reps
        r[f"nspsa {n}"] = per_forward(steps[f"nspsa {n}"], base, reps, warmup, 2 * n)
    r |= _loop_vs_vmap(case, base, batch, min_time)
    return {
        "forward_s": statistics.median(r["mezo"].b),
        "ste_s": statistics.median(r["fogzo"].b),
        "forward_flops": cost.forward_flops,
        "params": sum(p.numel() for p in base.parameters()),
        "flops_ratio": flops_ratio,
        "ratios": {name: asdict(v) for name, v in r.items()},
        "profiles": [] if quick else [asdict(t) for t in _profiles(case, r, steps)],
    }


def _loop_vs_vmap(case: Case, base, batch, min_time: float) -> dict[str, Ratio]:
    """The Python loop of forwards / one vmapped call, on the same 2n perturbed losses."""
    plan = perturb.perturbation_plan(base, "alpha", 1e-3)
    names, values = [p.name for p in plan], {p.name: p.param.detach() for p in plan}
    out = {}
    for n in case.vmap_ns:
        directions = perturb.sample_directions(plan, n, torch.Generator().manual_seed(0))
        deltas = [torch.cat([p.eps * d, -p.eps * d]) for p, d in zip(plan, directions)]

        def looped(deltas=deltas):
            with torch.no_grad():
                perturb._loop_losses(base, classification_loss, batch, names, values, deltas)

        def batched(deltas=deltas):
            perturb.perturbed_losses(base, classification_loss, batch, plan, deltas, batched=True)

        reps, warmup = (case.reps, 1) if case.cheap else (case.heavy_reps, 0)
        out[f"vmap {n}"] = ratio(looped, batched, reps, warmup, min_time=min_time)
        del deltas
    return out


def _profiles(case: Case, r: dict[str, Ratio], steps: dict) -> list[Table]:
    """A cProfile of about 2 s of steps of each estimator whose bar this case misses."""
    limits = {"fogzo": FOGZO_BAR, "mezo": INPLACE_BAR, "quzo": INPLACE_BAR}
    missed = [k for k in limits if r[k].median > limits[k]]
    missed += [k for k in r if k.startswith("nspsa") and r[k].median > NSPSA_BAR][:1]
    tables = []
    for name in missed:
        step, times = steps[name], min(200, math.ceil(2 / statistics.median(r[name].a)))
        caption = f"{case.label}: {times} {name} step(s), cProfile by cumulative time"
        tables.append(profile_table(caption, lambda s=step, t=times: [s() for _ in range(t)], 13))
    return tables


def run(quick: bool, workdir: Path, log=print) -> Section:
    """Each case in a fresh process: a step's cost depends on the allocator's history, and a
    real trial has one model per process."""
    results = []
    for i, case in enumerate(QUICK if quick else FULL):
        args = ["benchmarks.estimator_cost", str(i), str(int(quick))]
        data, wall = run_json_worker(args, MARK, f"{KEY} case {case.label}", 3600, cwd=REPO)
        data["ratios"] = {k: Ratio(**v) for k, v in data["ratios"].items()}
        results.append((case, data))
        log(f"  {case.label}: FOGZO/STE {data['ratios']['fogzo'].fmt()} ({wall:.0f} s)")
    return _section(results)


def _section(results: list[tuple[Case, dict[str, Any]]]) -> Section:
    main, nspsa, bars, measurements = [], [], [], {}
    for case, d in results:
        fogzo, mezo, gauss, quzo, rounded = (
            d["ratios"][k] for k in ("fogzo", "mezo", "gauss_pass", "quzo", "rounded_pass")
        )
        extra = (fogzo.median - 1) * d["ste_s"] / d["forward_s"]  # FOGZO − STE, in forwards
        row = [case.label, fmt_s(d["forward_s"]), fmt_s(d["ste_s"]), fogzo.fmt()]
        row += [f"{d['flops_ratio']:.2f}", f"{extra:.2f}", mezo.fmt(), gauss.fmt()]
        main.append(
            row + [f"{2 + 3 * gauss.median:.2f}", quzo.fmt(), rounded.fmt(), len(fogzo.ratios)]
        )
        bars += [
            Bar(f"§1 FOGZO n=1 / STE wall, {case.label}", fogzo.median, FOGZO_BAR),
            Bar(f"§1 MeZO step / forward, {case.label}", mezo.median, INPLACE_BAR),
            Bar(f"§1 QuZO step / forward, {case.label}", quzo.median, INPLACE_BAR),
        ]
        scalars = ("forward_s", "ste_s", "forward_flops", "params", "flops_ratio")
        measurements[case.label] = {k: d[k] for k in scalars} | {
            k: v.ratios for k, v in d["ratios"].items()
        }
    for case, d in results:
        for n in case.ns:
            v, vmap = d["ratios"][f"nspsa {n}"], d["ratios"].get(f"vmap {n}")
            m = 2 * min(n, NSPSA_CHUNK)  # the losses evaluated per call; is vmap used for them?
            path = "vmap" if perturb.batching_pays_off(CPU, m, d["forward_flops"]) else "loop"
            step_s = fmt_s(v.median * 2 * n * d["forward_s"])
            vmap_fmt = vmap.fmt() if vmap else "not timed"
            nspsa.append([case.label, n, v.fmt(), step_s, path, vmap_fmt, len(v.ratios)])
            bars.append(Bar(f"§1 n-SPSA n={n} / 2n forwards, {case.label}", v.median, NSPSA_BAR))
    tables = [Table("FOGZO, MeZO, QuZO", MAIN_HEADER, main), Table("n-SPSA", NSPSA_HEADER, nspsa)]
    tables += [Table(**t) for _, d in results for t in d["profiles"]]
    return Section(KEY, TITLE, tables, bars, measurements)


def _worker(argv: list[str]) -> None:
    torch.set_num_threads(1)
    index, quick = int(argv[0]), bool(int(argv[1]))
    print(MARK + json.dumps(measure((QUICK if quick else FULL)[index], quick)), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1:])
