"""Section 3: the FOGZO paper's compute claim on the 2-layer MLP (2-bit weights, identity STE).

n-SPSA (n = d) trains a fixed number of steps; its final eval loss is the target. FOGZO
(n = 1, beta 0.999) trains with an evaluation every 20 steps; n-SPSA's total FLOPs over
FOGZO's FLOPs at its first evaluation at or below the target, best over FOGZO's lrs. Both
through ``trainers.run_trial``, as a sweep runs them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from benchmarks.common import Bar, Section, Table, fmt_s
from trainers import run_trial

KEY = "fogzo_compute"
TITLE = "3. FOGZO vs n-SPSA (n = d): compute to the same loss"
PAPER_BAR = 500.0
COMMON = {"quantizer": "int", "bits": 2, "quant_options": {"surrogate": "identity"}, "seed": 0}
COMMON |= {"model": "mlp", "dataset": "digits", "batch_size": 64, "lr": 0.05, "threads": 1}
HEADER = (
    "MLP | d | n-SPSA steps | n-SPSA wall | target eval loss | n-SPSA FLOPs | n-SPSA forwards | "
    "FOGZO lr | FOGZO step reaching it | FOGZO FLOPs | FOGZO forward-equiv. | "
    "n-SPSA / FOGZO compute | FOGZO best eval loss | FOGZO final eval loss | FOGZO wall"
).split(" | ")


@dataclass
class Case:
    hidden: int
    nspsa_steps: int
    nspsa_chunk: int  # directions per batched n-SPSA evaluation
    fogzo_steps: int
    paper_size: bool  # the bar's case (d ≈ 7.5k; a stand-in in quick mode)
    fogzo_lrs: tuple[float, ...] = (0.05, 0.01)
    eval_every: int = 20

    @property
    def d(self) -> int:
        return 64 * self.hidden + self.hidden + self.hidden * 10 + 10


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case(10, 20, 128, 400, False, (0.05,)), Case(20, 3, 256, 200, True, (0.05,))]
    # n-SPSA at d = 7510 costs ~2 s a step: 100 steps, not the small case's 300.
    return [Case(10, 300, 128, 6000, False), Case(100, 100, 512, 6000, True)]


def _run(config: dict) -> tuple[list[dict], float]:
    curve: list[dict] = []
    started = time.perf_counter()
    run_trial(config, lambda metrics, **_: curve.append(dict(metrics)))
    return curve, time.perf_counter() - started


def measure(case: Case, log) -> dict:
    """n-SPSA's run, its target, and per FOGZO lr the first evaluation at or below it."""
    base = {**COMMON, "model_options": {"hidden": case.hidden}}
    log(f"  MLP 64-{case.hidden}-10 (d={case.d}): n-SPSA n=d, {case.nspsa_steps} steps ...")
    nspsa_options = {"n": case.d, "chunk": case.nspsa_chunk}
    nspsa, nspsa_wall = _run(
        {**base, "estimator": "nspsa", "steps": case.nspsa_steps,
         "num_evals": min(10, case.nspsa_steps), "estimator_options": nspsa_options}
    )  # fmt: skip
    last, fogzo = nspsa[-1], {}
    for lr in case.fogzo_lrs:
        curve, wall = _run(
            {**base, "estimator": "fogzo", "steps": case.fogzo_steps, "lr": lr,
             "num_evals": case.fogzo_steps // case.eval_every,
             "estimator_options": {"n": 1, "beta_start": 0.999, "beta_min": 0.999}}
        )  # fmt: skip
        hit = next((m for m in curve if m["eval_loss"] <= last["eval_loss"]), {})
        fogzo[lr] = {
            "wall_s": wall,
            "step": hit.get("step"),
            "flops": hit.get("flops"),
            "ratio": last["flops"] / hit["flops"] if hit else math.nan,
            "best_eval_loss": min(m["eval_loss"] for m in curve),
            "final_eval_loss": curve[-1]["eval_loss"],
        }
        log(f"    FOGZO lr {lr}: reached the target at step {hit.get('step')}")
    return {
        "target": last["eval_loss"],
        "nspsa_wall_s": nspsa_wall,
        "nspsa_flops": last["flops"],
        "nspsa_forwards": last["forwards"],
        "nspsa_eval_loss": [[m["step"], m["eval_loss"]] for m in nspsa],
        "fogzo": fogzo,
    }


def _rows(case: Case, m: dict) -> list[list]:
    nspsa = [f"64-{case.hidden}-10", case.d, f"{case.nspsa_steps} × n={case.d}"]
    nspsa += [fmt_s(m["nspsa_wall_s"]), f"{m['target']:.4f}", f"{m['nspsa_flops']:.3g}"]
    nspsa.append(f"{m['nspsa_forwards']:,}")
    forward_flops = m["nspsa_flops"] / m["nspsa_forwards"]
    rows = []
    for lr, f in m["fogzo"].items():
        reached = [f"not within {case.fogzo_steps}", "—", "—", "—"]
        if f["step"] is not None:
            reached = [f["step"], f"{f['flops']:.3g}", f"{f['flops'] / forward_flops:,.0f}"]
            reached.append(f"**{f['ratio']:,.0f}x**")
        losses = [f"{f['best_eval_loss']:.4f}", f"{f['final_eval_loss']:.4f}", fmt_s(f["wall_s"])]
        rows.append([*nspsa, lr, *reached, *losses])
    return rows


def run(quick: bool, workdir, log=print) -> Section:
    threads = torch.get_num_threads()
    try:
        measured = {c.d: (c, measure(c, log)) for c in cases(quick)}
    finally:
        torch.set_num_threads(threads)  # run_trial set it to the trial's 1 thread
    bars = []
    for d, (case, m) in measured.items():
        if case.paper_size:
            reached = [f["ratio"] for f in m["fogzo"].values() if not math.isnan(f["ratio"])]
            best = max(reached, default=math.nan)
            name = f"§3 n-SPSA / FOGZO compute to n-SPSA's loss, d={d} (best FOGZO lr)"
            bars.append(Bar(name, best, PAPER_BAR, ">="))
    caption = "n-SPSA (n = d) vs FOGZO (n = 1, β 0.999, eval every 20 steps): compute to the target"
    rows = [row for case, m in measured.values() for row in _rows(case, m)]
    measurements = {str(d): m for d, (_, m) in measured.items()}
    return Section(KEY, TITLE, [Table(caption, HEADER, rows)], bars, measurements)
