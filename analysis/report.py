"""``qsweep report``: load the sweeps, compute the report, render it.

Three steps, each its own module: ``analysis.report_data`` computes every table into a
``Report`` (data only), ``analysis.report_text`` renders the headline text the CLI prints and
``analysis.report_plotly`` writes the self-contained interactive page (``report.html``); with
``png``, ``analysis.report_html`` also draws the PNGs (``plots/``) and the static page
(``report-static.html``). This module only wires them together; the names below are
re-exported so ``from analysis.report import ...`` keeps working. matplotlib is imported only
for ``png`` (``draw_plots`` and ``write_report`` of the static page load it on first use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis import claims as paper_claims
from analysis.load import ResultsError, SweepResults, combine, load_results
from analysis.report_data import Report, build_report, curve_bands, matching_arms
from analysis.report_page import STATIC_PAGE, slug
from analysis.report_text import display_headline, display_reach, headline_text, ratio_sentences

__all__ = [
    "Report",
    "build_report",
    "curve_bands",
    "display_headline",
    "display_reach",
    "headline_text",
    "load_sweeps",
    "matching_arms",
    "ratio_sentences",
    "report_command",
    "slug",
]


def __getattr__(name: str) -> Any:
    """``draw_plots`` and ``write_report`` of the static page, imported (with matplotlib) only
    when asked for."""
    if name in ("draw_plots", "write_report"):
        from analysis import report_html

        return getattr(report_html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_sweeps(locations: list[str]) -> SweepResults:
    """``locations`` loaded and combined into one ``SweepResults``; no folder, or the same
    trials twice, is a ``ResultsError``."""
    if not locations:
        raise ResultsError("no results folder given")
    results = combine([load_results(location) for location in locations])
    if results.trials.duplicated(["sweep", "trial_id"]).any():
        raise ResultsError(
            f"{results.location}: the same trials appear twice (one sweep given twice?)"
        )
    return results


def report_command(
    locations: list[str],
    out: str | None,
    metric: str = "eval_loss",
    target: float | None = None,
    reference: str | None = "nspsa",
    focus: str = "fogzo",
    claims: bool = False,
    *,
    png: bool = False,
) -> tuple[Path, str]:
    """``qsweep report``: load and combine ``locations``, write the interactive report (to
    ``out``, else the first results folder; ``./<name>-report`` for a remote one) and return
    ``(report.html, headline text)``, with the papers' claims appended when ``claims``. With
    ``png`` also ``plots/*.png`` and the static page ``report-static.html`` (PNGs embedded).
    Bad input of any kind is one ``ResultsError``."""
    from analysis import report_plotly

    report = build_report(load_sweeps(locations), metric, target, reference, focus)
    out_dir = out or (locations[0] if "://" not in locations[0] else f"{slug(report.name)}-report")
    text = headline_text(report) + ("\n\n" + paper_claims.text(report.claims) if claims else "")
    if png:
        from analysis import report_html

        report_html.write_report(report, out_dir, page=STATIC_PAGE)
    return report_plotly.write_report(report, out_dir), text
