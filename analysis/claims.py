"""The FOGZO and QuZO papers' claims, checked against a sweep's results by a fair referee.

Claims are data: ``claims.yaml`` beside this module (loaded into frozen ``Claim`` dataclasses,
``CLAIMS``) gives each claim's two arms (an estimator plus filters on trial columns), the
metric, the claimed direction and size, the seed abstract's words it rests on, whether it is a
"paper claim" or "our question", secondary figures (shown, never used) and what the trials
must have measured before a verdict counts. ``evaluate`` gives one row per claim x setting
(model, dataset, quantizer, bits) x sweep x arm pair: each arm's median and seed range, a
seeded bootstrap 95% interval of the *difference of medians* (focus − baseline; for ratio
claims the ratio of medians, baseline / focus) and a verdict, one of ``VERDICTS``:

- **reproduced**: the interval excludes no-effect in the claimed direction and reaches the
  claimed size (difference: its favourable end is at least the low end of the claimed range;
  ratio: it lies above 1 and its high end reaches claimed ratio / slack; "≈": it lies inside
  ± tolerance x the baseline's median; a claim with no size: excluding zero is enough);
- **direction only**: it excludes no-effect in the claimed direction but falls short of the
  claimed size;
- **not reproduced**: it excludes no-effect the other way, or it rules out the claimed size
  (its favourable end is below the claimed range; "≈": it lies wholly outside the band);
- **unresolved**: anything else — fewer seeds than the claim needs (3, or its ``min_seeds``),
  unequal iterations for an equal-iterations claim, and every cap below.

Caps (each lowers a verdict to unresolved, and says why; the interval is still shown):

- *what was measured*: the trials' own columns (dataset, steps, num_params, n, d_zo) must meet
  the claim's needs. A sweep's name or declared ``scale`` can only lower a verdict (a
  ``-smoke`` sweep, or any declared scale but "paper", is unresolved), never raise one;
- *both arms trained*: a quality claim needs every arm to have moved from its step-0
  evaluation (the curves' first evaluation, at step 0) towards better by more than its seed
  spread (max − min of the final value over seeds; at least 0.1% of the start), else
  "<arm> did not train";
- *tuned arms*: trials carry a ``role`` ("grid": the spec's grid at one shared lr; "tuning":
  the tuning protocol's trials, scored on a validation split; "tuned": an arm's best tuning
  configuration re-run with fresh seeds on the test split; "pretrain"; no column: "grid").
  An arm with tuned rows is compared through them (best vs best; all tuned rows of one
  estimator and claim arm form one arm whatever their lr, split only on other settings that
  vary, such as n or master_weights, never on ``TUNED_DIMENSIONS``);
  tuning and pretrain rows never enter a verdict. A quality claim whose arms have only grid
  rows is unresolved ("arms not tuned (one shared lr): run with a protocol"); the grid (same
  lr) comparison is still listed next to a tuned verdict, as context (``primary`` False);
- *equal storage*: arms pair only with equal ``master_weights`` (and ``probe``) where both
  record one (a column absent, or null for an estimator without it, pairs as before).

Quality claims are those on trained quality (losses, accuracy, perplexity, compute to a
target loss, quality at equal wall time); the memory and gradient-bias claims need neither
tuning nor training. Arms pair within one sweep. Claims whose arms are absent are not listed.
pandas only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis import bootstrap, tradeoff
from analysis.tradeoff import SETTING
from contract.schema import ARM_SETTING_COLUMNS, option_columns

MIN_SEEDS = 3
PAPER_SCALE = "paper"
# presets name a sweep <name>-<scale> (service.spec_loading.apply_scale): only ever LOWERS a verdict
_SCALE_SUFFIX = re.compile(r"-(smoke|wide|paper)$")
VERDICTS = ("reproduced", "direction only", "not reproduced", "unresolved")
KINDS = ("paper claim", "our question")
DIRECTIONS = ("better", "equal", "ratio")
METRICS = (
    "final_train_loss",
    "final_eval_metric",
    "final_eval_loss",
    "peak_memory_bytes",
    "compute_to_target",
    "eval_metric_at_equal_wall",
    "est_rel_bias",
)
ROLES = ("grid", "tuning", "tuned", "pretrain")
# what the tuning protocol tunes (service.protocol): tuned rows of one estimator that differ
# only in these are one arm; they split on any other setting or option that varies
TUNED_DIMENSIONS = ("lr", "optimizer", "momentum", "weight_decay", "eps")
# columns of a trials table that are no trial setting
NOT_SETTINGS = ("arm", "regime", "role", "tuned_from", "eval_split")
PAIRED_COLUMNS = ("master_weights", "probe")  # equal storage: paired arms must agree on these
UNTUNED = "arms not tuned (one shared lr): run with a protocol"
SECONDARY = "secondary source, unverified"
CONTRADICTS = "contradicts the claimed range"
FLAT_FLOOR = 1e-3  # "did not train": moved by at most max(seed spread, 0.1% of the start)
DATA_FILE = "claims.yaml"


@dataclass(frozen=True)
class Arm:
    """An estimator plus filters on trial columns, e.g. ``Arm("fogzo", (("warm_start", 0.7),))``."""

    estimator: str
    where: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return " ".join([self.estimator, *(f"{k}={_show(v)}" for k, v in self.where)])


@dataclass(frozen=True)
class Needs:
    """What the trials must have measured before a verdict can count."""

    datasets: tuple[str, ...] = ()  # one of these datasets
    min_steps: int | None = None
    min_params: float | None = None  # model size (num_params)
    full_n: bool = False  # the baseline's n covers every perturbed element (n-SPSA with n = d)


@dataclass(frozen=True)
class Secondary:
    """A figure from a secondary public summary: shown, labelled, never used for a verdict.
    ``gains``: its improvements in the claim's units (a ratio claim: its factors)."""

    figure: str
    gains: tuple[float, ...] = ()


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # FOGZO | QuZO
    kind: str  # "paper claim" | "our question"
    text: str
    figure: str  # the seed abstract's words (or why it has none, for "our question")
    metric: str  # one of METRICS
    focus: Arm
    baseline: Arm
    direction: str  # better (focus better) | equal (≈ within tolerance) | ratio (baseline / focus)
    where: tuple[tuple[str, Any], ...] = ()  # filters shared by both arms (model, bits, quantizer)
    size: tuple[float, float | None] | None = None  # "better": the claimed improvement range
    size_text: str = ""  # the size in the abstract's words, e.g. "+1-8 accuracy points"
    tolerance: float = 0.02  # "equal": band = tolerance x |baseline median|
    ratio: float = math.nan  # "ratio": the claimed factor
    slack: float = 2.0  # "ratio": reaching ratio / slack counts
    equal_steps: bool = False  # "at equal iterations": both arms must have run as many steps
    min_seeds: int = MIN_SEEDS
    # the arms share seeds and with them the random draws (an ablation of one option):
    # compare seed by seed (median of per-seed differences), only seeds both arms have
    paired: bool = False
    needs: Needs = field(default_factory=Needs)
    secondary: tuple[Secondary, ...] = ()

    @property
    def quality(self) -> bool:
        """A claim on trained quality: needs tuned arms that both trained."""
        return self.metric in _TRAINED_ON

    @property
    def claimed(self) -> str:
        """The claimed size as the report shows it."""
        if self.direction == "ratio":
            return f"≥ {self.ratio:g}x (counts from {self.ratio / self.slack:.3g}x)"
        if self.direction == "equal":
            return f"≈ within ±{self.tolerance:.0%} of the baseline"
        if self.size is None:
            return "better (no size claimed)"
        low, high = self.size
        shown = f"{low:g}–{high:g}" if high is not None else f"≥ {low:g}"
        return f"better by {shown}" + (f" ({self.size_text})" if self.size_text else "")

    def contradicts(self, figure: Secondary) -> bool:
        """Does a secondary figure lie outside the claim's own range?"""
        if self.direction == "ratio":
            return any(g < self.ratio for g in figure.gains)
        if self.size is None:
            return False
        low, high = self.size
        return any(g < low or (high is not None and g > high) for g in figure.gains)

    def secondary_labels(self) -> list[str]:
        return [
            f"{s.figure} ({SECONDARY}{'; ' + CONTRADICTS if self.contradicts(s) else ''})"
            for s in self.secondary
        ]


# --- the data file ------------------------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "/".join(map(_show, value))
    return tradeoff._format_value(value)


def _filters(data: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of column -> value")
    return tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in data.items())


def _arm(data: Any, where: str) -> Arm:
    if not isinstance(data, dict) or not isinstance(data.get("estimator"), str):
        raise ValueError(f"{where}: expected {{estimator: <name>, where: {{...}}}}")
    unknown = set(data) - {"estimator", "where"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return Arm(data["estimator"], _filters(data.get("where"), f"{where}.where"))


def _claim(entry: Any) -> Claim:
    if not isinstance(entry, dict) or "id" not in entry:
        raise ValueError(f"{DATA_FILE}: every claim is a mapping with an id (got {entry!r})")
    cid = str(entry["id"])
    known = {f.name for f in dataclasses.fields(Claim)}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(f"{DATA_FILE}: claim {cid}: unknown key(s) {', '.join(sorted(unknown))}")
    data = dict(entry)
    data["focus"] = _arm(entry.get("focus"), f"claim {cid}: focus")
    data["baseline"] = _arm(entry.get("baseline"), f"claim {cid}: baseline")
    data["where"] = _filters(entry.get("where"), f"claim {cid}: where")
    needs = entry.get("needs") or {}
    data["needs"] = Needs(
        datasets=tuple(needs.get("datasets", ())),
        min_steps=needs.get("min_steps"),
        min_params=needs.get("min_params"),
        full_n=bool(needs.get("full_n", False)),
    )
    data["secondary"] = tuple(
        Secondary(str(s["figure"]), tuple(float(g) for g in s.get("gains", ())))
        for s in entry.get("secondary") or ()
    )
    if entry.get("size") is not None:
        low, high = entry["size"]
        data["size"] = (float(low), None if high is None else float(high))
    for key in ("ratio", "slack", "tolerance"):
        if key in entry:
            data[key] = float(entry[key])
    claim = Claim(**data)
    problems = [
        f"kind {claim.kind!r} is not one of {KINDS}" if claim.kind not in KINDS else "",
        f"metric {claim.metric!r} is not one of {METRICS}" if claim.metric not in METRICS else "",
        f"direction {claim.direction!r} is not one of {DIRECTIONS}"
        if claim.direction not in DIRECTIONS
        else "",
        "a ratio claim needs ratio"
        if claim.direction == "ratio" and math.isnan(claim.ratio)
        else "",
        "size is for 'better' claims" if claim.size and claim.direction != "better" else "",
        "figure and text are required" if not (claim.figure and claim.text) else "",
    ]
    if any(problems):
        raise ValueError(f"{DATA_FILE}: claim {cid}: {'; '.join(p for p in problems if p)}")
    return claim


def load_claims(path: str | Path | None = None) -> tuple[Claim, ...]:
    """The claims of ``path`` (default: the package's ``claims.yaml``)."""
    text = (
        Path(path).read_text(encoding="utf-8")
        if path is not None
        else resources.files("analysis").joinpath(DATA_FILE).read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ValueError(f"{DATA_FILE}: expected a mapping with a 'claims' list")
    claims = tuple(_claim(entry) for entry in data["claims"])
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{DATA_FILE}: duplicate claim ids")
    return claims


# --- the verdict --------------------------------------------------------------------------

# claim metric -> (curves column, trials column) that tell whether an arm trained
_TRAINED_ON = {
    "final_train_loss": ("eval_loss", "final_eval_loss"),
    "final_eval_loss": ("eval_loss", "final_eval_loss"),
    "compute_to_target": ("eval_loss", "final_eval_loss"),
    "final_eval_metric": ("eval_metric", "final_eval_metric"),
    "eval_metric_at_equal_wall": ("eval_metric", "final_eval_metric"),
}
_CURVE_OF = {
    "final_train_loss": "train_loss",
    "final_eval_loss": "eval_loss",
    "final_eval_metric": "eval_metric",
}

RULE = (
    "The FOGZO and QuZO papers' claims (and our own questions) whose two arms are in these "
    "results. The interval is a seeded bootstrap (seeds resampled within each arm) of the "
    "difference of medians (focus − baseline), or of the ratio of medians (baseline / focus) "
    "for ratio claims. Reproduced: it excludes no effect in the claimed direction and reaches "
    "the claimed size (≈: lies within the tolerance band); direction only: right direction, "
    "short of the claimed size; not reproduced: the other direction, or the claimed size ruled "
    "out. Unresolved otherwise, and whenever an arm has too few seeds, an arm did not train "
    "(moved from its step-0 evaluation by no more than its seed spread), the arms were not "
    "tuned (grid rows at one shared lr; a verdict compares each arm's tuned rows, best vs best), "
    "or what the trials measured (dataset, steps, parameters, n) is below the claim's needs; a "
    "sweep's name or declared scale can only lower a verdict. Arms pair only with equal storage "
    "(master_weights). Secondary figures are shown for reference, unverified, never used."
)
COLUMNS = [
    "claim",
    "paper",
    "kind",
    "text",
    "figure",
    "claimed",
    "secondary",
    *SETTING,
    "sweep",
    "basis",
    "primary",
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
    "focus_tuning",
    "baseline_tuning",
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
            if isinstance(v, (bool, np.bool_)):
                hit |= col.map(
                    lambda x, v=bool(v): isinstance(x, (bool, np.bool_)) and bool(x) == v
                ).astype(bool)
            elif isinstance(v, float):
                hit |= pd.Series(
                    np.isclose(pd.to_numeric(col, errors="coerce"), v, rtol=0, atol=1e-9),
                    index=frame.index,
                )
            else:
                hit |= (col == v).fillna(False).astype(bool)
        mask &= hit.fillna(False).astype(bool)
    return mask


def roles(trials: pd.DataFrame) -> pd.Series:
    """Each trial's ``role``; results older than the column are all "grid"."""
    if "role" not in trials:
        return pd.Series("grid", index=trials.index, dtype=object)
    return trials["role"].astype(object).where(trials["role"].notna(), "grid").astype(str)


def specs_by_sweep(spec: dict[str, Any], trials: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Sweep name -> stored spec, from ``SweepResults.spec`` (``combine`` keys several by name)."""
    sweeps = set(trials["sweep"].astype(str))
    if len(sweeps) > 1 and sweeps <= set(spec) and all(isinstance(spec[s], dict) for s in sweeps):
        return {s: spec[s] for s in sweeps}
    return {s: spec for s in sweeps}


def sweep_scales(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each sweep's declared scale: the stored spec's ``scale`` key, else its name's preset
    suffix. Only ever lowers a verdict (any scale but "paper"), never raises one."""
    out = {}
    for name, spec in specs.items():
        declared = spec.get("scale") if isinstance(spec, dict) else None
        if isinstance(declared, str) and declared:
            out[name] = declared
        elif found := _SCALE_SUFFIX.search(str(name)):
            out[name] = found.group(1)
    return out


def _shortfalls(claim: Claim, focus: pd.DataFrame, baseline: pd.DataFrame) -> list[str]:
    """What the trials' measured columns lack of the claim's needs (empty: big enough)."""
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
) -> tuple[str, list[str]]:
    """(the scale as shown, the caps it puts on the verdict). Measured columns decide; a
    declared scale other than "paper" (spec key or name suffix) only adds a cap."""
    short = _shortfalls(claim, focus, baseline)
    shown = f"below the claim's needs ({'; '.join(short)})" if short else "meets the claim's needs"
    caps = [f"scale below the claim's needs ({'; '.join(short)})"] if short else []
    sweeps = pd.concat([focus, baseline])["sweep"].unique()
    lower = sorted({scales[s] for s in sweeps if scales.get(s, PAPER_SCALE) != PAPER_SCALE})
    if lower:
        shown += f"; declared {'/'.join(lower)}"
        caps.append(f"the sweep declares scale {'/'.join(lower)}")
    return shown, caps


def _keys(rows: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(rows["sweep"].astype(str), rows["trial_id"].astype(str)))


def _of(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` (curves, diagnostics, per-trial tables) that belong to ``rows``."""
    if frame is None or frame.empty or "trial_id" not in frame:
        return pd.DataFrame(columns=["sweep", "trial_id"])
    index = pd.MultiIndex.from_arrays([frame["sweep"].astype(str), frame["trial_id"].astype(str)])
    return frame[index.isin(list(_keys(rows)))]


def _at_common_step(
    claim: Claim, f: pd.DataFrame, b: pd.DataFrame, cf: pd.DataFrame, cb: pd.DataFrame
) -> tuple[list, list, int] | None:
    """An equal-iterations claim whose arms ran different budgets (the MLP preset runs FOGZO
    longer for the compute claim): each trial's evaluation at the step every trial reached,
    if every trial has one there; None otherwise. (``train_loss`` is the mean since the
    previous evaluation, so arms evaluated at different intervals average different windows.)"""
    if not claim.equal_steps or claim.metric not in _CURVE_OF or cf.empty or cb.empty:
        return None
    if f["steps"].nunique() > 1 or b["steps"].nunique() > 1:
        return None
    if pd.concat([f, b])["steps"].nunique() <= 1:
        return None
    c = pd.concat([cf, cb])
    common = int(c.groupby(["sweep", "trial_id"])["step"].max().min())
    at_f, at_b = cf[cf["step"] == common], cb[cb["step"] == common]
    if _keys(at_f) | _keys(at_b) != _keys(f) | _keys(b):
        return None
    column = _CURVE_OF[claim.metric]
    return at_f[column].dropna().tolist(), at_b[column].dropna().tolist(), common


def _values(
    claim: Claim,
    f: pd.DataFrame,
    b: pd.DataFrame,
    curves: pd.DataFrame,
    diagnostics: pd.DataFrame | None,
) -> tuple[list, list, int | None]:
    """Per-seed values of the claim's metric for the two arms (``inf``: never reached the
    target), and the common step they were read at when the arms' budgets differ."""
    cf, cb = _of(curves, f), _of(curves, b)
    if claim.metric.startswith("final_") or claim.metric == "peak_memory_bytes":
        common = _at_common_step(claim, f, b, cf, cb)
        if common is not None:
            return common
        return f[claim.metric].dropna().tolist(), b[claim.metric].dropna().tolist(), None
    if claim.metric == "est_rel_bias":
        # the gradient-quality probe: a trial's median relative bias over its probes
        if diagnostics is None or diagnostics.empty or "est_rel_bias" not in diagnostics:
            return [], [], None
        per_trial = (
            diagnostics.groupby(["sweep", "trial_id"])["est_rel_bias"].median().reset_index()
        )
        fv, bv = _of(per_trial, f), _of(per_trial, b)
        if claim.paired:  # seed by seed: the seeds both arms have, in seed order
            fv = fv.merge(f[["sweep", "trial_id", "seed"]], on=["sweep", "trial_id"])
            bv = bv.merge(b[["sweep", "trial_id", "seed"]], on=["sweep", "trial_id"])
            both = fv.merge(bv, on="seed", suffixes=("_f", "_b")).dropna().sort_values("seed")
            return both["est_rel_bias_f"].tolist(), both["est_rel_bias_b"].tolist(), None
        return (
            fv["est_rel_bias"].dropna().tolist(),
            bv["est_rel_bias"].dropna().tolist(),
            None,
        )
    c = pd.concat([cf, cb])
    if c.empty:
        return [], [], None
    if claim.metric == "compute_to_target":
        # the FOGZO paper's target: the loss the baseline reaches (its worst seed's final value)
        finals = b["final_eval_loss"].dropna()
        target = float(finals.max()) if len(finals) else math.nan
        reach = tradeoff.compute_to_target(c, "eval_loss", target)
        reach = reach.assign(cost=reach["flops"].where(reach["reached"], math.inf))
        return _of(reach, f)["cost"].tolist(), _of(reach, b)["cost"].tolist(), None
    # eval_metric_at_equal_wall: each trial's metric at the last evaluation within the common
    # wall time
    budget = float(c.groupby(["sweep", "trial_id"])["wall_s"].max().min())
    q = tradeoff.quality_at_compute(c, "eval_metric", budget, cost="wall_s")
    return _of(q, f)["eval_metric"].tolist(), _of(q, b)["eval_metric"].tolist(), None


def _lower_is_better(claim: Claim, rows: pd.DataFrame) -> bool:
    if claim.metric in ("final_eval_metric", "eval_metric_at_equal_wall"):
        return tradeoff.lower_is_better("eval_metric", rows)
    return True  # losses, memory, compute, bias


def _not_trained(claim: Claim, rows: pd.DataFrame, label: str, curves: pd.DataFrame) -> str:
    """Why ``rows`` (one arm) cannot be said to have trained; "" when it did."""
    if not claim.quality:
        return ""
    curve_column, final_column = _TRAINED_ON[claim.metric]
    c = _of(curves, rows)
    start = c.loc[c["step"] == 0, curve_column].dropna() if len(c) else pd.Series(dtype=float)
    median, low, high = bootstrap.spread(rows[final_column].dropna())
    if start.empty or math.isnan(median):
        return f"cannot tell that {label} trained (no step-0 {curve_column} or final value)"
    first = float(start.median())
    lower = curve_column == "eval_loss" or tradeoff.lower_is_better("eval_metric", rows)
    moved = (first - median) if lower else (median - first)
    threshold = max(high - low, FLAT_FLOOR * abs(first), 1e-12)
    if moved > threshold:
        return ""
    return (
        f"{label} did not train ({curve_column} {first:.4g} at step 0 -> {median:.4g}, "
        f"{'worse' if moved < 0 else 'a change'} within {threshold:.3g}, its seed spread or floor)"
    )


def _outcome(
    claim: Claim, estimate: tuple[float, float, float], base_median: float, lower: bool
) -> tuple[str, str]:
    """The verdict the interval alone gives, and what it says (see the module docstring)."""
    _, low, high = estimate
    if claim.direction == "ratio":
        floor = claim.ratio / claim.slack
        if low > 1:
            if high >= floor:
                return "reproduced", f"favours the claim and reaches {floor:.3g}x"
            return "direction only", f"favours the claim but stays below {floor:.3g}x"
        if high < 1:
            return "not reproduced", "against the claim (no saving)"
        if high < floor:
            return "not reproduced", f"includes no saving and rules out {floor:.3g}x"
        return "unresolved", f"straddles 1x (within noise), reaches {floor:.3g}x"
    if claim.direction == "equal":
        band = claim.tolerance * abs(base_median)
        if -band <= low and high <= band:
            return "reproduced", f"within ±{band:.3g}"
        if low > band or high < -band:
            return "not reproduced", f"outside ±{band:.3g}"
        return "unresolved", f"straddles ±{band:.3g}"
    gain_low, gain_high = (-high, -low) if lower else (low, high)  # > 0: focus better
    size = claim.size[0] if claim.size else None
    if gain_low > 0:
        if size is None:
            return "reproduced", "favours the claim"
        if gain_high >= size:
            return "reproduced", f"favours the claim and reaches the claimed size ({claim.claimed})"
        return (
            "direction only",
            f"favours the claim but falls short of the claimed size ({claim.claimed})",
        )
    if gain_high < 0:
        return "not reproduced", "against the claim"
    if size is not None and gain_high < size:
        return "not reproduced", f"includes zero and rules out the claimed size ({claim.claimed})"
    return "unresolved", "includes zero (within noise)"


def _verdict(
    claim: Claim,
    estimate: tuple[float, float, float],
    base_median: float,
    lower: bool,
    seeds: tuple[int, int],
    steps_equal: bool,
    caps: list[str],
) -> tuple[str, str]:
    """The verdict and why: the interval's outcome, lowered to unresolved by any cap."""
    _, low, high = estimate
    if min(seeds) < claim.min_seeds:
        return (
            "unresolved",
            f"fewer than {claim.min_seeds} seeds per arm ({seeds[0]} vs {seeds[1]})",
        )
    if not steps_equal:
        return "unresolved", "the arms ran unequal numbers of steps"
    if math.isnan(low) or math.isnan(high):
        return "unresolved", "no measurement"
    outcome, says = _outcome(claim, estimate, base_median, lower)
    if caps:
        return "unresolved", f"{'; '.join(caps)}; interval {says}"
    return outcome, f"interval {says}"


# --- the arms -----------------------------------------------------------------------------


@dataclass
class _Side:
    label: str
    rows: pd.DataFrame
    tuned: bool
    tuning: list[dict[str, Any]] = field(default_factory=list)


def _split_columns(rows: pd.DataFrame, arm: Arm) -> list[str]:
    """The columns tuned rows of one estimator split into arms on: every trial setting and
    option that varies among them (another grid cell: n, warm_start, master_weights...) except
    the tuned dimensions (``TUNED_DIMENSIONS``: each arm has its own best lr) and the claim
    arm's own filters."""
    skip = {*TUNED_DIMENSIONS, *NOT_SETTINGS, *(k for k, _ in arm.where)}
    candidates = [*ARM_SETTING_COLUMNS, *option_columns(rows.columns)]
    return [
        c
        for c in dict.fromkeys(candidates)
        if c in rows and c not in skip and rows[c].nunique(dropna=True) > 1
    ]


def _tuned_groups(rows: pd.DataFrame, arm: Arm) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
    """``rows`` (tuned, one estimator) as arms: (rows, the split columns' values)."""
    if rows.empty:
        return []
    columns = _split_columns(rows, arm)
    if not columns:
        return [(rows, {})]
    return [
        (g, {c: g[c].dropna().iloc[0] for c in columns if g[c].notna().any()})
        for _, g in rows.groupby(columns, dropna=False, sort=True)
    ]


def _hyper_columns(rows: pd.DataFrame) -> list[str]:
    """Columns that tell tuning configurations apart: lr, optimizer, eps first, then any other
    trial setting or option that varies among ``rows``."""
    skip = set(NOT_SETTINGS)
    options = [c for c in option_columns(rows.columns) if c not in skip and c not in ("lr", "eps")]
    first = [c for c in ("lr", "optimizer", "eps") if c in rows and rows[c].notna().any()]
    rest = [
        c
        for c in [*TUNED_DIMENSIONS, *ARM_SETTING_COLUMNS, *options]
        if c in rows and c not in first and c not in skip and rows[c].nunique(dropna=True) > 1
    ]
    return first + list(dict.fromkeys(rest))


def tuning_table(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """An arm's tuning trials (completed), one entry per configuration, best first: its
    configuration, seeds and median final validation metric and loss."""
    if rows.empty:
        return []
    columns = _hyper_columns(rows)
    config = (
        rows[columns].apply(
            lambda r: " ".join(f"{c}={_show(r[c])}" for c in columns if pd.notna(r[c])), axis=1
        )
        if columns
        else pd.Series("(one configuration)", index=rows.index)
    )
    lower = tradeoff.lower_is_better("eval_metric", rows)
    out = []
    for name, group in rows.groupby(config, sort=False):
        out.append(
            {
                "configuration": str(name),
                "seeds": len(group),
                "metric": float(group["final_eval_metric"].median()),
                "loss": float(group["final_eval_loss"].median()),
            }
        )
    sign = 1 if lower else -1

    def key(e: dict[str, Any]) -> tuple:
        m, loss = e["metric"], e["loss"]
        return (math.isnan(m), sign * m if not math.isnan(m) else 0, loss if loss == loss else 0)

    return sorted(out, key=key)


def _sides(
    arm: Arm, rows: pd.DataFrame, tuning: pd.DataFrame, grid_label: pd.Series, prefix: str
) -> tuple[list[_Side], list[_Side]]:
    """(tuned arms, grid arms) of one claim arm in one setting x sweep."""
    r = roles(rows)
    tuned_rows, grid_rows = rows[r == "tuned"], rows[r == "grid"]
    tuned = []
    for g, values in _tuned_groups(tuned_rows, arm):
        own = tuning[_match(tuning, arm.where + tuple(values.items()))] if len(tuning) else tuning
        label = " ".join([arm.name, *(f"{c}={_show(v)}" for c, v in values.items())])
        tuned.append(
            _Side(f"{prefix}{label} [tuned]", g, True, tuning_table(own) if len(own) else [])
        )
    grid = [
        _Side(str(label), g, False)
        for label, g in grid_rows.groupby(grid_label.reindex(grid_rows.index), sort=True)
    ]
    return tuned, grid


def _differ(a: pd.DataFrame, b: pd.DataFrame, columns: Any, skip: set[str]) -> bool:
    """Do two arms record different values of any of ``columns`` (both recording one)?"""
    for c in columns:
        if c in skip or c not in a or c not in b:
            continue
        va, vb = set(a[c].dropna().map(_show)), set(b[c].dropna().map(_show))
        if va and vb and va != vb:
            return True
    return False


def _pairs(
    claim: Claim, trials: pd.DataFrame, grid_label: pd.Series
) -> list[tuple[tuple, str, _Side, _Side, str]]:
    """(setting, sweep, focus side, baseline side, basis) for every setting x sweep holding
    both arms: tuned vs tuned ("tuned"), tuned vs an untuned arm ("tuned vs grid") and the grid
    arms at one shared lr ("grid")."""
    done = trials[(trials["status"] == "completed") & _match(trials, claim.where)]
    r = roles(done)
    tuning_all = done[r == "tuning"]
    done = done[r.isin(["grid", "tuned"])]  # tuning and pretrain rows never enter a verdict

    def arm_rows(frame: pd.DataFrame, arm: Arm) -> pd.DataFrame:
        return frame[(frame["estimator"] == arm.estimator) & _match(frame, arm.where)]

    focus_rows, base_rows = arm_rows(done, claim.focus), arm_rows(done, claim.baseline)
    prefix_all = trials["sweep"].nunique() > 1
    skip = {k for k, _ in (*claim.focus.where, *claim.baseline.where)}
    out = []
    # Arms pair within one sweep: two sweeps differ in budgets and settings the arms do not name.
    for (*key, sweep), group in pd.concat([focus_rows, base_rows]).groupby(
        [*SETTING, "sweep"], dropna=False
    ):
        prefix = f"{sweep}:" if prefix_all else ""
        in_setting = tuning_all[
            (tuning_all["sweep"] == sweep) & _match(tuning_all, tuple(zip(SETTING, key)))
        ]
        sides = [
            _sides(
                arm,
                group[group.index.isin(rows.index)],
                arm_rows(in_setting, arm),
                grid_label,
                prefix,
            )
            for arm, rows in ((claim.focus, focus_rows), (claim.baseline, base_rows))
        ]
        (f_tuned, f_grid), (b_tuned, b_grid) = sides
        candidates: list[tuple[_Side, _Side, str]] = []
        if f_tuned and b_tuned:
            candidates += [(f, b, "tuned") for f in f_tuned for b in b_tuned]
        elif f_tuned or b_tuned:
            candidates += [
                (f, b, "tuned vs grid") for f in f_tuned or f_grid for b in b_tuned or b_grid
            ]
        grid = [(f, b, "grid") for f in f_grid for b in b_grid]
        # the grid compares arms at one shared lr: keep same-setting pairs when there are any
        same = [p for p in grid if not _differ(p[0].rows, p[1].rows, ARM_SETTING_COLUMNS, skip)]
        candidates += same or grid
        for f, b, basis in candidates:
            if _differ(f.rows, b.rows, PAIRED_COLUMNS, skip):
                continue  # unequal storage (master_weights): not a fair pair
            out.append((tuple(key), str(sweep), f, b, basis))
    return out


def evaluate(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    specs: dict[str, dict[str, Any]],
    claims: tuple[Claim, ...] | None = None,
    diagnostics: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per claim x setting x sweep x arm pair found in ``trials`` (with ``arm``, see
    ``tradeoff.add_arms``); ``curves`` joined with arms; ``specs``: sweep name -> stored spec;
    ``diagnostics``: the gradient-quality probes (``SweepResults.diagnostics``), for the
    gradient-bias claim."""
    claims = CLAIMS if claims is None else claims
    scales, rows = sweep_scales(specs), []
    r = roles(trials)
    grid = trials[r == "grid"]
    grid_label = (
        tradeoff.add_arms(
            grid.drop(columns=[c for c in ("arm", "role", "tuned_from") if c in grid])
        )["arm"]
        if len(grid)
        else pd.Series(dtype=str)
    )
    for claim in claims:
        found = _pairs(claim, trials, grid_label)
        decided = {(k, s) for k, s, _, _, basis in found if basis != "grid"}
        for key, sweep, fs_, bs_, basis in found:
            f, b = fs_.rows, bs_.rows
            fv, bv, common_step = _values(claim, f, b, curves, diagnostics)
            interval = (
                bootstrap.ratio_interval
                if claim.direction == "ratio"
                else bootstrap.paired_interval
                if claim.paired
                else bootstrap.difference_interval
            )(fv, bv)
            lower = _lower_is_better(claim, pd.concat([f, b]))
            scale, caps = _scale(claim, f, b, scales)
            if claim.quality:
                untrained = [
                    why
                    for side in (fs_, bs_)
                    if (why := _not_trained(claim, side.rows, side.label, curves))
                ]
                if basis == "grid":
                    caps = [UNTUNED, *untrained, *caps]
                elif basis == "tuned vs grid":
                    plain = bs_ if fs_.tuned else fs_
                    caps = [
                        f"{plain.label} not tuned (one shared lr): run with a protocol",
                        *untrained,
                        *caps,
                    ]
                else:
                    caps = [*untrained, *caps]
            steps_equal = (
                not claim.equal_steps
                or common_step is not None
                or set(f["steps"].dropna()) == set(b["steps"].dropna())
            )
            fsp, bsp = bootstrap.spread(fv), bootstrap.spread(bv)
            verdict, why = _verdict(
                claim, interval, bsp[0], lower, (len(fv), len(bv)), steps_equal, caps
            )
            stat = (
                "ratio of medians (baseline / focus)"
                if claim.direction == "ratio"
                else "median of per-seed differences (focus − baseline, same seeds)"
                if claim.paired
                else "difference of medians (focus − baseline)"
            )
            if common_step is not None:
                stat += f" at step {common_step}, the step every trial reached"
            rows.append(
                {
                    "claim": claim.id,
                    "paper": claim.paper,
                    "kind": claim.kind,
                    "text": claim.text,
                    "figure": claim.figure,
                    "claimed": claim.claimed,
                    "secondary": claim.secondary_labels(),
                    **dict(zip(SETTING, key)),
                    "sweep": sweep,
                    "basis": basis,
                    "primary": basis != "grid" or (key, sweep) not in decided,
                    "focus": fs_.label,
                    "baseline": bs_.label,
                    "metric": claim.metric,
                    "statistic": stat,
                    "focus_median": fsp[0],
                    "focus_min": fsp[1],
                    "focus_max": fsp[2],
                    "focus_seeds": len(fv),
                    "baseline_median": bsp[0],
                    "baseline_min": bsp[1],
                    "baseline_max": bsp[2],
                    "baseline_seeds": len(bv),
                    "estimate": interval[0],
                    "low": interval[1],
                    "high": interval[2],
                    "scale": scale,
                    "verdict": verdict,
                    "why": why,
                    "focus_tuning": fs_.tuning,
                    "baseline_tuning": bs_.tuning,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


# --- rendering ----------------------------------------------------------------------------


def _digits(row: Any) -> int:
    return 0 if row.metric in ("peak_memory_bytes", "compute_to_target") else 3


def _big(value: float) -> str:
    """Bytes and FLOPs: three significant digits; ``inf`` is a target never reached."""
    return "—" if math.isnan(value) else "never" if math.isinf(value) else f"{value:.3g}"


def _resampled(row: Any) -> str:
    paired = row.statistic.startswith("median of per-seed")
    return "seed pairs resampled" if paired else "seeds resampled within each arm"


def _arm_cell(row: Any, side: str) -> str:
    m, lo, hi, n = (getattr(row, f"{side}_{k}") for k in ("median", "min", "max", "seeds"))
    if _digits(row) == 0:
        shown = _big(m) if lo == hi else f"{_big(m)} [{_big(lo)}–{_big(hi)}]"
    else:
        shown = bootstrap.fmt_spread(m, lo, hi)
    return f"{getattr(row, side)}: {shown} ({n} seeds)"


def _interval(row: Any) -> str:
    if math.isnan(row.estimate):
        return "—"
    if row.statistic.startswith("ratio"):
        return f"{row.estimate:.3g}x [{row.low:.3g}–{row.high:.3g}]"
    d = _digits(row) or 3
    return f"{row.estimate:+.{d}f} [{row.low:+.{d}f}, {row.high:+.{d}f}]"


def _setting(row: Any) -> str:
    return f"{row.model}/{row.dataset} {row.quantizer} {int(row.bits)}-bit"


BASIS = {
    "tuned": "tuned arms (best vs best)",
    "tuned vs grid": "one arm tuned, one at the grid lr",
    "grid": "same lr (grid rows)",
}
DISPLAY_COLUMNS = [
    "claim",
    "paper",
    "kind",
    "claim text",
    "abstract",
    "claimed",
    "setting",
    "compared",
    "metric",
    "focus (median [min–max])",
    "baseline",
    "95% bootstrap interval",
    "scale",
    "verdict",
    "why",
]


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for people: one line per claim x setting x arm pair, arms as
    median [min–max]; a grid (same lr) comparison follows the tuned verdict it puts in context."""
    return pd.DataFrame(
        [
            {
                "claim": row.claim if row.primary else f"({row.claim})",
                "paper": row.paper,
                "kind": row.kind,
                "claim text": row.text,
                "abstract": row.figure,
                "claimed": row.claimed,
                "setting": _setting(row),
                "compared": BASIS.get(row.basis, row.basis),
                "metric": row.metric,
                "focus (median [min–max])": _arm_cell(row, "focus"),
                "baseline": _arm_cell(row, "baseline"),
                "95% bootstrap interval": _interval(row),
                "scale": row.scale,
                "verdict": row.verdict,
                "why": row.why,
            }
            for row in table.itertuples()
        ],
        columns=DISPLAY_COLUMNS,
    )


def secondary_figures(table: pd.DataFrame) -> pd.DataFrame:
    """Each listed claim's secondary figures, labelled (never used for a verdict)."""
    seen, rows = set(), []
    for row in table.itertuples():
        if row.claim in seen:
            continue
        seen.add(row.claim)
        rows += [{"claim": row.claim, "secondary figure": s} for s in row.secondary]
    return pd.DataFrame(rows, columns=["claim", "secondary figure"])


def sensitivity(table: pd.DataFrame) -> pd.DataFrame:
    """Each tuned arm's tuning configurations (final validation metric per configuration,
    best first), one row per arm x configuration, for the claims rows that decide a verdict."""
    rows, seen = [], set()
    for row in table[table["primary"].astype(bool)].itertuples() if len(table) else []:
        for side in ("focus", "baseline"):
            arm, entries = getattr(row, side), getattr(row, f"{side}_tuning")
            key = (_setting(row), row.sweep, arm)
            if not entries or key in seen:
                continue
            seen.add(key)
            rows += [
                {
                    "setting": key[0],
                    "arm": arm,
                    "rank": i + 1,
                    "configuration": e["configuration"],
                    "seeds": e["seeds"],
                    "final validation metric": e["metric"],
                    "final validation loss": e["loss"],
                }
                for i, e in enumerate(entries)
            ]
    return pd.DataFrame(
        rows,
        columns=[
            "setting",
            "arm",
            "rank",
            "configuration",
            "seeds",
            "final validation metric",
            "final validation loss",
        ],
    )


def _primary(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["primary"].astype(bool)] if len(table) else table


def summary_line(table: pd.DataFrame) -> str:
    decided = _primary(table)
    counts = ", ".join(f"{int((decided['verdict'] == v).sum())} {v}" for v in VERDICTS)
    return f"paper claims: {counts} (qsweep report --claims)"


def _context(table: pd.DataFrame, row: Any) -> pd.DataFrame:
    """The grid rows shown next to a tuned verdict (same claim, setting and sweep)."""
    same = (
        (table["claim"] == row.claim)
        & (table["sweep"] == row.sweep)
        & ~table["primary"].astype(bool)
    )
    for c in SETTING:
        same &= table[c] == getattr(row, c)
    return table[same]


EMPTY = "claims: no claim of the FOGZO or QuZO papers has both of its arms in these results"


def _fmt(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4g}"


def text(table: pd.DataFrame) -> str:
    """The claims for a terminal: a short block per claim x setting, verdict last; the
    same-lr (grid) comparison and each tuned arm's tuning sensitivity under a tuned verdict."""
    if table.empty:
        return EMPTY
    lines: list[str] = []
    for row in _primary(table).itertuples(index=False):
        lines += [
            f"{row.claim} ({row.paper}, {row.kind}): {row.text}",
            f"  abstract: {row.figure}",
            *[f"  {s}" for s in row.secondary],
            f"  {_setting(row)}, {row.metric}, {BASIS.get(row.basis, row.basis)}: "
            f"{_arm_cell(row, 'focus')} vs {_arm_cell(row, 'baseline')}",
            f"  {row.statistic}: {_interval(row)} (95% bootstrap, {_resampled(row)}); "
            f"claimed: {row.claimed}",
            f"  scale: {row.scale} -> {row.verdict.upper()}: {row.why}",
        ]
        for ctx in _context(table, row).itertuples(index=False):
            lines.append(
                f"  {BASIS['grid']}: {_arm_cell(ctx, 'focus')} vs {_arm_cell(ctx, 'baseline')}: "
                f"{_interval(ctx)} -> {ctx.verdict}: {ctx.why}"
            )
        for side in ("focus", "baseline"):
            entries = getattr(row, f"{side}_tuning")
            if entries:
                lines.append(f"  tuning sensitivity of {getattr(row, side)} (best first):")
                lines += [
                    f"    {e['configuration']}: validation metric {_fmt(e['metric'])}, "
                    f"loss {_fmt(e['loss'])} ({e['seeds']} seeds)"
                    for e in entries
                ]
        lines.append("")
    return "\n".join(lines).rstrip()


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return ["_none_"]
    head = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(_md_cell("—" if pd.isna(v) else v) for v in r) + " |"
        for r in frame.itertuples(index=False)
    ]
    return [head, rule, *body]


PROTOCOL = [
    "Each verdict compares the two arms' per-seed values through a seeded bootstrap 95% interval "
    "(seeds resampled within each arm) of the difference of medians (focus − baseline), or the "
    "ratio of medians (baseline / focus) for ratio claims.",
    "**reproduced**: the interval excludes no effect in the claimed direction and reaches the "
    "claimed size; **direction only**: right direction, short of the claimed size; "
    "**not reproduced**: the other direction, or the claimed size ruled out; **unresolved**: "
    "anything else.",
    "A verdict compares tuned arms (each arm's best tuning configuration re-run with fresh "
    "seeds, best vs best); grid rows at one shared lr give at most *unresolved* for a quality "
    "claim and are shown as context (in parentheses).",
    "A verdict also needs every arm to have trained (moved from its step-0 evaluation by more "
    "than its seed spread), enough seeds, equal storage (master_weights), and measured trials "
    "(dataset, steps, parameters, n) that meet the claim's needs; a sweep's name or declared "
    "scale can only lower a verdict.",
    "Secondary figures come from a secondary public summary: unverified, never used for a verdict.",
]


def markdown(table: pd.DataFrame) -> str:
    """The claims as a Markdown document: the verdicts with their intervals, the protocol in a
    few lines, the secondary figures and each tuned arm's tuning sensitivity."""
    lines = ["# Paper claims", ""]
    if table.empty:
        return "\n".join([*lines, EMPTY, ""])
    counts = summary_line(table).split(": ", 1)[1].split(" (")[0]
    shown = display(table)[
        [
            "claim",
            "kind",
            "setting",
            "compared",
            "metric",
            "focus (median [min–max])",
            "baseline",
            "95% bootstrap interval",
            "claimed",
            "verdict",
            "why",
        ]
    ]
    lines += [f"Verdicts: {counts}.", "", *_md_table(shown), "", "## Verdict protocol", ""]
    lines += [f"- {p}" for p in PROTOCOL]
    lines += ["", "## Claims and the abstracts' words", ""]
    seen = dict.fromkeys(table["claim"])
    first = table.drop_duplicates("claim").set_index("claim")
    lines += _md_table(
        pd.DataFrame(
            [
                {
                    "claim": c,
                    "paper": first.loc[c, "paper"],
                    "kind": first.loc[c, "kind"],
                    "text": first.loc[c, "text"],
                    "abstract": first.loc[c, "figure"],
                    "claimed": first.loc[c, "claimed"],
                }
                for c in seen
            ]
        )
    )
    secondary = secondary_figures(table)
    if len(secondary):
        lines += ["", "## Secondary figures (unverified, never used for a verdict)", ""]
        lines += _md_table(secondary)
    tuning = sensitivity(table)
    if len(tuning):
        lines += ["", "## Tuning sensitivity", ""]
        lines += [
            "Final validation metric per tuning configuration of each tuned arm, best first: how "
            "much the answer depends on tuning (compare the same-lr rows above).",
            "",
        ]
        for (setting, arm), group in tuning.groupby(["setting", "arm"], sort=False):
            lines += [f"### {arm} ({setting})", ""]
            lines += _md_table(
                group.drop(columns=["setting", "arm"]).assign(
                    **{
                        "final validation metric": group["final validation metric"].map(_fmt),
                        "final validation loss": group["final validation loss"].map(_fmt),
                    }
                )
            )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


CLAIMS: tuple[Claim, ...] = load_claims()
