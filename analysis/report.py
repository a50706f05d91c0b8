"""``qsweep report``: load the sweeps, compute the report, render it.

Three steps, each its own module: ``analysis.report_data`` computes every table into a
``Report`` (data only), ``analysis.report_text`` renders the headline text the CLI prints and
``analysis.report_html`` writes the self-contained HTML page with its PNG plots. This module
only wires them together; the names below are re-exported so ``from analysis.report import
...`` keeps working.
"""

from __future__ import annotations

from pathlib import Path

from analysis import claims as paper_claims
from analysis.load import ResultsError, SweepResults, combine, load_results
from analysis.report_data import Report, build_report, curve_bands, matching_arms
from analysis.report_html import draw_plots, slug, write_report
from analysis.report_text import display_headline, display_reach, headline_text, ratio_sentences

__all__ = [
    "Report",
    "build_report",
    "curve_bands",
    "display_headline",
    "display_reach",
    "draw_plots",
    "headline_text",
    "load_sweeps",
    "matching_arms",
    "ratio_sentences",
    "report_command",
    "write_report",
]


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
) -> tuple[Path, str]:
    """``qsweep report``: load and combine ``locations``, write the report (to ``out``, else the
    first results folder; ``./<name>-report`` for a remote one) and return ``(report.html,
    headline text)``, with the papers' claims appended when ``claims``. Bad input of any kind
    is one ``ResultsError``."""
    report = build_report(load_sweeps(locations), metric, target, reference, focus)
    out_dir = out or (locations[0] if "://" not in locations[0] else f"{slug(report.name)}-report")
    text = headline_text(report) + ("\n\n" + paper_claims.text(report.claims) if claims else "")
    return write_report(report, out_dir), text
