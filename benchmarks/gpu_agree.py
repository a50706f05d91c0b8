"""GPU section, part 1: does a trial compute the same numbers on the GPU as on the CPU?

fp32 with TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` set False for this part, restored afterwards), so the
two devices differ only by summation order. Two checks:

1. *Trials.* ``trainers.run_trial`` with the same config (the 2-layer MLP on digits, INT4,
   seed 0, one evaluation per step) on ``cpu`` and on the device, for every registered
   estimator. The initial evaluation (same weights, same test set) must agree for all.
   Whole curves can only agree for an estimator that draws no random numbers (STE):
   MeZO, QuZO and QFO draw their noise from per-tensor generators *on the parameter's
   device* (``trainers.estimators.seeded.tensor_generator``), and CUDA's Philox stream is
   not the CPU's Mersenne Twister, so their curves are expected to differ from step 1 on
   (printed, not barred). n-SPSA and FOGZO draw their directions from the estimator's own
   generator, which ``build_estimator`` creates on the CPU, for tensors on the parameter's
   device (``perturb.sample_directions``): torch refuses a CPU generator for a CUDA draw
   ("Expected a 'cuda' device type for generator but found 'cpu'"), so until trainers
   changes that their trials fail on CUDA, and the tables say so.
2. *Zeroth-order arithmetic with the same directions.* One n-SPSA estimate
   (``perturb.zo_gradient``, n = 8, the ``alpha`` perturbation plan) on both devices with the
   directions drawn once on the CPU and copied to the device: the 2n perturbed losses and the
   estimate must agree.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch

from benchmarks.common import Bar, table
from benchmarks.gpu_steps import first_line
from trainers import run_trial
from trainers.data import load_dataset
from trainers.estimators import ESTIMATORS
from trainers.metering import measure_cost
from trainers.models import build_model
from trainers.quant import QuantSpec, quantize_model
from trainers.tasks import classification_loss

REL_BAR = 1e-3  # fp32, TF32 off: losses over the first steps
NOISELESS = ("ste",)  # estimators that draw no random numbers: whole curves must agree
ZO_N = 8


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_diff(a: list[float], b: list[float]) -> tuple[float, float]:
    """Max absolute and max relative difference of two equally long series."""
    pairs = [(x, y) for x, y in zip(a, b) if not (math.isnan(x) and math.isnan(y))]
    if not pairs or len(a) != len(b):
        return math.nan, math.nan
    absolute = max(abs(x - y) for x, y in pairs)
    relative = max(abs(x - y) / max(abs(x), 1e-12) for x, y in pairs)
    return absolute, relative


def _curve(config: dict) -> tuple[list[float], list[float]]:
    """(train losses after each step, eval losses at every evaluation) of one trial."""
    reports: list[dict] = []
    run_trial(config, lambda metrics, **_: reports.append(dict(metrics)))
    train = [r["train_loss"] for r in reports[1:]]
    return train, [r["eval_loss"] for r in reports]


def trial_rows(device: torch.device, steps: int, log) -> list[dict]:
    rows = []
    for name in ESTIMATORS:
        config = {
            "estimator": name,
            "model": "mlp",
            "dataset": "digits",
            "bits": 4,
            "steps": steps,
            "num_evals": steps,
            "seed": 0,
            "threads": 1,
        }
        row = {"name": name}
        try:
            cpu = _curve({**config, "device": "cpu"})
            dev = _curve({**config, "device": device.type})
        except Exception as err:  # reported: an estimator whose trial fails on this device
            row["error"] = first_line(err)
            log(f"  agreement {name}: FAILED {row['error']}")
            rows.append(row)
            continue
        row["eval0"] = rel_diff(cpu[1][:1], dev[1][:1])
        row["train"] = rel_diff(cpu[0], dev[0])
        row["eval"] = rel_diff(cpu[1], dev[1])
        log(f"  agreement {name}: train-loss max rel diff {row['train'][1]:.2e}")
        rows.append(row)
    return rows


def zo_same_directions(device: torch.device) -> dict[str, float]:
    from trainers.estimators.perturb import perturbation_plan, sample_directions, zo_gradient

    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model("mlp", data.input_shape, data.num_classes)
    quantize_model(model, QuantSpec(kind="int", bits=4))
    batch = (data.train_x[:64], data.train_y[:64])
    other = copy.deepcopy(model).to(device)
    other_batch = tuple(t.to(device) for t in batch)
    flops = measure_cost(model, classification_loss, batch).forward_flops
    plan = perturbation_plan(model, "alpha", 1e-3)
    directions = sample_directions(plan, ZO_N, torch.Generator().manual_seed(0))
    grads, loss = zo_gradient(
        model, classification_loss, batch, plan, ZO_N, lambda k: directions, 64, flops
    )
    other_plan = perturbation_plan(other, "alpha", 1e-3)
    other_grads, other_loss = zo_gradient(
        other,
        classification_loss,
        other_batch,
        other_plan,
        ZO_N,
        lambda k: [d.to(device) for d in directions],
        64,
        flops,
    )
    flat = torch.cat([g.flatten() for g in grads])
    other_flat = torch.cat([g.detach().cpu().flatten() for g in other_grads])
    eps = torch.cat([p.eps.expand_as(p.param).flatten() for p in plan])
    other_eps = torch.cat([p.eps.expand_as(p.param).detach().cpu().flatten() for p in other_plan])
    return {
        "loss_rel": abs(loss - other_loss) / abs(loss),
        "grad_rel": float((flat - other_flat).norm() / flat.norm()),
        "eps_rel": float(((eps - other_eps).abs() / eps.abs()).max()),
    }


def _fmt(pair: tuple[float, float] | None) -> str:
    if pair is None or math.isnan(pair[1]):
        return "—"
    return f"{pair[0]:.2e} / {pair[1]:.2e}"


def run(device: torch.device, dry_run: bool, log) -> tuple[list[str], list[Bar]]:
    steps = 3 if dry_run else 10
    threads = torch.get_num_threads()  # run_trial's `threads: 1` sets it for the process
    try:
        with no_tf32():
            rows = trial_rows(device, steps, log)
            try:
                zo = zo_same_directions(device)
            except Exception as err:
                zo = {"error": first_line(err)}
    finally:
        torch.set_num_threads(threads)
    bars: list[Bar] = []
    ran = [r for r in rows if "error" not in r]
    bars.append(
        Bar(
            f"§GPU estimators whose trial runs on {device.type} (of {len(rows)})",
            len(ran),
            len(rows),
            ">=",
        )
    )
    eval0 = max((r["eval0"][1] for r in ran), default=math.nan)
    bars.append(Bar(f"§GPU initial eval loss, {device.type} vs cpu, max rel diff", eval0, REL_BAR))
    for r in ran:
        if r["name"] in NOISELESS:
            bars.append(
                Bar(
                    f"§GPU {r['name']} train-loss curve ({steps} steps), {device.type} vs cpu, "
                    "max rel diff",
                    r["train"][1],
                    REL_BAR,
                )
            )
    if "error" not in zo:
        bars.append(
            Bar(
                f"§GPU n-SPSA estimate (n={ZO_N}, same directions), {device.type} vs cpu, "
                "rel L2 diff",
                zo["grad_rel"],
                REL_BAR,
            )
        )
    table_rows = []
    for r in rows:
        if "error" in r:
            table_rows.append([f"`{r['name']}`", "—", "—", "—", "", f"**{r['error']}**"])
            continue
        expected = (
            "must agree"
            if r["name"] in NOISELESS
            else "may differ from step 1 (noise drawn on the device)"
        )
        table_rows.append(
            [f"`{r['name']}`", _fmt(r["eval0"]), _fmt(r["train"]), _fmt(r["eval"]), expected, ""]
        )
    lines = [
        f"### CPU vs {device.type}: the same trial's first {steps} steps",
        "",
        "fp32, TF32 off for this part. `trainers.run_trial` on both devices: the 2-layer MLP on "
        f"digits, INT4, seed 0, {steps} steps with an evaluation after each. Columns: max "
        "absolute / max relative difference. The initial evaluation (identical weights) must "
        f"agree for every estimator (bar ≤ {REL_BAR:g}); whole curves only for estimators that "
        f"draw no random numbers ({', '.join(NOISELESS)}): MeZO, QuZO and QFO draw their noise "
        "from generators on the parameter's device, and CUDA's random stream is not the CPU's.",
        "",
        table(
            [
                "estimator",
                "initial eval loss",
                "train loss, every step",
                "eval loss, every step",
                "curves",
                "error",
            ],
            table_rows,
        ),
        "",
    ]
    if "error" in zo:
        lines += [f"n-SPSA same-direction check: **{zo['error']}**", ""]
    else:
        lines += [
            f"**Zeroth-order arithmetic with the same directions** (one n-SPSA estimate, n = "
            f"{ZO_N}, directions drawn on the CPU and copied): mean perturbed loss rel. diff "
            f"{zo['loss_rel']:.2e}, estimate ‖Δĝ‖/‖ĝ‖ {zo['grad_rel']:.2e}, perturbation "
            f"scales (α_l·ε) max rel. diff {zo['eps_rel']:.2e} (bar on the estimate ≤ "
            f"{REL_BAR:g}).",
            "",
        ]
    return lines, bars
