"""The report page without its plots: every table, note, the spec and package versions, as one
self-contained HTML document into which a renderer drops its plots.

Shared by the two pages, ``analysis.report_plotly`` (interactive Plotly figures, the default)
and ``analysis.report_html`` (static PNGs drawn by ``analysis.plots``). Takes a computed
``analysis.report_data.Report`` and only formats it; imports neither matplotlib nor plotly.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd
import yaml

from analysis import claims as paper_claims
from analysis import diagnostics as gradient_quality
from analysis import tradeoff
from analysis.report_data import Report
from analysis.report_text import (
    byte_unit,
    display_reach,
    fmt_number,
    ratio_sentences,
    spread_cells,
    status_line,
)
from analysis.summary import headline_rows
from analysis.tradeoff import SETTING

PAGE = "report.html"  # the page a report folder holds; ``--png`` adds the static one beside it
STATIC_PAGE = "report-static.html"


def slug(*parts: Any) -> str:
    """``parts`` joined by ``_`` with anything but letters, digits and ``._-`` replaced: a file
    name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(p) for p in parts))


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
    "pre{background:#f6f6f6;padding:1em}"
    ".note{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}"
    "figure{margin:1em 0}figcaption{color:#555;font-size:13px}"
)


def table(df: pd.DataFrame, empty: str = "none") -> str:
    return (
        df.to_html(index=False, border=0, na_rep="—")
        if len(df)
        else f"<p><i>{html.escape(empty)}</i></p>"
    )


def _equal_compute_table(report: Report) -> pd.DataFrame:
    eq = report.equal_compute
    if not len(eq):
        return eq
    return pd.DataFrame(
        {
            **{c: eq[c] for c in [*SETTING, "arm", "trials"]},
            "budget FLOPs": eq["budget_flops"].map(fmt_number),
            "FLOPs at last eval in budget": eq["flops_at_eval"].map(fmt_number),
            tradeoff.metric_label(report.trials): spread_cells(eq, "eval_metric"),
            "eval loss": spread_cells(eq, "eval_loss"),
        }
    )


def _memory_table(report: Report) -> pd.DataFrame:
    m = report.memory
    return m[[*SETTING, "arm"]].assign(
        **{
            f"peak memory ({k})": [
                f"{b / byte_unit(b)[1]:.3g} {byte_unit(b)[0]}" for b in m[f"peak_memory_{k}"]
            ]
            for k in ("mean", "max")
        }
    )


def _front_table(report: Report) -> pd.DataFrame:
    front = report.pareto[report.pareto["on_front"].astype(bool)]
    return front[[*SETTING, "arm", "seed", "trial_id"]].assign(
        **{
            "FLOPs": front["flops"].map(fmt_number),
            "final accuracy": front["final_eval_metric"].map("{:.3f}".format),
            "final eval loss": front["final_eval_loss"].map("{:.3f}".format),
        }
    )


def _claims_section(report: Report) -> list[str]:
    """The papers' claims: the verdicts (a same-lr grid comparison, in parentheses, after the
    tuned verdict it puts in context), the secondary figures and each tuned arm's tuning
    sensitivity."""
    e, claims = html.escape, report.claims
    out = [
        "<h2>Claims</h2>",
        f"<p>{e(paper_claims.RULE)}</p>",
        f"<p>{e(paper_claims.summary_line(claims).split(' (')[0])}</p>",
        table(paper_claims.display(claims)),
    ]
    secondary = paper_claims.secondary_figures(claims)
    if len(secondary):
        out += [
            "<h3>Secondary figures (unverified, never used for a verdict)</h3>",
            table(secondary),
        ]
    tuning = paper_claims.sensitivity(claims)
    if len(tuning):
        out.append(
            "<h3>Tuning sensitivity</h3><p>Final validation metric per tuning configuration of "
            "each tuned arm, best first: how much the answer depends on tuning (compare the "
            "same-lr rows above).</p>"
        )
        for (setting, arm), group in tuning.groupby(["setting", "arm"], sort=False):
            out += [
                f"<h4>{e(arm)} ({e(setting)})</h4>",
                table(
                    group.drop(columns=["setting", "arm"]).assign(
                        **{
                            c: group[c].map(fmt_number)
                            for c in ("final validation metric", "final validation loss")
                        }
                    )
                ),
            ]
    return out


def render_page(report: Report, plots: list[str], intro: str = "") -> str:
    """The page for ``report`` with ``plots`` (HTML fragments, in order) under "Plots", after
    ``intro`` (a paragraph saying how to read them)."""
    e = html.escape
    versions = pd.DataFrame(list(report.versions.items()), columns=["package", "version"])
    body = [
        f"<h1>qsweep report: {e(report.name)}</h1><p>{e(status_line(report))}</p>",
        *[f'<p class="note">{e(n)}</p>' for n in report.notes],
        '<h2>Headline</h2><p>Median [min–max] over seeds; "vs best" ranks arms within a '
        'regime (from scratch, fine-tune) and bit-width; "within noise": the arm\'s range '
        "overlaps the best arm's. The same table as the terminal's.</p>",
        table(headline_rows(report.trials)[1]),
        *(_claims_section(report) if len(report.claims) else []),
        f"<h2>Compute to target ({e(report.metric)})</h2><ul>",
        *[f"<li>{e(s)}</li>" for s in ratio_sentences(report)],
        "</ul>",
        table(display_reach(report)),
        "<h2>Quality at equal compute</h2>",
        table(_equal_compute_table(report)),
        "<h2>Pareto front (final accuracy vs FLOPs)</h2>",
        table(_front_table(report)),
        "<h2>Peak memory per arm</h2>",
        table(_memory_table(report)),
        *(
            [
                "<h2>Gradient quality (diagnostics probes)</h2>",
                "<p>Mean over probes of the cosine between each arm's mean estimate and a large-n "
                "zeroth-order reference gradient of the smoothed quantized loss, its SNR "
                "(||mean||² / trace of covariance), and STE's cosine at the same points.</p>",
                table(gradient_quality.display_summary(report.diagnostics_summary)),
            ]
            if len(report.diagnostics_summary)
            else []
        ),
        "<h2>Plots</h2>",
        intro,
        *plots,
        "<h2>Failed and stopped trials</h2>",
        table(report.failed, "no failed or stopped trial"),
        "<h2>Sweep spec</h2>",
        f"<pre>{e(yaml.safe_dump(report.spec, sort_keys=False))}</pre>",
        "<h2>Package versions</h2>",
        table(versions),
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>qsweep report: {e(report.name)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
