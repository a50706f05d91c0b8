"""The static HTML report: one self-contained page (tables, plots as base64 PNG, the sweep spec,
package versions) plus the PNGs it embeds, drawn by ``analysis.plots``.

Takes a computed ``analysis.report_data.Report`` and only formats and draws it: no table is
recomputed here. The text pieces it shares with the terminal (display tables, ratio sentences,
status line) come from ``analysis.report_text``. A renderer is ``write_report(report, out_dir)
-> Path`` of the page it wrote; another page (e.g. an interactive one) can sit beside this
module with the same shape.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis import claims as paper_claims
from analysis import diagnostics as gradient_quality
from analysis import plots, tradeoff
from analysis.report_data import GROUP, TASK, Report
from analysis.report_text import (
    display_headline,
    display_reach,
    fmt_number,
    ratio_sentences,
    spread_cells,
    status_line,
)
from analysis.tradeoff import SETTING
from contract import storage


def slug(*parts: Any) -> str:
    """``parts`` joined by ``_`` with anything but letters, digits and ``._-`` replaced: a file
    name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(p) for p in parts))


FIGURES = [  # (Report table, one figure per group of, drawer, file prefix, what it shows)
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
    for table, keys, draw, prefix, what in FIGURES:
        if getattr(report, table).empty:  # e.g. no diagnostics in this sweep
            continue
        for key, rows in getattr(report, table).groupby(keys):
            title = f"{' / '.join(map(str, key))}: {what}"
            path = plot_dir / f"{prefix}_{slug(*key)}.png"
            out.append((title, draw(rows, path, title=title, colors=colors)))
    return out


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
    "pre{background:#f6f6f6;padding:1em}"
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
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{alt}</figcaption></figure>"
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
                f"{b / plots.byte_unit(b)[1]:.3g} {plots.byte_unit(b)[0]}"
                for b in m[f"peak_memory_{k}"]
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


def render_html(report: Report, figures: list[tuple[str, Path]]) -> str:
    """The page for ``report``, with ``figures`` ((caption, PNG path), from ``draw_plots``)
    embedded in order."""
    e = html.escape
    versions = pd.DataFrame(list(report.versions.items()), columns=["package", "version"])
    body = [
        f"<h1>qsweep report: {e(report.name)}</h1><p>{e(status_line(report))}</p>",
        *[f'<p class="note">{e(n)}</p>' for n in report.notes],
        '<h2>Headline</h2><p>Median [min–max] over seeds; "within noise": the arm\'s range '
        "overlaps the best arm's.</p>",
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
        _table(_equal_compute_table(report)),
        "<h2>Pareto front (final accuracy vs FLOPs)</h2>",
        _table(_front_table(report)),
        "<h2>Peak memory per arm</h2>",
        _table(_memory_table(report)),
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
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>qsweep report: {e(report.name)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and the PNGs in ``out_dir/plots/``."""
    out_dir = Path(out_dir)
    page = render_html(report, draw_plots(report, out_dir / "plots"))
    path = out_dir / "report.html"
    fs, target = storage.resolve(str(path))
    storage.write_text_atomic(fs, target, page)  # a refreshing browser never sees half a page
    return path
