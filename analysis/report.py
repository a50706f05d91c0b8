"""The sweep report: every trade-off table in one ``Report``, written as a self-contained HTML
page (tables, plots as base64 PNG, the sweep spec, package versions) plus the PNGs.

Layer 2 of the analysis: ``build_report`` only calls the pure functions of
``analysis.tradeoff`` and arranges their tables; ``write_report`` hands those tables to
``analysis.plots`` and formats them, recomputing nothing. pandas, pyarrow and matplotlib
only: a report is made from the Parquet alone, without Ray or torch.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis import bootstrap, plots, tradeoff
from analysis import claims as paper_claims
from analysis import diagnostics as gradient_quality
from analysis.load import ResultsError, SweepResults, combine, load_results
from analysis.tradeoff import COSTS, SETTING
from contract import storage
from contract.metrics import REPORTED

GROUP = ["model", "dataset", "quantizer"]  # one figure per group; bit-widths are its panels
TASK = ["model", "dataset"]  # one Pareto front per task: every estimator and bit-width competes
FINISHED = ("completed", "failed", "stopped")


@dataclass
class Report:
    """Everything the report shows, as plain tables (tests check these, not pixels)."""

    name: str
    location: str
    metric: str
    reference: str | None
    focus: str
    trials: pd.DataFrame  # the trials table with its ``arm`` column
    headline: pd.DataFrame  # tradeoff.final_quality: setting x arm
    targets: pd.DataFrame  # per setting: target, where it came from, the reference arm that set it
    reach: pd.DataFrame  # tradeoff.summarize_reach + target; NaN cost = not reached by every seed
    ratios: pd.DataFrame  # focus arm vs every other arm: other's cost / focus's cost, per cost
    equal_compute: pd.DataFrame  # per setting x arm: quality at the setting's common FLOPs budget
    pareto: pd.DataFrame  # completed trials with ``on_front`` (one front per model x dataset)
    memory: pd.DataFrame  # tradeoff.memory_by_arm
    failed: pd.DataFrame  # failed and stopped trials with the last line of their error
    curve_bands: pd.DataFrame  # per setting x arm x step: median / min / max over seeds
    diagnostics: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # gradient-quality probes with arm (may be empty)
    diagnostics_summary: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # per setting x arm: mean cosine, SNR
    claims: pd.DataFrame = field(
        default_factory=pd.DataFrame
    )  # analysis.claims.evaluate: the papers' claims found here
    spec: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    text: str = ""  # headline_text(self), filled in by build_report


def matching_arms(arms: Any, name: str) -> list[str]:
    """Arms ``name`` designates: that arm, else every arm of that estimator (any sweep prefix,
    any hyper-parameter suffix), so ``--reference nspsa`` also works on combined sweeps."""
    arms = sorted(set(arms))
    if name in arms:
        return [name]
    return [a for a in arms if a.startswith(name + " ") or a.split(" ")[0].split(":")[-1] == name]


def _targets(
    trials: pd.DataFrame, metric: str, target: float | None, reference: str | None
) -> pd.DataFrame:
    """The target per setting: the explicit one, else the reference arm's worst-seed final value.
    With several reference arms (e.g. nspsa at several lr) the best-tuned one sets it."""
    rows = []
    for key, group in trials.groupby(SETTING):
        best, source, ref = math.nan, "no target (no reference arm given)", None
        if target is not None:
            best, source = float(target), f"explicit target {float(target):g}"
        elif reference:
            source = f"no target: no completed '{reference}' trial here"
            sign = 1 if tradeoff.lower_is_better(metric, group) else -1
            for arm in matching_arms(group["arm"], reference):
                value = tradeoff.reference_target(trials, arm, metric, key)
                if not math.isnan(value) and (math.isnan(best) or sign * value < sign * best):
                    best, source, ref = value, f"{arm}: worst-seed final {metric}", arm
        rows.append(
            {**dict(zip(SETTING, key)), "target": best, "source": source, "reference_arm": ref}
        )
    return pd.DataFrame(rows, columns=[*SETTING, "target", "source", "reference_arm"])


def _reach(curves: pd.DataFrame, targets: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Compute to first reach each setting's target, over finished trials only: a running trial
    has not failed to reach it yet, a diverged one has."""
    finished = curves[curves["status"].isin(FINISHED)]
    target_of = {tuple(row[: len(SETTING)]): row.target for row in targets.itertuples(index=False)}
    parts = [
        tradeoff.compute_to_target(c, metric, target_of[key])
        for key, c in finished.groupby(SETTING)
        if not math.isnan(target_of.get(key, math.nan))
    ]
    per_trial = (
        pd.concat(parts, ignore_index=True)
        if parts
        else tradeoff.compute_to_target(finished.iloc[:0], metric, math.nan)
    )
    return tradeoff.summarize_reach(per_trial).merge(
        targets[[*SETTING, "target"]], on=SETTING, how="left"
    )


def _ratios(reach: pd.DataFrame, focus_arms: list[str]) -> pd.DataFrame:
    """Focus arm vs every other arm: one row per pair, a ratio column per cost, and how many
    seeds of each side reached the target (to say who did not, instead of a number)."""
    columns = [*SETTING, "arm", "versus", *COSTS, "arm_reached", "versus_reached"]
    parts = [tradeoff.reach_ratios(reach, arm, cost) for arm in focus_arms for cost in COSTS]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    # unstack, not pivot_table(dropna=False): that would invent every combination of the index levels
    wide = (
        pd.concat(parts)
        .set_index([*SETTING, "arm", "versus", "cost"])["ratio"]
        .unstack("cost")
        .reset_index()
    )
    counts = reach[[*SETTING, "arm"]].assign(
        n=reach["reached"].astype(str) + "/" + reach["trials"].astype(str)
    )
    wide = wide.merge(counts.rename(columns={"n": "arm_reached"}), on=[*SETTING, "arm"], how="left")
    wide = wide.merge(
        counts.rename(columns={"arm": "versus", "n": "versus_reached"}), on=[*SETTING, "versus"]
    )
    return wide.reindex(columns=columns)


def _equal_compute(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Quality of every completed trial at its setting's common budget, aggregated per arm."""
    metrics = list(dict.fromkeys(["eval_metric", "eval_loss", metric]))
    agg: dict[str, tuple[str, str]] = {
        "trials": ("trial_id", "size"),
        "flops_at_eval": ("flops", "mean"),
    }
    for m in metrics:
        agg.update({f"{m}_{s}": (m, s) for s in ("median", "min", "max")})
    rows = []
    for _, c in curves[curves["status"] == "completed"].groupby(SETTING):
        budget = tradeoff.common_budget(c)
        q = tradeoff.quality_at_compute(c, metrics[0], budget)
        for m in metrics[1:]:
            q = q.merge(
                tradeoff.quality_at_compute(c, m, budget)[["sweep", "trial_id", m]],
                on=["sweep", "trial_id"],
            )
        rows.append(
            q.groupby([*SETTING, "arm"]).agg(**agg).reset_index().assign(budget_flops=budget)
        )
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=[*SETTING, "arm", "budget_flops"])
    )


def _pareto(trials: pd.DataFrame) -> pd.DataFrame:
    columns = [*SETTING, "arm", "seed", "trial_id", "flops", "final_eval_metric", "final_eval_loss"]
    done = trials[trials["status"] == "completed"].dropna(subset=["flops", "final_eval_metric"])
    parts = [
        g[columns].assign(
            on_front=tradeoff.pareto_front(
                g["flops"], g["final_eval_metric"], not tradeoff.lower_is_better("eval_metric", g)
            )
        )
        for _, g in done.groupby(TASK)
    ]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=[*columns, "on_front"])
    )


def curve_bands(curves: pd.DataFrame) -> pd.DataFrame:
    """Seeds of an arm aggregated per evaluation step: median FLOPs and the median, min and max
    of eval loss and accuracy (the line and band of the curves plot)."""
    agg: dict[str, tuple[str, str]] = {
        "flops": ("flops", "median"),
        "seeds": ("trial_id", "nunique"),
    }
    for m in ("eval_loss", "eval_metric"):
        agg.update({f"{m}_{s}": (m, s) for s in ("median", "min", "max")})
    if "metric_name" in curves:
        agg["metric_name"] = ("metric_name", "first")
    return curves.groupby([*SETTING, "arm", "step"]).agg(**agg).reset_index()


def _versions(trials: pd.DataFrame) -> dict[str, str]:
    found: dict[str, set[str]] = {}
    for text in trials["versions"].dropna().unique():
        try:
            for pkg, version in json.loads(text).items():
                found.setdefault(pkg, set()).add(str(version))
        except (ValueError, AttributeError):
            found.setdefault("unparsed", set()).add(str(text))
    return {pkg: ", ".join(sorted(v)) for pkg, v in sorted(found.items())}


def _last_line(text: Any) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _notes(
    trials: pd.DataFrame, reach: pd.DataFrame, targets: pd.DataFrame, metric: str, focus: str
) -> list[str]:
    """What a reader must know before trusting the numbers."""
    notes = []
    unfinished = int(trials["status"].isin(["running", "pending"]).sum())
    if unfinished:
        notes.append(
            f"The sweep is still running: {unfinished} of {len(trials)} trials are running or pending, "
            "so these results are partial."
        )
    own = reach.merge(targets[[*SETTING, "reference_arm"]], on=SETTING)
    own = own[(own["arm"] == own["reference_arm"]) & (own["reached"] < own["trials"])]
    if len(own):
        where = ", ".join(
            f"{r.arm} {r.reached}/{r.trials} at {r.bits} bits" for r in own.itertuples()
        )
        notes.append(
            f"Some seeds of the reference arm never reach the target ({where}): comparisons with "
            "that arm are 'not reached', not numbers. Pass an explicit target to compare at a fixed value."
        )
    if not matching_arms(trials["arm"], focus):
        notes.append(
            f"No arm matches the focus {focus!r} (arms: {', '.join(sorted(set(trials['arm'])))})."
        )
    return notes


def build_report(
    results: SweepResults,
    metric: str = "eval_loss",
    target: float | None = None,
    reference: str | None = "nspsa",
    focus: str = "fogzo",
) -> Report:
    """All tables of the report for ``results`` (one sweep or several ``combine``-d).

    Compute-to-target follows the FOGZO paper's "compute for the same loss as n-SPSA": the
    target is ``target`` if given, else the ``reference`` arm's worst-seed final ``metric`` in each
    setting; ratios compare the ``focus`` arm with every other arm of the setting.
    """
    if metric not in REPORTED:
        raise ResultsError(f"unknown metric {metric!r}; choose one of {sorted(REPORTED)}")
    if results.trials.empty:
        raise ResultsError(f"{results.location}: no trials recorded yet")
    trials = tradeoff.add_arms(results.trials)
    curves = tradeoff.attach_arms(results.curves, trials)
    targets = _targets(trials, metric, target, reference)
    reach = _reach(curves, targets, metric)
    failed = trials[trials["status"].isin(["failed", "stopped"])]
    failed = failed.assign(error=failed["error"].map(_last_line))[
        ["trial_id", "arm", *SETTING, "seed", "status", "attempts", "error"]
    ].reset_index(drop=True)
    report = Report(
        name=results.name,
        location=results.location,
        metric=metric,
        reference=reference,
        focus=focus,
        trials=trials,
        headline=tradeoff.final_quality(trials),
        targets=targets,
        reach=reach,
        ratios=_ratios(reach, matching_arms(trials["arm"], focus)),
        equal_compute=_equal_compute(curves, metric),
        pareto=_pareto(trials),
        memory=tradeoff.memory_by_arm(trials),
        failed=failed,
        curve_bands=curve_bands(curves[curves["status"] != "failed"]),
        spec=results.spec,
        versions=_versions(trials),
        notes=_notes(trials, reach, targets, metric, focus),
    )
    report.diagnostics = gradient_quality.by_step(results.diagnostics, trials)
    report.diagnostics_summary = gradient_quality.summary(report.diagnostics)
    report.claims = paper_claims.evaluate(
        trials, curves, paper_claims.specs_by_sweep(results.spec, trials)
    )
    report.text = headline_text(report)
    return report


# ------------------------------------------------------------------ text and HTML formatting


def _spread(table: pd.DataFrame, prefix: str) -> list[str]:
    """``median [min–max]`` over seeds from a table's ``<prefix>_median/_min/_max`` columns."""
    return [
        bootstrap.fmt_spread(m, lo, hi)
        for m, lo, hi in zip(
            table[f"{prefix}_median"], table[f"{prefix}_min"], table[f"{prefix}_max"]
        )
    ]


def _num(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3g}"


def _varying(table: pd.DataFrame) -> list[str]:
    """Setting columns worth printing: bits always, the others only when they differ."""
    return [
        c for c in SETTING if c == "bits" or (len(table) and table[c].nunique(dropna=False) > 1)
    ]


def _where(row: Any, varying: list[str]) -> str:
    parts = [str(getattr(row, c)) for c in varying if c != "bits"]
    return f"{' / '.join(parts) + ', ' if parts else ''}{int(row.bits)} bits"


def display_headline(report: Report) -> pd.DataFrame:
    """The headline table for people: final quality and loss as median [min–max] over seeds;
    "vs best" marks, per setting, the best arm and those whose range overlaps it (within noise)."""
    h, label = report.headline, tradeoff.metric_label(report.trials)
    flags, t = pd.Series("", index=h.index), report.trials
    for key, g in h.groupby(
        SETTING
    ):  # accuracy up, perplexity down: per setting, as its trials say
        lower = tradeoff.lower_is_better(
            "eval_metric", t[(t[SETTING] == pd.Series(key, index=SETTING)).all(axis=1)]
        )
        flags[g.index] = bootstrap.noise_flags(
            g["final_metric_median"], g["final_metric_min"], g["final_metric_max"], lower
        )
    return pd.DataFrame(
        {
            **{c: h[c] for c in _varying(h)},
            "arm": h["arm"],
            "done/trials": h["completed"].astype(str) + "/" + h["trials"].astype(str),
            **({"failed": h["failed"]} if h["failed"].any() else {}),
            f"final {label}": _spread(h, "final_metric"),
            "vs best": flags,
            "final eval loss": _spread(h, "final_loss"),
            "FLOPs": h["flops_mean"].map(_num),
            "wall s": h["wall_s_mean"].map(_num),
        }
    )


def display_reach(report: Report) -> pd.DataFrame:
    """Median cost to first reach the target; "not reached (k/n)" unless every seed did."""

    def cost(row: Any, c: str) -> str:
        return (
            _num(getattr(row, c))
            if row.reached == row.trials
            else f"not reached ({row.reached}/{row.trials})"
        )

    r = report.reach.merge(report.targets[[*SETTING, "source"]], on=SETTING, how="left")
    return pd.DataFrame(
        [
            {
                **{c: getattr(row, c) for c in SETTING},
                "arm": row.arm,
                "target": _num(row.target),
                "target from": row.source,
                "reached": f"{row.reached}/{row.trials}",
                **{f"median {c}": cost(row, c) for c in COSTS},
            }
            for row in r.itertuples()
        ]
    )


def ratio_sentences(report: Report, cost: str = "flops") -> list[str]:
    """One sentence per focus-vs-other pair, reference arm first: "at 2 bits: fogzo needs 12.3x
    less compute (flops) than nspsa" — or who did not reach the target, never a made-up number."""
    ratios, out = report.ratios, []
    refs = matching_arms(ratios["versus"], report.reference) if report.reference else []
    ratios = ratios.assign(_other=~ratios["versus"].isin(refs)).sort_values(
        [*SETTING, "_other", "arm", "versus"]
    )
    for row in ratios.itertuples():
        ratio, where = getattr(row, cost), _where(row, _varying(ratios))
        if not pd.isna(ratio) and (
            ratio == 0 or math.isinf(ratio)
        ):  # one side was there before training
            first, other = (row.versus, row.arm) if ratio == 0 else (row.arm, row.versus)
            out.append(
                f"at {where}: {first} is at the target before any training (it starts from a checkpoint "
                f"or the target is loose) — no finite ratio vs {other}"
            )
        elif not pd.isna(ratio) and abs(ratio - 1) < 0.005:
            out.append(f"at {where}: {row.arm} needs the same compute ({cost}) as {row.versus}")
        elif not pd.isna(ratio):
            factor = ratio if ratio >= 1 else 1 / ratio
            shown = (
                f"{factor:.2f}"
                if factor < 10
                else f"{factor:.1f}"
                if factor < 100
                else f"{factor:.0f}"
            )
            out.append(
                f"at {where}: {row.arm} needs {shown}x {'less' if ratio >= 1 else 'more'} compute "
                f"({cost}) than {row.versus}"
            )
        elif row.arm_reached.split("/")[0] != row.arm_reached.split("/")[1]:
            out.append(
                f"at {where}: {row.arm} does not reach the target (not reached {row.arm_reached}) "
                f"— no ratio vs {row.versus}"
            )
        else:
            out.append(
                f"at {where}: {row.versus} does not reach the target (not reached "
                f"{row.versus_reached}), {row.arm} does — no finite ratio"
            )
    return out


def _status_line(report: Report) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in report.trials["status"].value_counts().items())
    return f"sweep {report.name} ({report.location}): {len(report.trials)} trials, {counts}"


def headline_text(report: Report) -> str:
    """The terminal summary: headline table and the focus arm's compute-to-target ratios."""
    t = report.targets
    values = (
        ""
        if t["source"].str.startswith("explicit").all()
        else ": " + ", ".join(f"{_where(r, _varying(t))} {_num(r.target)}" for r in t.itertuples())
    )
    return "\n".join(
        [
            _status_line(report),
            *report.notes,
            "",
            display_headline(report).to_string(index=False),
            "",
            f"compute to reach the target {report.metric} ({'; '.join(sorted(set(t['source'])))}{values}):",
            *(
                [f"  {s}" for s in ratio_sentences(report)]
                or ["  (no ratio: no focus arm or no target)"]
            ),
            *([paper_claims.summary_line(report.claims)] if len(report.claims) else []),
        ]
    )


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(p) for p in parts))


_FIGURES = [  # (Report table, one figure per group of, drawer, file prefix, what it shows)
    (
        "curve_bands",
        GROUP,
        plots.plot_curves,
        "curves",
        "eval loss and accuracy vs training compute",
    ),
    (
        "headline",
        GROUP,
        plots.plot_quality_vs_bits,
        "quality_vs_bits",
        "final eval accuracy vs bit-width",
    ),
    (
        "pareto",
        TASK,
        plots.plot_pareto,
        "pareto",
        "Pareto front of final accuracy vs training compute",
    ),
    ("memory", GROUP, plots.plot_memory, "memory", "peak tensor memory per arm"),
    (
        "diagnostics",
        GROUP,
        plots.plot_diagnostics,
        "diagnostics",
        "gradient quality: cosine to the reference gradient and variance vs step",
    ),
]


def draw_plots(report: Report, plot_dir: Path) -> list[tuple[str, Path]]:
    """Every plot of the report as (title, PNG path); an arm keeps one colour throughout."""
    colors = plots.arm_colors(report.trials["arm"])
    out = []
    for table, keys, draw, prefix, what in _FIGURES:
        if getattr(report, table).empty:  # e.g. no diagnostics in this sweep
            continue
        for key, rows in getattr(report, table).groupby(keys):
            title = f"{' / '.join(map(str, key))}: {what}"
            out.append(
                (
                    title,
                    draw(
                        rows, plot_dir / f"{prefix}_{_slug(*key)}.png", title=title, colors=colors
                    ),
                )
            )
    return out


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
    "font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#eee}img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:1em}"
    ".note{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}"
)


def _table(df: pd.DataFrame, empty: str = "none") -> str:
    return (
        df.to_html(index=False, border=0, na_rep="—")
        if len(df)
        else f"<p><i>{html.escape(empty)}</i></p>"
    )


def _img(path: Path, caption: str) -> str:
    data, alt = base64.b64encode(path.read_bytes()).decode(), html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def _html(report: Report, figures: list[tuple[str, Path]]) -> str:
    e, eq = html.escape, report.equal_compute
    equal = (
        pd.DataFrame(
            {
                **{c: eq[c] for c in [*SETTING, "arm", "trials"]},
                "budget FLOPs": eq["budget_flops"].map(_num),
                "FLOPs at last eval in budget": eq["flops_at_eval"].map(_num),
                tradeoff.metric_label(report.trials): _spread(eq, "eval_metric"),
                "eval loss": _spread(eq, "eval_loss"),
            }
        )
        if len(eq)
        else eq
    )
    m, front = report.memory, report.pareto[report.pareto["on_front"].astype(bool)]
    memory = m[[*SETTING, "arm"]].assign(
        **{
            f"peak memory ({k})": [
                f"{b / plots.byte_unit(b)[1]:.3g} {plots.byte_unit(b)[0]}"
                for b in m[f"peak_memory_{k}"]
            ]
            for k in ("mean", "max")
        }
    )
    front = front[[*SETTING, "arm", "seed", "trial_id"]].assign(
        **{
            "FLOPs": front["flops"].map(_num),
            "final accuracy": front["final_eval_metric"].map("{:.3f}".format),
            "final eval loss": front["final_eval_loss"].map("{:.3f}".format),
        }
    )
    versions = pd.DataFrame(list(report.versions.items()), columns=["package", "version"])
    body = [
        f"<h1>qsweep report: {e(report.name)}</h1><p>{e(_status_line(report))}</p>",
        *[f'<p class="note">{e(n)}</p>' for n in report.notes],
        '<h2>Headline</h2><p>Median [min–max] over seeds; "within noise": the arm\'s range overlaps '
        "the best arm's.</p>",
        _table(display_headline(report)),
        *(
            [
                "<h2>Claims</h2>",
                f"<p>{e(paper_claims.RULE)}</p>",
                _table(paper_claims.display(report.claims)),
            ]
            if len(report.claims)
            else []
        ),
        f"<h2>Compute to target ({e(report.metric)})</h2><ul>",
        *[f"<li>{e(s)}</li>" for s in ratio_sentences(report)],
        "</ul>",
        _table(display_reach(report)),
        "<h2>Quality at equal compute</h2>",
        _table(equal),
        "<h2>Pareto front (final accuracy vs FLOPs)</h2>",
        _table(front),
        "<h2>Peak memory per arm</h2>",
        _table(memory),
        *(
            [
                "<h2>Gradient quality (diagnostics probes)</h2>",
                "<p>Mean over probes of the cosine between each arm's mean estimate and a large-n "
                "zeroth-order reference gradient of the smoothed quantized loss, its SNR "
                "(||mean||² / trace of covariance), and STE's cosine at the same points.</p>",
                _table(gradient_quality.display_summary(report.diagnostics_summary)),
            ]
            if len(report.diagnostics_summary)
            else []
        ),
        "<h2>Plots</h2>",
        *[_img(p, c) for c, p in figures],
        "<h2>Failed and stopped trials</h2>",
        _table(report.failed, "no failed or stopped trial"),
        "<h2>Sweep spec</h2>",
        f"<pre>{e(yaml.safe_dump(report.spec, sort_keys=False))}</pre>",
        "<h2>Package versions</h2>",
        _table(versions),
    ]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>qsweep report: {e(report.name)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and the PNGs in ``out_dir/plots/``."""
    out_dir = Path(out_dir)
    page = _html(report, draw_plots(report, out_dir / "plots"))
    path = out_dir / "report.html"
    fs, target = storage.resolve(str(path))
    storage.write_text_atomic(fs, target, page)  # a refreshing browser never sees half a page
    return path


def report_command(
    locations: list[str],
    out: str | None,
    metric: str = "eval_loss",
    target: float | None = None,
    reference: str | None = "nspsa",
    focus: str = "fogzo",
    claims: bool = False,
) -> tuple[Path, str]:
    """``qsweep report``: load and combine ``locations``, write the report (to ``out``, else the
    first results folder; ``./<name>-report`` for a remote one) and return ``(report.html,
    headline text)``, with the papers' claims appended when ``claims``. Bad input of any kind
    is one ``ResultsError``."""
    if not locations:
        raise ResultsError("no results folder given")
    results = combine([load_results(location) for location in locations])
    if results.trials.duplicated(["sweep", "trial_id"]).any():
        raise ResultsError(
            f"{results.location}: the same trials appear twice (one sweep given twice?)"
        )
    report = build_report(results, metric, target, reference, focus)
    out_dir = out or (locations[0] if "://" not in locations[0] else f"{_slug(report.name)}-report")
    text = report.text + ("\n\n" + paper_claims.text(report.claims) if claims else "")
    return write_report(report, out_dir), text
