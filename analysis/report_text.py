"""The report for people, as text: display tables, ratio sentences and the terminal headline.

Takes a computed ``analysis.report_data.Report`` and only formats it (no table is recomputed,
nothing is drawn or written). Every renderer shares these: ``headline_text`` is what
``qsweep report`` prints, and the HTML pages show the same display tables and sentences.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis import bootstrap, tradeoff
from analysis import claims as paper_claims
from analysis.report_data import Report, matching_arms
from analysis.tradeoff import COSTS, SETTING


def spread_cells(table: pd.DataFrame, prefix: str) -> list[str]:
    """``median [min–max]`` over seeds from a table's ``<prefix>_median/_min/_max`` columns."""
    return [
        bootstrap.fmt_spread(m, lo, hi)
        for m, lo, hi in zip(
            table[f"{prefix}_median"], table[f"{prefix}_min"], table[f"{prefix}_max"]
        )
    ]


def fmt_number(value: float) -> str:
    """Three significant digits; an em dash for a missing value."""
    return "—" if pd.isna(value) else f"{value:.3g}"


def byte_unit(max_bytes: float) -> tuple[str, float]:
    """The largest binary unit in which ``max_bytes`` is at least 1 (B, KiB, MiB, GiB)."""
    for unit, scale in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if max_bytes >= scale:
            return unit, scale
    return "B", 1.0


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
    # accuracy up, perplexity down: per setting, as its trials say
    for key, g in h.groupby(SETTING):
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
            f"final {label}": spread_cells(h, "final_metric"),
            "vs best": flags,
            "final eval loss": spread_cells(h, "final_loss"),
            "FLOPs": h["flops_mean"].map(fmt_number),
            "wall s": h["wall_s_mean"].map(fmt_number),
        }
    )


def display_reach(report: Report) -> pd.DataFrame:
    """Median cost to first reach the target; "not reached (k/n)" unless every seed did."""

    def cost(row: Any, c: str) -> str:
        return (
            fmt_number(getattr(row, c))
            if row.reached == row.trials
            else f"not reached ({row.reached}/{row.trials})"
        )

    r = report.reach.merge(report.targets[[*SETTING, "source"]], on=SETTING, how="left")
    return pd.DataFrame(
        [
            {
                **{c: getattr(row, c) for c in SETTING},
                "arm": row.arm,
                "target": fmt_number(row.target),
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
        # one side was there before training
        if not pd.isna(ratio) and (ratio == 0 or math.isinf(ratio)):
            first, other = (row.versus, row.arm) if ratio == 0 else (row.arm, row.versus)
            out.append(
                f"at {where}: {first} is at the target before any training (it starts from a "
                f"checkpoint or the target is loose) — no finite ratio vs {other}"
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


def status_line(report: Report) -> str:
    """``sweep <name> (<location>): <n> trials, <count> <status>, ...``."""
    counts = ", ".join(f"{n} {s}" for s, n in report.trials["status"].value_counts().items())
    tuning = f" (+{report.tuning_trials} tuning trials)" if report.tuning_trials else ""
    return f"sweep {report.name} ({report.location}): {len(report.trials)} trials{tuning}, {counts}"


def headline_text(report: Report) -> str:
    """The terminal summary: headline table and the focus arm's compute-to-target ratios."""
    t = report.targets
    values = (
        ""
        if t["source"].str.startswith("explicit").all()
        else ": "
        + ", ".join(f"{_where(r, _varying(t))} {fmt_number(r.target)}" for r in t.itertuples())
    )
    sources = "; ".join(sorted(set(t["source"])))
    return "\n".join(
        [
            status_line(report),
            *report.notes,
            "",
            display_headline(report).to_string(index=False),
            "",
            f"compute to reach the target {report.metric} ({sources}{values}):",
            *(
                [f"  {s}" for s in ratio_sentences(report)]
                or ["  (no ratio: no focus arm or no target)"]
            ),
            *([paper_claims.summary_line(report.claims)] if len(report.claims) else []),
        ]
    )
