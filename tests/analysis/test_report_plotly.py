"""The interactive report (``analysis.report_plotly``, the default ``report.html``): plotly.js
inline once and nothing fetched, one Plotly figure per plot of the static page, hovers that
name each point's trial, seed, step and FLOPs, one legend entry per arm; ``--png`` adds the
PNGs and the static page, and matplotlib stays unloaded without it.

The browser test (``-m slow``) opens the page in headless Chromium and checks that every plot
rendered an SVG and that the page logged no error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from analysis import report_plotly
from analysis.load import load_results
from analysis.report import report_command
from analysis.report_data import build_report
from tests.analysis.test_diagnostics_report import diag_sweep
from tests.analysis.test_report import realistic_sweep

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PLOT_DIV = re.compile(r'<div id="(plot-\d+)" class="plotly-graph-div"')
# the realistic sweep: one (model, dataset, quantizer) -> curves, quality, memory, and one
# Pareto front; the diagnostics sweep adds the gradient-quality figure
REALISTIC_PLOTS = ["curves", "quality", "pareto", "memory"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> str:
    return realistic_sweep(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def page(sweep: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    html_path, _ = report_command([sweep], str(tmp_path_factory.mktemp("out")), target=1.0)
    assert html_path.name == "report.html"
    return html_path.read_text()


def plot_data(page: str, div_id: str) -> list[dict[str, Any]]:
    """The traces ``Plotly.newPlot`` draws into ``div_id``, as the page carries them."""
    start = page.index(f'"{div_id}",') + len(f'"{div_id}",')
    start += len(page[start:]) - len(page[start:].lstrip())
    data, _ = json.JSONDecoder().raw_decode(page, start)
    return data


def test_page_embeds_plotlyjs_once_and_fetches_nothing(page: str) -> None:
    header = get_plotlyjs()[:40]  # "/**\n* plotly.js v4.1.1\n..."
    assert "plotly.js v" in header
    assert page.count(header) == 1
    assert len(page) > len(get_plotlyjs())  # the library itself, not a reference to it
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<img\b|<iframe\b", page)
    assert 'src="http' not in page and "cdn.plot.ly/plotly" not in page


def test_one_plot_div_per_plot_of_the_static_page(page: str, tmp_path: Path) -> None:
    ids = PLOT_DIV.findall(page)
    assert ids == [f"plot-{i}" for i in range(len(REALISTIC_PLOTS))]
    assert all(plot_data(page, i) for i in ids)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    assert [c.split(": ")[1].split()[0] for c in captions] == [
        "eval",  # eval loss and accuracy vs training compute
        "final",
        "Pareto",
        "peak",
    ]
    diagnostics, _ = report_command([diag_sweep(tmp_path)], str(tmp_path / "out"))
    text = diagnostics.read_text()
    assert len(PLOT_DIV.findall(text)) == 5 and "gradient quality" in text
    assert text.count(get_plotlyjs()[:40]) == 1


def test_the_same_report_gives_the_same_page(sweep: str, page: str, tmp_path: Path) -> None:
    again, _ = report_command([sweep], str(tmp_path), target=1.0)
    assert again.read_text() == page  # fixed div ids: no random ids from plotly


def _curve_points(sweep: str) -> set[tuple[str, int, int, float, float]]:
    """(trial, seed, step, FLOPs, eval loss) of every evaluation a curve plot shows: trials
    that did not fail, evaluations after step 0."""
    results = load_results(sweep)
    ok = results.trials[results.trials["status"] != "failed"]["trial_id"]
    c = results.curves[results.curves["trial_id"].isin(ok) & (results.curves["flops"] > 0)]
    return {
        (r.trial_id, int(r.seed), int(r.step), float(r.flops), round(float(r.eval_loss), 9))
        for r in c.itertuples()
    }


def test_curve_hover_carries_trial_seed_step_and_flops(sweep: str, page: str) -> None:
    traces = plot_data(page, "plot-0")
    seeds = [  # the single-seed lines of the eval loss row (axes y, y2: one per bit-width)
        t
        for t in traces
        if "trial %{customdata[0]}" in t.get("hovertemplate", "") and t["yaxis"] in ("y", "y2")
    ]
    assert len(seeds) == 2 * 4  # bits 2 and 4 x four arms
    for trace in seeds:
        template = trace["hovertemplate"]
        for part in ("seed %{customdata[1]}", "step %{customdata[2]}", "FLOPs %{x", "eval loss"):
            assert part in template, template
    shown = {
        (cd[0], cd[1], cd[2], float(x), round(float(y), 9))
        for t in seeds
        for cd, x, y in zip(t["customdata"], t["x"], t["y"])
        if cd is not None and cd[0] is not None
    }
    assert shown == _curve_points(sweep)
    assert "fogzo-int4-s1" not in {p[0] for p in shown}  # the diverged trial has no curve here


def test_pareto_and_quality_hover_name_every_completed_trial(sweep: str) -> None:
    report = build_report(load_results(sweep), target=1.0)
    figures = dict(report_plotly.figures(report))
    done = report.trials[report.trials["status"] == "completed"]
    expected = {(r.trial_id, r.seed, r.steps, r.flops) for r in done.itertuples()}
    for caption, fig in figures.items():
        if "Pareto" in caption or "bit-width" in caption:
            points = [t for t in fig.data if "seed %{customdata[1]}" in (t.hovertemplate or "")]
            shown = set()
            for t in points:
                for cd, x in zip(t.customdata, t.x):
                    flops = x if "Pareto" in caption else cd[3]
                    shown.add((cd[0], int(cd[1]), int(cd[2]), float(flops)))
            assert shown == expected, caption


def test_each_arm_is_one_legend_entry_that_toggles_all_its_traces(sweep: str) -> None:
    report = build_report(load_results(sweep), target=1.0)
    arms = sorted(report.trials["arm"].unique())
    for caption, fig in report_plotly.figures(report):
        listed = [t.name for t in fig.data if t.showlegend is not False and t.name in arms]
        assert sorted(listed) == arms, caption
        for t in fig.data:
            if t.name in arms:
                assert t.legendgroup == t.name, caption
    colors = report_plotly.arm_colors(report.trials["arm"])
    curves = report_plotly.figures(report)[0][1]
    assert {t.line.color for t in curves.data if t.name == "ste" and t.mode == "lines"} == {
        colors["ste"]
    }


def test_png_writes_pngs_and_the_static_page_beside_the_interactive_one(
    sweep: str, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    report_command([sweep], str(plain), target=1.0)
    assert sorted(p.name for p in plain.iterdir()) == ["report.html"]
    from service.cli import app

    result = CliRunner().invoke(
        app,
        ["report", sweep, "--out", str(tmp_path / "png"), "--target", "1.0", "--png"],
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "png"
    pngs = sorted(p.name.split("_")[0] for p in (out / "plots").glob("*.png"))
    assert pngs == ["curves", "memory", "pareto", "quality"]
    static = (out / "report-static.html").read_text()
    assert static.count('<img src="data:image/png;base64,') == 4 and "<script" not in static
    assert len(PLOT_DIV.findall((out / "report.html").read_text())) == 4
    assert f"report: {out / 'report.html'}" in result.output


def test_without_png_matplotlib_is_not_loaded(sweep: str, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom analysis.report import report_command\n"
        f"report_command([{sweep!r}], {str(tmp_path)!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('matplotlib', 'torch', 'ray', 'service') or m in ('analysis.plots', "
        "'analysis.report_html'))\n"
        "print(bad)\nsys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "plots").exists()


# --- in a browser -------------------------------------------------------------------------

# Chromium logs every console message at INFO, console.error too; this prelude (added to a
# copy of the page only) marks console.error / console.warn so the log tells them apart.
CONSOLE_PRELUDE = (
    "<script>(function(){['error','warn'].forEach(function(k){var f=console[k];"
    "console[k]=function(){console.log('QSWEEP_CONSOLE_'+k.toUpperCase()+': '+"
    "Array.prototype.join.call(arguments,' '));return f.apply(console,arguments);};});})();"
    "</script>"
)
CONSOLE_FAILURE = re.compile(
    r"Uncaught|QSWEEP_CONSOLE_ERROR|Failed to load resource|:(ERROR|FATAL):CONSOLE"
)


def open_in_chromium(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """``page`` (a copy with the console prelude) loaded in headless Chromium: the DOM after
    10 s of virtual time, and the console lines of the log that signal an error."""
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Chromium (apt install chromium)")
    copy = tmp_path / f"browser-{page.name}"
    copy.write_text(page.read_text().replace("<head>", "<head>" + CONSOLE_PRELUDE, 1))
    done = subprocess.run(
        [
            CHROMIUM,
            *"--headless --no-sandbox --disable-gpu --disable-quic --no-first-run".split(),
            *"--disable-background-networking --disable-component-update --disable-sync".split(),
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *"--enable-logging=stderr --v=0 --virtual-time-budget=10000 --dump-dom".split(),
            copy.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    return done.stdout, [line for line in console if CONSOLE_FAILURE.search(line)]


def rendered_plots(dom: str) -> list[bool]:
    """For each ``.js-plotly-plot`` element of the dumped DOM, in order: does it hold a
    ``main-svg`` before the next one starts?"""
    starts = [m.start() for m in re.finditer(r'<div[^>]*class="[^"]*\bjs-plotly-plot\b', dom)]
    ends = [*starts[1:], len(dom)]
    return ['class="main-svg"' in dom[a:b] for a, b in zip(starts, ends)]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    html_path, _ = report_command([diag_sweep(tmp_path)], str(tmp_path / "out"))
    expected = len(PLOT_DIV.findall(html_path.read_text()))
    assert expected == 5
    dom, errors = open_in_chromium(html_path, tmp_path)
    assert rendered_plots(dom) == [True] * expected, "a plot did not render its SVG"
    assert errors == []
    assert dom.count('class="legendtoggle"') >= 3  # clickable legend entries (one per arm)


@pytest.mark.slow
def test_the_browser_check_sees_errors_and_unrendered_plots(tmp_path: Path) -> None:
    """The check can fail: a page whose plot throws, and one that logs an error."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<html><head></head><body><div class='js-plotly-plot'></div>"
        "<script>console.error('boom');undefinedFunction();</script></body></html>"
    )
    dom, errors = open_in_chromium(broken, tmp_path)
    assert rendered_plots(dom) == [False]
    assert any("Uncaught" in e for e in errors) and any("boom" in e for e in errors)


def test_rendered_plots_reads_each_plot_separately() -> None:
    dom = (
        '<div class="plot-container plotly"><div class="svg-container">'
        '<div class="js-plotly-plot" id="plot-0"><svg class="main-svg"></svg></div>'
        '<div class="js-plotly-plot" id="plot-1"><div></div></div>'
    )
    assert rendered_plots(dom) == [True, False]


def test_long_curves_are_thinned_for_the_page_not_for_the_numbers(tmp_path: Path) -> None:
    from analysis.report_data import TRIAL_CURVE_POINTS
    from benchmarks.results_path import write_synthetic

    write_synthetic(tmp_path / "s", 100, 250)  # 100 trials of 250 evaluations, steps 0..2490
    report = build_report(load_results(str(tmp_path / "s")))
    shown = report.trial_curves.groupby("trial_id")["step"]
    assert shown.size().max() <= TRIAL_CURVE_POINTS + 1 < 250
    assert shown.size().min() > TRIAL_CURVE_POINTS // 2
    assert (shown.min() == 0).all() and (shown.max() == 2490).all()  # first and last kept
    assert report.curve_bands.groupby("arm")["step"].nunique().eq(250).all()  # bands: all
    medians = [t for t in report_plotly.figures(report)[0][1].data if t.line.width == 2.5]
    assert medians and all(
        TRIAL_CURVE_POINTS // 2 < len(t.x) <= TRIAL_CURVE_POINTS + 1 for t in medians
    )
    bands = report.curve_bands.set_index(["arm", "bits", "step"])
    for trace in medians[:3]:  # a drawn median point is the median over every seed there
        for step, y in zip([c[3] for c in trace.customdata], trace.y):
            assert any(
                abs(bands.loc[(trace.name, b, step), "eval_loss_median"] - y) < 1e-12
                or abs(bands.loc[(trace.name, b, step), "eval_metric_median"] - y) < 1e-12
                for b in report.curve_bands["bits"].unique()
                if (trace.name, b, step) in bands.index
            )
