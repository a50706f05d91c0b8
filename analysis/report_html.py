"""The static HTML report: the page of ``analysis.report_page`` with every plot a base64 PNG,
plus the PNGs themselves in ``plots/`` (for papers), drawn by ``analysis.plots``.

Takes a computed ``analysis.report_data.Report`` and only draws it: no table is recomputed
here. ``qsweep report --png`` writes it as ``report-static.html`` beside the interactive
``report.html`` of ``analysis.report_plotly``; both renderers have the same shape,
``write_report(report, out_dir, *, page=...) -> Path`` of the page written. Imports matplotlib
(through ``analysis.plots``): only ``--png`` loads this module.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from analysis import plots
from analysis.report_data import GROUP, TASK, Report
from analysis.report_page import PAGE, render_page, slug
from contract import storage

__all__ = ["FIGURES", "draw_plots", "render_html", "slug", "write_report"]

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


def _img(path: Path, caption: str) -> str:
    data, alt = base64.b64encode(path.read_bytes()).decode(), html.escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def render_html(report: Report, figures: list[tuple[str, Path]]) -> str:
    """The page for ``report``, with ``figures`` ((caption, PNG path), from ``draw_plots``)
    embedded in order."""
    return render_page(report, [_img(p, c) for c, p in figures])


def write_report(report: Report, out_dir: str | Path, *, page: str = PAGE) -> Path:
    """Write ``out_dir/<page>`` (self-contained) and the PNGs in ``out_dir/plots/``."""
    out_dir = Path(out_dir)
    text = render_html(report, draw_plots(report, out_dir / "plots"))
    path = out_dir / page
    fs, target = storage.resolve(str(path))
    storage.write_text_atomic(fs, target, text)  # a refreshing browser never sees half a page
    return path
