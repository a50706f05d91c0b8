"""Section 1: wall time of one estimator step relative to an STE step or a forward.

All timings use one torch thread (``torch.set_num_threads(1)``): the ratios are then about
the estimators, not about how well a 2-core machine shared with other jobs parallelises a
kernel. Weights are INT4 fake-quantized (per tensor); the optimizer (SGD, lr 0, so the
model does not drift between repetitions) runs after STE and FOGZO steps exactly as in
``run_trial``; MeZO and QuZO update in place (lr 0: same cost, no drift).
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field

import torch

from benchmarks.common import (
    Bar,
    Ratio,
    Section,
    cprofile_summary,
    fmt_s,
    mean_time,
    op_profile_summary,
    ratio,
    table,
)
from trainers.data import load_dataset
from trainers.estimators import NSPSAConfig, build_estimator
from trainers.estimators.base import trainable_parameters
from trainers.estimators.perturb import (
    _loop_losses,
    batching_pays_off,
    perturbation_plan,
    perturbed_losses,
    sample_directions,
)
from trainers.estimators.quzo import rounded_noise
from trainers.estimators.seeded import add_noise_, gaussian_noise
from trainers.metering import measure_cost
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model, quantized_layers
from trainers.tasks import classification_loss

KEY = "estimator_cost"
TITLE = "1. Estimator step cost (wall-time ratios, 1 torch thread)"

FOGZO_BAR, NSPSA_BAR, INPLACE_BAR = 1.8, 1.1, 2.2
NSPSA_CHUNK = NSPSAConfig().chunk  # directions per evaluation chunk (the default)


@dataclass
class Case:
    label: str
    model: str
    options: dict
    input_shape: tuple[int, ...]
    batch: int
    reps: int  # repetitions of the cheap ratios (FOGZO/STE, MeZO, QuZO, n-SPSA n=8)
    heavy_reps: int  # repetitions of the expensive ones (n-SPSA n=32, vmap vs loop)
    ns: tuple[int, ...] = (8, 32)
    vmap_ns: tuple[int, ...] = (8, 32)  # n at which batched (vmap) vs loop is timed
    note: str = ""
    digits: bool = False


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("MLP 64-10-10 (digits, batch 64)", "mlp", {}, (64,), 64, 2, 2, (8,), (8,), digits=True),
            Case("CNN w16 (3x16x16, batch 8)", "cnn", {}, (3, 16, 16), 8, 2, 2, (8,), (8,)),
            Case("ResNet-18 w8 (3x16x16, batch 4)", "resnet18", {"width": 8}, (3, 16, 16), 4, 2, 2, (8,), ()),
            Case("DeiT-Tiny depth 1 (3x16x16, patch 4, batch 4)", "deit_tiny", {"patch_size": 4, "depth": 1},
                 (3, 16, 16), 4, 2, 2, (8,), ()),
        ]
    return [
        Case("MLP 64-10-10 (digits, batch 64)", "mlp", {}, (64,), 64, 7, 7, digits=True),
        Case("CNN w16 (3x32x32, batch 32)", "cnn", {}, (3, 32, 32), 32, 7, 5),
        Case("ResNet-18 w64 (3x32x32, batch 32)", "resnet18", {"width": 64}, (3, 32, 32), 32, 5, 2, vmap_ns=(8,),
             note="n=32 under vmap not timed: 64 stacked ResNet-18 copies take about a minute per call"),
        Case("DeiT-Tiny depth 6 (3x32x32, patch 4, batch 32)", "deit_tiny", {"patch_size": 4, "depth": 6},
             (3, 32, 32), 32, 5, 2, vmap_ns=(8,), note="n=32 under vmap not timed (about a minute per call)"),
    ]


@dataclass
class Measured:
    case: Case
    forward_s: float = 0.0
    forward_flops: float = 0.0
    flops_ratio: float = 0.0
    fogzo: Ratio | None = None
    mezo: Ratio | None = None
    quzo: Ratio | None = None
    gauss_pass: Ratio | None = None  # one MeZO noise regeneration over all parameters / forward
    rounded_pass: Ratio | None = None  # one QuZO rounded-noise regeneration / forward
    nspsa: dict = field(default_factory=dict)
    vmap: dict = field(default_factory=dict)
    profiles: list = field(default_factory=list)


MIN_TIME = {False: 0.2, True: 0.02}  # seconds per timing (full, quick)
_min_time = MIN_TIME[False]


def _ratio(*args, **kwargs) -> Ratio:
    return ratio(*args, min_time=_min_time, **kwargs)


def _setup(case: Case):
    torch.manual_seed(0)
    if case.digits:
        data = load_dataset("digits")
        x, y = data.train_x[:case.batch], data.train_y[:case.batch]
    else:
        x = torch.randn(case.batch, *case.input_shape)
        y = torch.randint(0, 10, (case.batch,))
    model = build_model(case.model, case.input_shape, 10, **case.options)
    quantize_model(model, QuantSpec(kind="int", bits=4))
    model.train()
    return model, (x, y)


def _stepper(name: str, options: dict, model, batch, cost):
    estimator = build_estimator(name, options, cost, seed=0, lr=0.0)
    estimator.prepare(model)
    optimizer = None if estimator.updates_in_place else torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def step():
        result = estimator.step(model, classification_loss, batch, 0.5)
        if optimizer is not None:
            optimizer.step()
        return result
    return step


def measure(case: Case, quick: bool, log) -> Measured:
    base, batch = _setup(case)
    cost = measure_cost(base, classification_loss, batch)
    out = Measured(case, forward_flops=cost.forward_flops)
    models = {name: copy.deepcopy(base) for name in ("ste", "fogzo", "mezo", "quzo", "nspsa")}

    def forward(model=base):
        with torch.no_grad():
            classification_loss(model(batch[0]), batch[1])

    k = 3  # forwards per timing of a denominator (cheap models are repeated further by ``ratio``)
    ste = _stepper("ste", {}, models["ste"], batch, cost)
    fogzo = _stepper("fogzo", {"n": 1}, models["fogzo"], batch, cost)
    out.flops_ratio = fogzo().flops / ste().flops
    out.fogzo = _ratio(fogzo, ste, case.reps)
    log(f"  {case.label}: FOGZO/STE {out.fogzo.fmt()}")
    steppers = {}
    for name in ("mezo", "quzo"):
        steppers[name] = _stepper(name, {}, models[name], batch, cost)
        setattr(out, name, _ratio(steppers[name], mean_time(lambda m=models[name]: forward(m), k), case.reps,
                                 b_scale=1 / k))
        log(f"  {case.label}: {name}/forward {getattr(out, name).fmt()}")
    out.forward_s = statistics.median(out.mezo.b)
    params = [p for _, p in trainable_parameters(models["mezo"])]
    quantized = {id(layer.weight) for _, layer in quantized_layers(models["quzo"])}
    qparams = [p for _, p in trainable_parameters(models["quzo"])]

    def gauss_pass():
        add_noise_(params, gaussian_noise(1234), 0.0)

    def rounded_pass():
        noise = rounded_noise(1234, 5678, 8, quantized)
        for i, p in enumerate(qparams):
            noise(i, p)
    out.gauss_pass = _ratio(gauss_pass, mean_time(forward, k), case.reps, b_scale=1 / k)
    out.rounded_pass = _ratio(rounded_pass, mean_time(forward, k), case.reps, b_scale=1 / k)
    for i, n in enumerate(case.ns):
        step = _stepper("nspsa", {"n": n}, models["nspsa"], batch, cost)
        out.nspsa[n] = _ratio(step, mean_time(forward, k), case.reps if n <= 8 else case.heavy_reps,
                             warmup=1 if i == 0 or case.model in ("mlp", "cnn") else 0, b_scale=2 * n / k)
        log(f"  {case.label}: n-SPSA n={n} / 2n forwards {out.nspsa[n].fmt()}")
    plan = perturbation_plan(base, "alpha", 1e-3)
    names, values = [p.name for p in plan], {p.name: p.param.detach() for p in plan}
    for n in case.vmap_ns:
        directions = sample_directions(plan, n, torch.Generator().manual_seed(0))
        deltas = [torch.cat([p.eps * d, -p.eps * d]) for p, d in zip(plan, directions)]

        def looped(deltas=deltas):
            with torch.no_grad():
                _loop_losses(base, classification_loss, batch, names, values, deltas)

        def batched(deltas=deltas):
            perturbed_losses(base, classification_loss, batch, plan, deltas, update_buffers=False, batched=True)
        cheap = case.model in ("mlp", "cnn")
        out.vmap[n] = _ratio(looped, batched, case.reps if cheap else case.heavy_reps, warmup=1 if cheap else 0)
        log(f"  {case.label}: loop/vmap n={n} {out.vmap[n].fmt()}")
        del deltas
    if not quick:
        _explain(out, ste, fogzo, steppers, models, batch, cost)
    return out


def _explain(out: Measured, ste, fogzo, steppers, models, batch, cost) -> None:
    """Profiles of the steps that miss their bar (where the time goes)."""
    case = out.case

    def repeated(step, times=200):
        def run():
            for _ in range(times):
                step()
        return run
    if out.fogzo.median > FOGZO_BAR:
        if case.model == "mlp":  # Python-bound: cProfile says which functions
            out.profiles.append((f"{case.label}: 200 FOGZO n=1 steps, cProfile by cumulative time",
                                 cprofile_summary(repeated(fogzo), sort="cumulative")))
            out.profiles.append((f"{case.label}: 200 STE steps, cProfile by cumulative time (for comparison)",
                                 cprofile_summary(repeated(ste), sort="cumulative")))
        else:
            out.profiles.append((f"{case.label}: one FOGZO n=1 step, aten ops", op_profile_summary(fogzo)[0]))
    for name in ("mezo", "quzo"):
        if getattr(out, name).median > INPLACE_BAR:
            if case.model == "mlp":
                out.profiles.append((f"{case.label}: 200 {name} steps, cProfile by cumulative time",
                                     cprofile_summary(repeated(steppers[name]), sort="cumulative")))
            elif case.model in ("resnet18", "deit_tiny"):
                out.profiles.append((f"{case.label}: one {name} step, aten ops",
                                     op_profile_summary(steppers[name])[0]))
    if any(v.median > NSPSA_BAR for v in out.nspsa.values()) and case.model in ("resnet18", "deit_tiny"):
        step = _stepper("nspsa", {"n": 8}, models["nspsa"], batch, cost)
        out.profiles.append((f"{case.label}: one n-SPSA n=8 step, aten ops", op_profile_summary(step)[0]))


def run(quick: bool, workdir, log=print) -> Section:
    global _min_time
    _min_time = MIN_TIME[quick]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = [measure(case, quick, log) for case in cases(quick)]
    finally:
        torch.set_num_threads(threads)
    return Section(KEY, TITLE, *_render(results))


def _render(results: list[Measured]) -> tuple[str, list[Bar]]:
    bars: list[Bar] = []
    lines = [
        "One torch thread (`torch.set_num_threads(1)`) throughout. Every ratio is median (min–max) over "
        "repetitions of two adjacent timings, order alternating; a timing repeats its callable until it "
        "lasts ≥ 0.2 s. Models are INT4 fake-quantized; inputs are random CIFAR-shaped images except the MLP "
        "(digits). \"Forward\" = an inference forward + loss under `torch.no_grad()` in train mode (what a "
        "zeroth-order estimator evaluates). STE and FOGZO steps include the SGD optimizer step.",
        "",
    ]
    rows = []
    for r in results:
        c = r.case
        ste_s = statistics.median(r.fogzo.b)
        extra = (r.fogzo.median - 1) * ste_s / r.forward_s
        rows.append([c.label, fmt_s(r.forward_s), fmt_s(ste_s), r.fogzo.fmt(), f"{r.flops_ratio:.2f}", f"{extra:.2f}",
                     r.mezo.fmt(), r.gauss_pass.fmt(), f"{2 + 4 * r.gauss_pass.median:.2f}", r.quzo.fmt(),
                     r.rounded_pass.fmt(), len(r.fogzo.ratios)])
        bars.append(Bar(f"§1 FOGZO n=1 / STE wall, {c.label}", r.fogzo.median, FOGZO_BAR))
        bars.append(Bar(f"§1 MeZO step / forward, {c.label}", r.mezo.median, INPLACE_BAR))
        bars.append(Bar(f"§1 QuZO step / forward, {c.label}", r.quzo.median, INPLACE_BAR))
    lines += ["**FOGZO, MeZO, QuZO.** Bars: FOGZO/STE wall ≤ 1.8 (cost model: (3F+B)/(F+B), printed as the "
              "FLOPs column), MeZO and QuZO step / forward ≤ 2.2. \"noise pass\" = regenerating one direction "
              "over all parameters (MeZO: Gaussian, `seeded.add_noise_`; QuZO: Gaussian + INT8 stochastic "
              "rounding, `quzo.rounded_noise`) in units of one forward: a MeZO step makes 4 such passes "
              "(+ε, −2ε, +ε, update) and 2 forwards, a QuZO step 4 rounded passes plus the stochastic rounding "
              "of the update.", "",
              table(["model", "forward", "STE step", "FOGZO n=1 / STE (wall)", "FOGZO / STE (FLOPs)",
                     "FOGZO − STE, in forwards (ideal 2)", "MeZO / forward", "MeZO noise pass / forward",
                     "2 + 4 × pass", "QuZO / forward", "QuZO noise pass / forward", "reps"], rows), ""]
    rows = []
    for r in results:
        for n, v in r.nspsa.items():
            path = "vmap" if batching_pays_off(torch.device("cpu"), 2 * min(n, NSPSA_CHUNK), r.forward_flops) else "loop"
            vm = r.vmap.get(n)
            rows.append([r.case.label, n, v.fmt(), fmt_s(v.median * 2 * n * r.forward_s), path,
                         vm.fmt() if vm else f"not timed{': ' + r.case.note if r.case.note else ''}",
                         len(v.ratios)])
            bars.append(Bar(f"§1 n-SPSA n={n} / 2n forwards, {r.case.label}", v.median, NSPSA_BAR))
    lines += ["**n-SPSA.** Step wall / (2n inference forwards), bar ≤ 1.1. \"path\" = how the estimator "
              "evaluates the 2n perturbed losses (`trainers.estimators.perturb.batching_pays_off`, see below). "
              "\"loop / vmap\" = time of the Python loop (`_loop_losses`) / time of the batched vmap evaluation "
              "(`perturbed_losses(batched=True)`) of the same 2n perturbed losses: above 1 vmap is faster.", "",
              table(["model", "n", "step / 2n forwards", "step (approx.)", "path", "loop / vmap", "reps"], rows),
              ""]
    profiles = [p for r in results for p in r.profiles]
    if profiles:
        lines += ["**Profiles of the steps above their bar** (where the time goes):", ""]
        for title, body in profiles:
            lines += [f"*{title}*", "", body, ""]
    return "\n".join(lines), bars
