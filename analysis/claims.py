"""The FOGZO and QuZO papers' claims, checked against a sweep's results.

Claims are data (``CLAIMS``, one frozen ``Claim`` each): two arms (an estimator plus
filters on trial columns), the metric, the claimed direction and what scale the claim
needs. ``evaluate`` finds every setting (model, dataset, quantizer, bits) holding both
arms and gives one row per claim x setting x arm pair: each arm's median and seed range,
a seeded bootstrap 95% interval of the *difference of medians* (focus − baseline; for
ratio claims the ratio of medians, baseline / focus), the scale and a verdict:

- **reproduced**: the interval excludes zero in the claimed direction ("≈" claims: lies
  inside ± tolerance × the baseline's median; ratio claims: its low end is at least
  claimed ratio / slack), with ≥ 3 seeds per arm and a sufficient scale;
- **not reproduced**: the interval excludes zero the other way ("≈": lies wholly outside
  the tolerance band; ratio: its high end is below claimed ratio / slack);
- **unresolved**: anything else, fewer than 3 seeds in an arm, unequal iterations for an
  equal-iterations claim, or a scale below the claim's needs (a smoke run can neither
  confirm nor refute a paper-scale figure; its interval is still shown).

Claims whose arms are absent from the results are not listed. pandas only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import bootstrap, tradeoff
from analysis.tradeoff import SETTING

MIN_SEEDS = 3
PAPER_SCALE = "paper"
_SCALE_SUFFIX = re.compile(
    r"-(smoke|wide|paper)$"
)  # presets name a sweep <name>-<scale> (service.spec.apply_scale)
VERDICTS = ("reproduced", "not reproduced", "unresolved")


@dataclass(frozen=True)
class Arm:
    """An estimator plus filters on trial columns, e.g. ``Arm("fogzo", (("warm_start", 0.7),))``."""

    estimator: str
    where: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Needs:
    """What a run needs before its verdict can count (when its sweep declares no scale)."""

    datasets: tuple[str, ...] = ()  # one of these datasets
    min_steps: int | None = None
    min_params: float | None = None  # model size (num_params)
    full_n: bool = False  # the baseline's n covers every perturbed element (n-SPSA with n = d)


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # FOGZO | QuZO
    text: str
    figure: str  # the paper's figure or table the claim rests on
    metric: str  # final_train_loss | final_eval_metric | final_eval_loss | peak_memory_bytes
    #              | compute_to_target | eval_metric_at_equal_wall
    focus: Arm
    baseline: Arm
    direction: (
        str  # better (focus better) | equal (≈ within tolerance) | ratio (baseline / focus ≥ ratio)
    )
    where: tuple[tuple[str, Any], ...] = ()  # filters shared by both arms (model, bits, quantizer)
    tolerance: float = 0.02  # "equal": band = tolerance x |baseline median|
    ratio: float = math.nan  # "ratio": the claimed factor
    slack: float = 2.0  # "ratio": reproduced down to ratio / slack
    equal_steps: bool = False  # "at equal iterations": both arms must have run as many steps
    needs: Needs = field(default_factory=Needs)


_LLAMA_PAPER = Needs(min_steps=20_000, min_params=9e6)
_VISION_PAPER = Needs(datasets=("cifar10", "cifar100", "imagefolder"), min_steps=20_000)
_QUZO_PAPER = Needs(min_steps=20_000, min_params=1e8)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "fogzo-mlp-train-loss",
        "FOGZO",
        "FOGZO's training loss is below STE's at equal iterations",
        "2-layer MLP 784-10-10 on MNIST, 2-bit weights, identity STE (training-loss curves)",
        "final_train_loss",
        Arm("fogzo"),
        Arm("ste"),
        "better",
        where=(("model", "mlp"), ("bits", 2)),
        equal_steps=True,
        needs=Needs(datasets=("mnist",)),
    ),
    Claim(
        "fogzo-mlp-796x",
        "FOGZO",
        "FOGZO reaches n-SPSA's (n = d) loss with ~796x less compute",
        "2-layer MLP on MNIST, 2-bit weights: compute to n-SPSA's (n = d) final loss",
        "compute_to_target",
        Arm("fogzo"),
        Arm("nspsa"),
        "ratio",
        where=(("model", "mlp"), ("bits", 2)),
        ratio=796.0,
        slack=2.0,
        needs=Needs(datasets=("mnist",), min_params=7_000, full_n=True),
    ),
    Claim(
        "fogzo-deit",
        "FOGZO",
        "FOGZO beats STE by 1-8% accuracy on DeiT Tiny/Small at equal iterations",
        "DeiT-Tiny ImageNet-100 fixed α: STE 62.72% vs FOGZO 70.06%; "
        "LSQ 2-bit DeiT-S 79.55% vs 80.06%",
        "final_eval_metric",
        Arm("fogzo"),
        Arm("ste"),
        "better",
        where=(("model", ("deit_tiny", "deit_small")),),
        equal_steps=True,
        needs=_VISION_PAPER,
    ),
    Claim(
        "fogzo-resnet",
        "FOGZO",
        "FOGZO beats STE by 1-2% accuracy on ResNet-18/50 at equal iterations",
        "ResNet-18 ImageNet-100 fixed α: STE 79.92% vs FOGZO 80.42%; "
        "LSQ 2-bit ResNet-50 82.81% vs 83.67%",
        "final_eval_metric",
        Arm("fogzo"),
        Arm("ste"),
        "better",
        where=(("model", ("resnet18", "resnet50")),),
        equal_steps=True,
        needs=_VISION_PAPER,
    ),
    Claim(
        "fogzo-llama-w2a2",
        "FOGZO",
        "FOGZO's perplexity is 1-22 points below STE's on LLaMA (W2A2, ≤ 0.3B)",
        "W2A2 QuEST LLaMA 95M/200M/300M ppl: STE 37.75/26.63/22.90 vs FOGZO 37.37/26.45/22.72; "
        "LLaMA-9m C4: 109.95 vs 105.64",
        "final_eval_metric",
        Arm("fogzo"),
        Arm("ste"),
        "better",
        where=(("model", "llama"), ("bits", 2)),
        equal_steps=True,
        needs=_LLAMA_PAPER,
    ),
    Claim(
        "fogzo-llama-warm-wall",
        "FOGZO",
        "70% STE + 30% FOGZO beats STE at equal wall time",
        "LLaMA-30M, equal wall time 3.7 h: STE 38.25 vs 70% STE + 30% FOGZO 37.93 ppl",
        "eval_metric_at_equal_wall",
        Arm("fogzo", (("warm_start", 0.7),)),
        Arm("ste"),
        "better",
        where=(("model", "llama"),),
        needs=Needs(min_steps=20_000, min_params=3e7),
    ),
    Claim(
        "quzo-vs-mezo",
        "QuZO",
        "QuZO performs comparably to MeZO (within 2%)",
        "GLUE, multi-choice and generation tasks: QuZO ≈ MeZO (abstract)",
        "final_eval_metric",
        Arm("quzo"),
        Arm("mezo"),
        "equal",
        tolerance=0.02,
        needs=_QUZO_PAPER,
    ),
    Claim(
        "quzo-vs-qfo-int8",
        "QuZO",
        "QuZO beats quantized first-order fine-tuning at INT8",
        "INT8 fine-tuning: QuZO above quantized first-order (abstract)",
        "final_eval_metric",
        Arm("quzo"),
        Arm("qfo"),
        "better",
        where=(("quantizer", "int"), ("bits", 8)),
        needs=_QUZO_PAPER,
    ),
    Claim(
        "quzo-vs-qfo-int4",
        "QuZO",
        "QuZO beats quantized first-order fine-tuning at INT4",
        "INT4 fine-tuning (LLaMA-2-7B): QuZO above quantized first-order (abstract)",
        "final_eval_metric",
        Arm("quzo"),
        Arm("qfo"),
        "better",
        where=(("quantizer", "int"), ("bits", 4)),
        needs=_QUZO_PAPER,
    ),
    Claim(
        "quzo-vs-qfo-fp8",
        "QuZO",
        "QuZO is comparable to quantized first-order at FP8 (within 2%)",
        "FP8 fine-tuning: QuZO ≈ first-order (abstract)",
        "final_eval_metric",
        Arm("quzo"),
        Arm("qfo"),
        "equal",
        where=(("quantizer", ("fp8_e4m3", "fp8_e5m2")),),
        tolerance=0.02,
        needs=_QUZO_PAPER,
    ),
    Claim(
        "quzo-memory",
        "QuZO",
        "QuZO needs 2.94x less peak memory than quantized first-order",
        "LLaMA-2-7B fine-tuning: 2.94x (up to 5.47x) less memory than quantized first-order",
        "peak_memory_bytes",
        Arm("quzo"),
        Arm("qfo"),
        "ratio",
        ratio=2.94,
        slack=1.25,
        needs=Needs(min_params=1e9),
    ),
)

RULE = (
    "The FOGZO and QuZO papers' claims whose two arms are in these results. The interval is a "
    "seeded bootstrap (seeds resampled within each arm) of the difference of medians (focus − "
    "baseline), or of the ratio of medians (baseline / focus) for ratio claims. Reproduced: it "
    "excludes zero in the claimed direction (≈: lies within the tolerance band; ratio: at least "
    "the claimed ratio / slack); not reproduced: the opposite; unresolved: otherwise, with fewer "
    "than 3 seeds per arm, or at a scale below the claim's needs."
)
COLUMNS = [
    "claim",
    "paper",
    "text",
    "figure",
    *SETTING,
    "focus",
    "baseline",
    "metric",
    "statistic",
    "focus_median",
    "focus_min",
    "focus_max",
    "focus_seeds",
    "baseline_median",
    "baseline_min",
    "baseline_max",
    "baseline_seeds",
    "estimate",
    "low",
    "high",
    "scale",
    "verdict",
    "why",
]


def _match(frame: pd.DataFrame, where: tuple[tuple[str, Any], ...]) -> pd.Series:
    """Rows whose columns equal each filter's value (or one of a tuple of values; floats ± 1e-9)."""
    mask = pd.Series(True, index=frame.index)
    for column, wanted in where:
        if column not in frame:
            return pd.Series(False, index=frame.index)
        values = wanted if isinstance(wanted, tuple) else (wanted,)
        col = frame[column]
        hit = pd.Series(False, index=frame.index)
        for v in values:
            hit |= (
                np.isclose(pd.to_numeric(col, errors="coerce"), v, rtol=0, atol=1e-9)
                if isinstance(v, float)
                else col == v
            )
        mask &= hit.fillna(False).astype(bool)
    return mask


def specs_by_sweep(spec: dict[str, Any], trials: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Sweep name -> stored spec, from ``SweepResults.spec`` (``combine`` keys several by name)."""
    sweeps = set(trials["sweep"].astype(str))
    if len(sweeps) > 1 and sweeps <= set(spec) and all(isinstance(spec[s], dict) for s in sweeps):
        return {s: spec[s] for s in sweeps}
    return {s: spec for s in sweeps}


def sweep_scales(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each sweep's declared scale: the stored spec's ``scale`` key, else its name's preset
    suffix."""
    out = {}
    for name, spec in specs.items():
        declared = spec.get("scale") if isinstance(spec, dict) else None
        if isinstance(declared, str) and declared:
            out[name] = declared
        elif found := _SCALE_SUFFIX.search(str(name)):
            out[name] = found.group(1)
    return out


def _shortfalls(claim: Claim, focus: pd.DataFrame, baseline: pd.DataFrame) -> list[str]:
    """What this run lacks of the claim's needs (empty: big enough)."""
    both, needs, out = pd.concat([focus, baseline]), claim.needs, []
    if needs.datasets and not both["dataset"].isin(needs.datasets).all():
        out.append(f"dataset {both['dataset'].iloc[0]}, not {'/'.join(needs.datasets)}")
    steps = pd.to_numeric(both["steps"], errors="coerce").min()
    if needs.min_steps and not steps >= needs.min_steps:
        out.append(f"{steps:.0f} steps < {needs.min_steps}")
    params = pd.to_numeric(both["num_params"], errors="coerce").min()
    if needs.min_params and not params >= needs.min_params:
        out.append(f"{params:.3g} parameters < {needs.min_params:.3g}")
    if needs.full_n:
        d = (
            baseline["d_zo"].fillna(baseline["num_params"])
            if "d_zo" in baseline
            else baseline["num_params"]
        )
        # n is an estimator-option column: absent from a table no estimator with it wrote
        n = baseline["n"] if "n" in baseline else pd.Series(float("nan"), index=baseline.index)
        if not (pd.to_numeric(n, errors="coerce") >= pd.to_numeric(d, errors="coerce")).all():
            out.append(f"{claim.baseline.estimator} n = {n.min():g} < d = {d.max():g}")
    return out


def _scale(
    claim: Claim, focus: pd.DataFrame, baseline: pd.DataFrame, scales: dict[str, str]
) -> tuple[str, bool]:
    """(the scale as shown, whether it is enough for the claim)."""
    declared = {scales[s] for s in pd.concat([focus, baseline])["sweep"].unique() if s in scales}
    if declared:
        return "/".join(sorted(declared)), declared == {PAPER_SCALE}
    short = _shortfalls(claim, focus, baseline)
    return (f"smoke (inferred: {'; '.join(short)})", False) if short else ("paper (inferred)", True)


_CURVE_OF = {
    "final_train_loss": "train_loss",
    "final_eval_loss": "eval_loss",
    "final_eval_metric": "eval_metric",
}


def _at_common_step(
    claim: Claim, group: pd.DataFrame, c: pd.DataFrame, focus: str, base: str
) -> tuple[list, list, int] | None:
    """An equal-iterations claim whose arms ran different budgets (the MLP preset runs FOGZO
    longer for the compute claim): each trial's evaluation at the step every trial reached,
    if every trial has one there; None otherwise. (``train_loss`` is the mean since the
    previous evaluation, so arms evaluated at different intervals average different windows.)"""
    if not claim.equal_steps or claim.metric not in _CURVE_OF or c.empty:
        return None
    if group.groupby("arm")["steps"].nunique().max() > 1 or group["steps"].nunique() <= 1:
        return None
    common = int(c.groupby(["sweep", "trial_id"])["step"].max().min())
    at = c[c["step"] == common]
    if set(zip(at["sweep"], at["trial_id"])) != set(zip(group["sweep"], group["trial_id"])):
        return None
    column = _CURVE_OF[claim.metric]
    return (
        at.loc[at["arm"] == focus, column].dropna().tolist(),
        at.loc[at["arm"] == base, column].dropna().tolist(),
        common,
    )


def _values(
    claim: Claim, group: pd.DataFrame, curves: pd.DataFrame, focus: str, base: str
) -> tuple[list, list, int | None]:
    """Per-seed values of the claim's metric for the two arms (``inf``: never reached the
    target), and the common step they were read at when the arms' budgets differ."""
    f, b = group[group["arm"] == focus], group[group["arm"] == base]
    c = curves[curves["trial_id"].isin(group["trial_id"]) & curves["sweep"].isin(group["sweep"])]
    c = c[c["arm"].isin([focus, base])]
    if claim.metric.startswith("final_") or claim.metric == "peak_memory_bytes":
        common = _at_common_step(claim, group, c, focus, base)
        if common is not None:
            return common
        return f[claim.metric].dropna().tolist(), b[claim.metric].dropna().tolist(), None
    if claim.metric == "compute_to_target":
        key = tuple(group[SETTING].iloc[0])
        target = tradeoff.reference_target(group, base, "eval_loss", key)
        reach = tradeoff.compute_to_target(c, "eval_loss", target)
        cost = reach["flops"].where(reach["reached"], math.inf)
        return cost[reach["arm"] == focus].tolist(), cost[reach["arm"] == base].tolist(), None
    # eval_metric_at_equal_wall: each trial's metric at the last evaluation within the common
    # wall time
    budget = float(c.groupby(["sweep", "trial_id"])["wall_s"].max().min()) if len(c) else math.nan
    q = tradeoff.quality_at_compute(c, "eval_metric", budget, cost="wall_s")
    return (
        q.loc[q["arm"] == focus, "eval_metric"].tolist(),
        q.loc[q["arm"] == base, "eval_metric"].tolist(),
        None,
    )


def _lower_is_better(claim: Claim, group: pd.DataFrame) -> bool:
    if claim.metric in ("final_eval_metric", "eval_metric_at_equal_wall"):
        return tradeoff.lower_is_better("eval_metric", group)
    return True  # losses, memory, compute


def _verdict(
    claim: Claim,
    estimate: tuple[float, float, float],
    base_median: float,
    lower: bool,
    seeds: tuple[int, int],
    steps_equal: bool,
    scale_ok: bool,
) -> tuple[str, str]:
    """The verdict and why, from the interval (see the module docstring)."""
    _, low, high = estimate
    if min(seeds) < MIN_SEEDS:
        return "unresolved", f"fewer than {MIN_SEEDS} seeds per arm ({seeds[0]} vs {seeds[1]})"
    if not steps_equal:
        return "unresolved", "the arms ran unequal numbers of steps"
    if math.isnan(low) or math.isnan(high):
        return "unresolved", "no measurement"
    if claim.direction == "ratio":
        floor = claim.ratio / claim.slack
        outcome = (
            "reproduced" if low >= floor else "not reproduced" if high < floor else "unresolved"
        )
        says = {"reproduced": "≥", "not reproduced": "<"}.get(
            outcome, "straddles"
        ) + f" {floor:.3g}x"
    elif claim.direction == "equal":
        band = claim.tolerance * abs(base_median)
        outside = low > band or high < -band
        outcome = (
            "reproduced"
            if -band <= low and high <= band
            else "not reproduced"
            if outside
            else "unresolved"
        )
        says = {"reproduced": "within", "not reproduced": "outside"}.get(
            outcome, "straddles"
        ) + f" ±{band:.3g}"
    else:
        better = (high < 0) if lower else (low > 0)
        worse = (low > 0) if lower else (high < 0)
        outcome = "reproduced" if better else "not reproduced" if worse else "unresolved"
        says = {"reproduced": "favours the claim", "not reproduced": "against the claim"}.get(
            outcome, "includes zero (within noise)"
        )
    if not scale_ok:
        return "unresolved", f"scale below the claim's needs; interval {says}"
    return outcome, f"interval {says}"


def _pairs(claim: Claim, trials: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame, str, str]]:
    """(setting, its matching trials, focus arm, baseline arm) for every setting holding both
    arms."""
    done = trials[(trials["status"] == "completed") & _match(trials, claim.where)]
    focus_rows = done[
        (done["estimator"] == claim.focus.estimator) & _match(done, claim.focus.where)
    ]
    base_rows = done[
        (done["estimator"] == claim.baseline.estimator) & _match(done, claim.baseline.where)
    ]
    out = []
    # Arms pair within one sweep: two sweeps differ in budgets and settings the arms do not name.
    for (*key, _), group in pd.concat([focus_rows, base_rows]).groupby(
        [*SETTING, "sweep"], dropna=False
    ):
        is_focus = group.index.isin(focus_rows.index)
        for f in sorted(group.loc[is_focus, "arm"].unique()):
            for b in sorted(group.loc[~is_focus, "arm"].unique()):
                out.append((tuple(key), group[group["arm"].isin([f, b])], f, b))
    return out


def evaluate(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    specs: dict[str, dict[str, Any]],
    claims: tuple[Claim, ...] = CLAIMS,
) -> pd.DataFrame:
    """One row per claim x setting x arm pair found in ``trials`` (with ``arm``, see
    ``tradeoff.add_arms``); ``curves`` joined with arms; ``specs``: sweep name -> stored spec."""
    scales, rows = sweep_scales(specs), []
    for claim in claims:
        for key, group, focus, base in _pairs(claim, trials):
            f, b = group[group["arm"] == focus], group[group["arm"] == base]
            fv, bv, common_step = _values(claim, group, curves, focus, base)
            interval = (
                bootstrap.ratio_interval
                if claim.direction == "ratio"
                else bootstrap.difference_interval
            )(fv, bv)
            lower = _lower_is_better(claim, group)
            scale, scale_ok = _scale(claim, f, b, scales)
            steps_equal = (
                not claim.equal_steps
                or common_step is not None
                or set(f["steps"].dropna()) == set(b["steps"].dropna())
            )
            fs, bs = bootstrap.spread(fv), bootstrap.spread(bv)
            verdict, why = _verdict(
                claim, interval, bs[0], lower, (len(fv), len(bv)), steps_equal, scale_ok
            )
            stat = (
                "ratio of medians (baseline / focus)"
                if claim.direction == "ratio"
                else "difference of medians (focus − baseline)"
            )
            if common_step is not None:
                stat += f" at step {common_step}, the step every trial reached"
            rows.append(
                {
                    "claim": claim.id,
                    "paper": claim.paper,
                    "text": claim.text,
                    "figure": claim.figure,
                    **dict(zip(SETTING, key)),
                    "focus": focus,
                    "baseline": base,
                    "metric": claim.metric,
                    "statistic": stat,
                    "focus_median": fs[0],
                    "focus_min": fs[1],
                    "focus_max": fs[2],
                    "focus_seeds": len(fv),
                    "baseline_median": bs[0],
                    "baseline_min": bs[1],
                    "baseline_max": bs[2],
                    "baseline_seeds": len(bv),
                    "estimate": interval[0],
                    "low": interval[1],
                    "high": interval[2],
                    "scale": scale,
                    "verdict": verdict,
                    "why": why,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _digits(row: Any) -> int:
    return 0 if row.metric in ("peak_memory_bytes", "compute_to_target") else 3


def _big(value: float) -> str:
    """Bytes and FLOPs: three significant digits; ``inf`` is a target never reached."""
    return "—" if math.isnan(value) else "never" if math.isinf(value) else f"{value:.3g}"


def _arm_cell(row: Any, side: str) -> str:
    m, lo, hi, n = (getattr(row, f"{side}_{k}") for k in ("median", "min", "max", "seeds"))
    if _digits(row) == 0:
        shown = _big(m) if lo == hi else f"{_big(m)} [{_big(lo)}–{_big(hi)}]"
    else:
        shown = bootstrap.fmt_spread(m, lo, hi)
    return f"{getattr(row, side)}: {shown} ({n} seeds)"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for people: one line per claim x setting, arms as median [min–max]."""

    def interval(row: Any) -> str:
        if row.statistic.startswith("ratio"):
            return f"{row.estimate:.3g}x [{row.low:.3g}–{row.high:.3g}]"
        d = _digits(row) or 3
        return f"{row.estimate:+.{d}f} [{row.low:+.{d}f}, {row.high:+.{d}f}]"

    return pd.DataFrame(
        [
            {
                "claim": row.claim,
                "paper": row.paper,
                "claim text": row.text,
                "paper figure": row.figure,
                "setting": f"{row.model}/{row.dataset} {row.quantizer} {int(row.bits)}-bit",
                "metric": row.metric,
                "focus (median [min–max])": _arm_cell(row, "focus"),
                "baseline": _arm_cell(row, "baseline"),
                "95% bootstrap interval": interval(row),
                "scale": row.scale,
                "verdict": row.verdict,
                "why": row.why,
            }
            for row in table.itertuples()
        ],
        columns=[
            "claim",
            "paper",
            "claim text",
            "paper figure",
            "setting",
            "metric",
            "focus (median [min–max])",
            "baseline",
            "95% bootstrap interval",
            "scale",
            "verdict",
            "why",
        ],
    )


def summary_line(table: pd.DataFrame) -> str:
    counts = ", ".join(f"{int((table['verdict'] == v).sum())} {v}" for v in VERDICTS)
    return f"paper claims: {counts} (qsweep report --claims)"


def text(table: pd.DataFrame) -> str:
    """The claims for a terminal: a short block per claim x setting, verdict last."""
    if table.empty:
        return "claims: no claim of the FOGZO or QuZO papers has both of its arms in these results"
    shown, lines = display(table), []
    for row, raw in zip(shown.itertuples(index=False), table.itertuples(index=False)):
        lines += [
            f"{row.claim} ({row.paper}): {row[2]}",
            f"  paper: {row[3]}",
            f"  {row.setting}, {row.metric}: {row[6]} vs {row.baseline}",
            f"  {raw.statistic}: {row[8]} (95% bootstrap, seeds resampled within each arm)",
            f"  scale: {row.scale} -> {row.verdict.upper()}: {row.why}",
            "",
        ]
    return "\n".join(lines).rstrip()
