"""The interactive HTML report (the default page): the tables of ``analysis.report_page`` and
every plot as a Plotly figure, plotly.js embedded once inline, so ``report.html`` opens
offline from a laptop, a shared drive or an e-mail attachment (nothing is fetched).

Takes a computed ``analysis.report_data.Report`` and only arranges its tables into figures
(no table is recomputed here). The figures are those of the static page
(``analysis.report_html.FIGURES``): curves vs FLOPs per setting, final quality vs bit-width,
the Pareto front per task, peak memory per arm, and gradient quality when the sweep probed
it. Hovering a point shows its trial id, seed, step, FLOPs and value (a median line: the
median, min and max over its seeds); drag zooms, double-click resets, a legend entry hides
or shows one arm in every panel of its figure. An arm has the same colour in every figure and
in the PNGs. Imports plotly, never matplotlib.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from analysis.report_data import GROUP, TASK, Report, every_kth
from analysis.report_page import PAGE, render_page
from analysis.report_text import byte_unit
from analysis.tradeoff import metric_label
from contract import storage

__all__ = ["FIGURES", "figures", "render_html", "write_report"]

# matplotlib's tab10 / tab20, so an arm has the colour of its PNG lines (plots.arm_colors)
TAB10 = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
TAB20 = [
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
]  # fmt: skip
SYMBOLS = ["circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x", "star"]
FLOPS_TITLE = "training compute (FLOPs, log scale)"
CURVES_HEIGHT, SMALL_HEIGHT = 680, 460  # pixels; the width follows the page
CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
INTRO = (
    "<p>Interactive plots: hover a point for its trial, seed, step, FLOPs and value (on a "
    "median line: the median and range over seeds); drag to zoom, double-click to zoom back "
    "out; click an arm in a legend to hide it, double-click to show it alone. The camera icon "
    "saves a figure as PNG (<code>qsweep report --png</code> writes them all).</p>"
)


def arm_colors(arms: Iterable[str]) -> dict[str, str]:
    """One colour per arm, the same in every figure (sorted, as ``plots.arm_colors``)."""
    names = sorted(set(arms))
    palette = TAB10 if len(names) <= 10 else TAB20
    return {arm: palette[i % len(palette)] for i, arm in enumerate(names)}


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _bits_label(bits: Any) -> str:
    return "" if bits is None or pd.isna(bits) else f"{int(bits)} bits"


def _flops_axis(fig: go.Figure) -> None:
    """Log FLOPs axes, Plotly's own range (an explicit range on shared axes breaks the
    autorange of their y axes in plotly.js; zoom and double-click set it anyway)."""
    fig.update_xaxes(type="log", dtick="D2", tickformat=".0e")  # 1-2-5 ticks, "2e+07"


def _layout(fig: go.Figure, title: str, height: int, legend: str) -> go.Figure:
    fig.update_layout(
        title={"text": html.escape(title), "x": 0.01, "xanchor": "left"},
        height=height,
        template="plotly_white",
        hovermode="closest",
        legend={"title": {"text": legend}, "groupclick": "togglegroup"},
        margin={"l": 70, "r": 20, "t": 70, "b": 60},
    )
    return fig


class _Legend:
    """Each arm once in a figure's legend; its other traces join its group, so one click on
    the entry hides or shows the arm in every panel."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def __call__(self, group: str) -> dict[str, Any]:
        first = group not in self.shown
        self.shown.add(group)
        return {"legendgroup": group, "showlegend": first, "name": group}


def _joined(rows: pd.DataFrame, by: str, columns: list[str]) -> dict[str, list[Any]]:
    """The rows of each ``by`` value one after another, a None row between two: one trace draws
    them as separate lines (and a hover still names each point's own trial)."""
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for i, (_, part) in enumerate(rows.groupby(by, sort=True)):
        for c in columns:
            out[c] += ([None] if i else []) + part[c].tolist()
    return out


def _every_kth(line: pd.DataFrame) -> pd.DataFrame:
    """A median line thinned as each seed's is (``report_data.every_kth``): 1,000 evaluations
    draw the same at 100 points and write a tenth of the page."""
    n = len(line)
    return line[every_kth(np.arange(n), np.full(n, n))]


def _trial_hover(value: str, extra: str = "") -> str:
    return (
        "trial %{customdata[0]}<br>seed %{customdata[1]}<br>step %{customdata[2]}"
        f"<br>FLOPs %{{x:.3g}}<br>{value} %{{y:.4g}}{extra}<extra>%{{fullData.name}}</extra>"
    )


def curves_figure(
    bands: pd.DataFrame, trials: pd.DataFrame, *, title: str, colors: dict[str, str]
) -> go.Figure:
    """Eval loss (top) and the eval metric (bottom) vs FLOPs, a column per bit-width: per arm
    the median over seeds (bold), its min-max band and every seed's own curve (thin).

    ``bands``: one (model, dataset, quantizer)'s ``report.curve_bands``; ``trials``: the same
    setting's ``report.trial_curves``. 0-FLOP evaluations have no place on a log axis."""
    bands, trials = bands[bands["flops"] > 0], trials[trials["flops"] > 0]
    bits = sorted(bands["bits"].dropna().unique()) or [None]
    label = metric_label(bands)
    rows = [("eval_loss", "eval loss"), ("eval_metric", f"eval {label}")]
    fig = make_subplots(
        rows=2,
        cols=len(bits),
        shared_xaxes=True,
        shared_yaxes="rows",
        subplot_titles=[_bits_label(b) for b in bits],
        vertical_spacing=0.08,
        horizontal_spacing=0.04,
    )
    legend = _Legend()
    for col, b in enumerate(bits, start=1):
        panel = bands[bands["bits"] == b] if b is not None else bands
        seeds = trials[trials["bits"] == b] if b is not None else trials
        for row, (metric, name) in enumerate(rows, start=1):
            for arm, line in panel.groupby("arm", sort=True):
                line, color = _every_kth(line.sort_values("flops")), colors[arm]
                fig.add_trace(
                    go.Scatter(
                        x=[*line["flops"], *line["flops"][::-1]],
                        y=[*line[f"{metric}_max"], *line[f"{metric}_min"][::-1]],
                        fill="toself",
                        fillcolor=_rgba(color, 0.15),
                        line={"width": 0},
                        hoverinfo="skip",
                        legendgroup=arm,
                        showlegend=False,
                        name=arm,
                    ),
                    row=row,
                    col=col,
                )
                own = seeds[seeds["arm"] == arm].sort_values(["sweep", "trial_id", "step"])
                joined = _joined(own, "trial_id", ["flops", metric, "trial_id", "seed", "step"])
                fig.add_trace(
                    go.Scatter(
                        x=joined["flops"],
                        y=joined[metric],
                        customdata=list(zip(joined["trial_id"], joined["seed"], joined["step"])),
                        mode="lines+markers",
                        line={"color": color, "width": 1},
                        marker={"size": 4},
                        opacity=0.55,
                        connectgaps=False,
                        hovertemplate=_trial_hover(name),
                        legendgroup=arm,
                        showlegend=False,
                        name=arm,
                    ),
                    row=row,
                    col=col,
                )
                spread = line[["seeds", f"{metric}_min", f"{metric}_max", "step"]]
                fig.add_trace(
                    go.Scatter(
                        x=line["flops"],
                        y=line[f"{metric}_median"],
                        customdata=spread.to_numpy().tolist(),
                        mode="lines",
                        line={"color": color, "width": 2.5},
                        hovertemplate=(
                            "median of %{customdata[0]} seeds<br>step %{customdata[3]}<br>"
                            f"FLOPs (median) %{{x:.3g}}<br>{name} %{{y:.4g}} "
                            "[%{customdata[1]:.4g}–%{customdata[2]:.4g}]"
                            "<extra>%{fullData.name}</extra>"
                        ),
                        **legend(arm),
                    ),
                    row=row,
                    col=col,
                )
            if col == 1:
                fig.update_yaxes(title_text=name, row=row, col=col)
    if len(bands):
        _flops_axis(fig)
    fig.update_xaxes(title_text=FLOPS_TITLE, row=2)
    return _layout(fig, title, CURVES_HEIGHT, "arm (median, min–max band, thin: each seed)")


def _positions(values: Iterable[Any], arms: list[str]) -> tuple[dict[Any, int], float]:
    """x of each bit-width and the offset between arms, so an arm's points sit beside the
    others' (as in the PNGs)."""
    return {b: i for i, b in enumerate(sorted(set(values)))}, 0.6 / max(len(arms), 1)


def _offset(k: int, arms: list[str], width: float) -> float:
    return (k - (len(arms) - 1) / 2) * width


def _bits_ticks(fig: go.Figure, positions: dict[Any, int]) -> None:
    fig.update_xaxes(
        tickvals=list(positions.values()),
        ticktext=[_bits_label(b) for b in positions],
        title_text="weight bit-width",
        zeroline=False,
    )


def quality_figure(
    quality: pd.DataFrame, trials: pd.DataFrame, *, title: str, colors: dict[str, str]
) -> go.Figure:
    """Final eval metric vs bit-width per arm: mean ± std over seeds and every completed
    trial's own final value (hover: its trial id, seed, steps, FLOPs).

    ``quality``: one (model, dataset, quantizer)'s ``report.headline`` rows; ``trials``: that
    setting's completed trials."""
    quality = quality.dropna(subset=["final_metric_mean"])
    label = metric_label(trials)
    arms = sorted(quality["arm"].unique())
    positions, width = _positions(quality["bits"], arms)
    fig, legend = go.Figure(), _Legend()
    for k, arm in enumerate(arms):
        rows = quality[quality["arm"] == arm].sort_values("bits")
        fig.add_trace(
            go.Scatter(
                x=[positions[b] + _offset(k, arms, width) for b in rows["bits"]],
                y=rows["final_metric_mean"],
                error_y={"type": "data", "array": rows["final_metric_std"].fillna(0).tolist()},
                customdata=list(zip(rows["bits"], rows["completed"])),
                mode="lines+markers",
                line={"color": colors[arm], "width": 1.5},
                marker={"size": 9},
                hovertemplate=(
                    "%{customdata[0]} bits<br>final "
                    + label
                    + " %{y:.4g} ± %{error_y.array:.2g} (mean ± std of %{customdata[1]} seeds)"
                    "<extra>%{fullData.name}</extra>"
                ),
                **legend(arm),
            )
        )
        own = trials[(trials["arm"] == arm) & trials["bits"].isin(positions)]
        fig.add_trace(
            _trial_points(
                own,
                [positions[b] + _offset(k, arms, width) for b in own["bits"]],
                own["final_eval_metric"],
                arm,
                f"final {label} %{{y:.4g}}",
                {"color": colors[arm], "size": 6, "symbol": "circle-open"},
            )
        )
    _bits_ticks(fig, positions)
    fig.update_yaxes(title_text=f"final eval {label} (mean ± std; open: each seed)")
    return _layout(fig, title, SMALL_HEIGHT, "arm")


def _trial_points(
    own: pd.DataFrame, x: list, y: pd.Series, arm: str, value: str, marker: dict
) -> go.Scatter:
    """One marker per trial of ``arm`` whose hover names it (trial id, seed, step, FLOPs)
    and shows ``value`` (a hover-template fragment); in the arm's legend group."""
    return go.Scatter(
        x=x,
        y=y,
        customdata=list(zip(own["trial_id"], own["seed"], own["steps"], own["flops"])),
        mode="markers",
        marker=marker,
        hovertemplate=(
            "trial %{customdata[0]}<br>seed %{customdata[1]}<br>step %{customdata[2]}"
            f"<br>FLOPs %{{customdata[3]:.3g}}<br>{value}<extra>%{{fullData.name}}</extra>"
        ),
        legendgroup=arm,
        showlegend=False,
        name=arm,
    )


def pareto_figure(points: pd.DataFrame, *, title: str, colors: dict[str, str]) -> go.Figure:
    """Final eval metric vs FLOPs of every completed trial (colour: arm, symbol: bit-width) and
    the Pareto front as a step line.

    ``points``: one (model, dataset)'s ``report.pareto`` rows."""
    points = points[points["flops"] > 0]
    bits = sorted(points["bits"].dropna().unique())
    symbols = {b: SYMBOLS[i % len(SYMBOLS)] for i, b in enumerate(bits)}
    fig, legend = go.Figure(), _Legend()
    for arm, group in points.groupby("arm", sort=True):
        columns = ["trial_id", "seed", "steps", "bits", "final_eval_loss", "on_front"]
        fig.add_trace(
            go.Scatter(
                x=group["flops"],
                y=group["final_eval_metric"],
                customdata=group[columns].astype(object).to_numpy().tolist(),
                mode="markers",
                marker={
                    "color": colors[arm],
                    "size": 10,
                    "opacity": 0.85,
                    "symbol": [symbols.get(b, "circle") for b in group["bits"]],
                },
                hovertemplate=_trial_hover(
                    "final metric",
                    "<br>%{customdata[3]} bits, final eval loss %{customdata[4]:.4g}"
                    "<br>on the front: %{customdata[5]}",
                ),
                **legend(arm),
            )
        )
    for b in bits:  # the symbol key (no data of its own)
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"color": "grey", "symbol": symbols[b], "size": 9},
                name=_bits_label(b),
                legendgroup="bits",
                hoverinfo="skip",
            )
        )
    front = points[points["on_front"].astype(bool)].sort_values(["flops", "final_eval_metric"])
    if len(front):
        fig.add_trace(
            go.Scatter(
                x=front["flops"],
                y=front["final_eval_metric"],
                mode="lines+markers",
                line={"color": "black", "width": 1.2, "shape": "hv"},
                marker={
                    "size": 15,
                    "color": "rgba(0,0,0,0)",
                    "line": {"color": "black", "width": 1.2},
                },
                name="Pareto front",
                hoverinfo="skip",
            )
        )
        _flops_axis(fig)
    fig.update_xaxes(title_text=FLOPS_TITLE)
    fig.update_yaxes(title_text=f"final eval {metric_label(points)}")
    return _layout(fig, title, SMALL_HEIGHT, "arm / bit-width")


def memory_figure(
    memory: pd.DataFrame, trials: pd.DataFrame, *, title: str, colors: dict[str, str]
) -> go.Figure:
    """Mean peak tensor memory per arm, bars grouped by bit-width, each trial's own peak a dot.

    ``memory``: one (model, dataset, quantizer)'s ``report.memory`` rows; ``trials``: that
    setting's trials that measured memory."""
    unit, scale = byte_unit(float(memory["peak_memory_max"].max()) if len(memory) else 0.0)
    arms = sorted(memory["arm"].unique())
    positions, width = _positions(memory["bits"], arms)
    fig, legend = go.Figure(), _Legend()
    for k, arm in enumerate(arms):
        rows = memory[memory["arm"] == arm].sort_values("bits")
        mean, peak = rows["peak_memory_mean"] / scale, rows["peak_memory_max"] / scale
        fig.add_trace(
            go.Bar(
                x=[positions[b] + _offset(k, arms, width) for b in rows["bits"]],
                y=mean,
                width=width * 0.95,
                marker={"color": colors[arm]},
                text=[f"{v:.3g}" for v in mean],
                textposition="outside",
                customdata=list(zip(rows["bits"], peak)),
                hovertemplate=(
                    f"%{{customdata[0]}} bits<br>peak memory: mean %{{y:.4g}} {unit}, "
                    f"max %{{customdata[1]:.4g}} {unit}<extra>%{{fullData.name}}</extra>"
                ),
                **legend(arm),
            )
        )
        own = trials[(trials["arm"] == arm) & trials["bits"].isin(positions)]
        fig.add_trace(
            _trial_points(
                own,
                [positions[b] + _offset(k, arms, width) for b in own["bits"]],
                own["peak_memory_bytes"] / scale,
                arm,
                f"peak memory %{{y:.4g}} {unit}",
                {"color": "black", "size": 5, "symbol": "circle-open"},
            )
        )
    _bits_ticks(fig, positions)
    fig.update_yaxes(title_text=f"peak tensor memory ({unit}; dots: each trial)")
    return _layout(fig, title, SMALL_HEIGHT, "arm")


def diagnostics_figure(rows: pd.DataFrame, *, title: str, colors: dict[str, str]) -> go.Figure:
    """Gradient quality vs step, a column per bit-width: cosine of each arm's mean estimate to
    the reference gradient (top; dashed: STE's at that arm's probes) and the estimate's
    variance (bottom, log; STE has none). Seeds of an arm are averaged per step, as in the
    PNG; the hover names the trials and seeds behind each point.

    ``rows``: one (model, dataset, quantizer)'s ``report.diagnostics`` rows (one per probe)."""
    bits = sorted(rows["bits"].dropna().unique()) or [None]
    fig = make_subplots(
        rows=2,
        cols=len(bits),
        shared_xaxes=True,
        subplot_titles=[_bits_label(b) for b in bits],
        vertical_spacing=0.08,
        horizontal_spacing=0.05,
    )
    legend = _Legend()
    figures = ["est_cosine", "est_variance", "ste_cosine"]
    for col, b in enumerate(bits, start=1):
        panel = rows[rows["bits"] == b] if b is not None else rows
        for arm, probes in panel.groupby("arm", sort=True):
            is_ste = bool((probes["estimator"] == "ste").all()) if "estimator" in probes else False
            trials = (probes["trial_id"] + " (seed " + probes["seed"].astype(str) + ")").groupby(
                probes["step"]
            )
            line = probes.groupby("step")[figures].mean().reset_index()
            who = [", ".join(sorted(set(trials.get_group(s)))) for s in line["step"]]
            hover = (
                "step %{x}<br>{what} %{y:.4g}<br>trials: %{customdata}"
                "<extra>%{fullData.name}</extra>"
            )
            fig.add_trace(
                go.Scatter(
                    x=line["step"],
                    y=line["est_cosine"],
                    customdata=who,
                    mode="lines+markers",
                    line={"color": colors[arm], "width": 2},
                    hovertemplate=hover.replace("{what}", "cosine to reference"),
                    **legend(arm),
                ),
                row=1,
                col=col,
            )
            if not is_ste:
                fig.add_trace(
                    go.Scatter(
                        x=line["step"],
                        y=line["ste_cosine"],
                        customdata=who,
                        mode="lines",
                        line={"color": colors[arm], "width": 1, "dash": "dash"},
                        opacity=0.7,
                        hovertemplate=hover.replace("{what}", "STE's cosine at these probes"),
                        legendgroup=arm,
                        showlegend=False,
                        name=arm,
                    ),
                    row=1,
                    col=col,
                )
            positive = line["est_variance"] > 0
            if positive.any():
                fig.add_trace(
                    go.Scatter(
                        x=line["step"][positive],
                        y=line["est_variance"][positive],
                        customdata=[w for w, p in zip(who, positive) if p],
                        mode="lines+markers",
                        line={"color": colors[arm], "width": 2},
                        hovertemplate=hover.replace("{what}", "variance (trace)"),
                        legendgroup=arm,
                        showlegend=False,
                        name=arm,
                    ),
                    row=2,
                    col=col,
                )
    fig.update_yaxes(type="log", row=2)
    fig.update_yaxes(title_text="cosine(mean estimate, reference)", row=1, col=1)
    fig.update_yaxes(title_text="variance (trace of covariance)", row=2, col=1)
    fig.update_xaxes(title_text="training step", row=2)
    return _layout(fig, title, CURVES_HEIGHT, "arm (dashed: STE at its probes)")


def _setting(frame: pd.DataFrame, keys: list[str], key: tuple[Any, ...]) -> pd.DataFrame:
    """The rows of ``frame`` in one figure's group (``keys`` = ``key``)."""
    if frame.empty:
        return frame
    return frame[(frame[keys] == pd.Series(key, index=keys)).all(axis=1)]


def _curves(report: Report, key: tuple, rows: pd.DataFrame, **kw: Any) -> go.Figure:
    return curves_figure(rows, _setting(report.trial_curves, GROUP, key), **kw)


def _quality(report: Report, key: tuple, rows: pd.DataFrame, **kw: Any) -> go.Figure:
    done = report.trials[report.trials["status"] == "completed"]
    return quality_figure(rows, _setting(done, GROUP, key), **kw)


def _pareto(report: Report, key: tuple, rows: pd.DataFrame, **kw: Any) -> go.Figure:
    return pareto_figure(rows, **kw)


def _memory(report: Report, key: tuple, rows: pd.DataFrame, **kw: Any) -> go.Figure:
    measured = report.trials[report.trials["peak_memory_bytes"].fillna(0) > 0]
    return memory_figure(rows, _setting(measured, GROUP, key), **kw)


def _diagnostics(report: Report, key: tuple, rows: pd.DataFrame, **kw: Any) -> go.Figure:
    return diagnostics_figure(rows, **kw)


FIGURES = [  # (Report table, one figure per group of, builder, what it shows): the PNGs' list
    ("curve_bands", GROUP, _curves, "eval loss and accuracy vs training compute"),
    ("headline", GROUP, _quality, "final eval accuracy vs bit-width"),
    ("pareto", TASK, _pareto, "Pareto front of final accuracy vs training compute"),
    ("memory", GROUP, _memory, "peak tensor memory per arm"),
    (
        "diagnostics",
        GROUP,
        _diagnostics,
        "gradient quality: cosine to the reference gradient and variance vs step",
    ),
]


def figures(report: Report) -> list[tuple[str, go.Figure]]:
    """Every plot of the report as (title, Plotly figure), in the order of the static page."""
    colors = arm_colors(report.trials["arm"])
    out = []
    for table, keys, build, what in FIGURES:
        if getattr(report, table).empty:  # e.g. no diagnostics in this sweep
            continue
        for key, rows in getattr(report, table).groupby(keys):
            title = f"{' / '.join(map(str, key))}: {what}"
            out.append((title, build(report, key, rows, title=title, colors=colors)))
    return out


def render_html(report: Report, figures: list[tuple[str, go.Figure]]) -> str:
    """The page for ``report`` with ``figures`` ((caption, figure), from ``figures``) in order;
    plotly.js inline once, before the first, and div ids ``plot-0``, ``plot-1``... so the same
    report always gives the same bytes."""
    plots = [
        "<figure>"
        + pio.to_html(
            fig,
            config=CONFIG,
            include_plotlyjs=i == 0,
            full_html=False,
            div_id=f"plot-{i}",
            default_height=f"{fig.layout.height}px",
        )
        + f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for i, (caption, fig) in enumerate(figures)
    ]
    return render_page(report, plots, INTRO if plots else "")


def write_report(report: Report, out_dir: str | Path, *, page: str = PAGE) -> Path:
    """Write ``out_dir/<page>``: the tables and interactive plots, self-contained."""
    path = Path(out_dir) / page
    fs, target = storage.resolve(str(path))
    storage.write_text_atomic(fs, target, render_html(report, figures(report)))
    return path
