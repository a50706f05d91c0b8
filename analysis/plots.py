"""Plots of the trade-off: each function takes a table already computed by ``analysis.tradeoff``
/ ``analysis.report_data`` and a path, draws one PNG and returns the path.

Layer 3 of the analysis: no numbers are computed here beyond what drawing needs (dropping
0-FLOP rows a log axis cannot show, picking a byte unit). Figure sizes are fixed constants
and figures are saved without ``bbox_inches="tight"``, so a PNG's pixel size is known in
advance and tests can check it. The Agg backend is forced: reports are drawn on headless
machines and must never try to open a window.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

from analysis.report_text import byte_unit
from analysis.tradeoff import metric_label

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

DPI = 100
# Inches; at DPI=100 the PNGs are 1300x750 (curves) and 900x550 (the others).
CURVES_SIZE = (13.0, 7.5)
SMALL_SIZE = (9.0, 5.5)
FLOPS_LABEL = "training compute (FLOPs, log scale)"
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def arm_colors(arms: Iterable[str]) -> dict[str, tuple]:
    """One colour per arm, the same in every figure of a report (sorted, so stable)."""
    names = sorted(set(arms))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {arm: cmap(i % cmap.N) for i, arm in enumerate(names)}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)  # a report draws dozens of figures; pyplot would keep them all alive
    return path


def _colors(colors: dict[str, tuple] | None, arms: Iterable[str]) -> dict[str, tuple]:
    return colors if colors is not None else arm_colors(arms)


def _flops_tick(x: float, _pos: object = None) -> str:
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # "2e7": short enough that neighbours never collide


def _log_flops_axis(ax: plt.Axes, low: float, high: float) -> None:
    """Log-scale FLOPs axis with 1-2-5 ticks. When every point spent about the same compute
    (a FLOPs-budgeted sweep) the axis spans at least [low/2, 2*high]: a zoom onto 0.1%
    differences would make equal budgets look like a trade-off."""
    ax.set_xscale("log")
    if high / low < 4:
        ax.set_xlim(low / 2, high * 2)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_flops_tick))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _empty(ax: plt.Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_curves(
    bands: pd.DataFrame, path: str | Path, *, title: str, colors: dict[str, tuple] | None = None
) -> Path:
    """Eval loss (top row) and accuracy (bottom row) vs cumulative training FLOPs, one column
    per bit-width, one line per arm: the median over seeds with a min-max band.

    ``bands`` is one (model, dataset, quantizer)'s rows of ``report.curve_bands``. The step-0
    evaluation (0 FLOPs) is dropped: it has no place on a log axis.
    """
    bands = bands[bands["flops"] > 0]
    bits = sorted(bands["bits"].dropna().unique()) or [None]
    colors = _colors(colors, bands["arm"])
    fig, axes = plt.subplots(
        2,
        len(bits),
        figsize=CURVES_SIZE,
        sharex=True,
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    rows = [
        ("eval_loss", "eval loss (cross-entropy)"),
        ("eval_metric", f"eval {metric_label(bands)}"),
    ]
    for col, b in enumerate(bits):
        panel = bands[bands["bits"] == b]
        for row, (metric, label) in enumerate(rows):
            ax = axes[row, col]
            for arm, line in panel.groupby("arm"):
                line = line.sort_values("flops")
                ax.plot(
                    line["flops"], line[f"{metric}_median"], color=colors[arm], lw=1.8, label=arm
                )
                ax.fill_between(
                    line["flops"],
                    line[f"{metric}_min"],
                    line[f"{metric}_max"],
                    color=colors[arm],
                    alpha=0.18,
                    lw=0,
                )
            if panel.empty:
                _empty(ax)
            else:
                _log_flops_axis(ax, bands["flops"].min(), bands["flops"].max())
            ax.grid(True, which="major", alpha=0.3)
            if row == 0:
                ax.set_title(f"{int(b)} bits" if b is not None else "")
            else:
                ax.set_xlabel(FLOPS_LABEL)
            if col == 0:
                ax.set_ylabel(label)
    handles = [
        Line2D([], [], color=c, lw=2.5, label=a)
        for a, c in colors.items()
        if a in set(bands["arm"])
    ]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title="arm (median, min-max band)")
    fig.suptitle(title)
    return _save(fig, path)


def plot_quality_vs_bits(
    quality: pd.DataFrame, path: str | Path, *, title: str, colors: dict[str, tuple] | None = None
) -> Path:
    """Final eval accuracy vs bit-width per arm, mean over seeds with ±1 std error bars.

    ``quality``: rows of ``tradeoff.final_quality`` (bits, arm, final_metric_mean/_std).
    """
    quality = quality.dropna(subset=["final_metric_mean"])
    colors = _colors(colors, quality["arm"])
    fig, ax = plt.subplots(figsize=SMALL_SIZE, layout="constrained")
    arms = sorted(quality["arm"].unique())
    # Arms sit side by side around each bit-width so their error bars do not overlap.
    width = 0.5 / max(len(arms), 1)
    positions = {b: i for i, b in enumerate(sorted(quality["bits"].unique()))}
    for k, arm in enumerate(arms):
        rows = quality[quality["arm"] == arm].sort_values("bits")
        x = [positions[b] + (k - (len(arms) - 1) / 2) * width for b in rows["bits"]]
        ax.errorbar(
            x,
            rows["final_metric_mean"],
            yerr=rows["final_metric_std"].fillna(0),
            color=colors[arm],
            marker="o",
            capsize=4,
            lw=1.5,
            label=arm,
        )
    ax.set_xticks(list(positions.values()), [f"{int(b)}" for b in positions])
    ax.set_xlabel("weight bit-width (bits)")
    ax.set_ylabel("final eval accuracy (mean ± std over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    if arms:
        fig.legend(title="arm", loc="outside right upper", fontsize="small")
    else:
        _empty(ax)
    ax.set_title(title)
    return _save(fig, path)


def plot_pareto(
    points: pd.DataFrame, path: str | Path, *, title: str, colors: dict[str, tuple] | None = None
) -> Path:
    """Final accuracy vs FLOPs of every completed trial (colour = arm, marker = bits) and the
    Pareto front as a step line: from each front point, accuracy holds until the next.

    ``points``: trial rows with arm, bits, flops, final_eval_metric and a boolean on_front.
    """
    points = points[points["flops"] > 0]
    colors = _colors(colors, points["arm"])
    bits = sorted(points["bits"].dropna().unique())
    markers = {b: _MARKERS[i % len(_MARKERS)] for i, b in enumerate(bits)}
    fig, ax = plt.subplots(figsize=SMALL_SIZE, layout="constrained")
    for (arm, b), group in points.groupby(["arm", "bits"]):
        ax.scatter(
            group["flops"],
            group["final_eval_metric"],
            color=colors[arm],
            marker=markers[b],
            s=40,
            alpha=0.8,
            edgecolors="none",
        )
    front = points[points["on_front"]].sort_values(["flops", "final_eval_metric"])
    if not front.empty:
        ax.step(front["flops"], front["final_eval_metric"], where="post", color="black", lw=1.2)
        ax.scatter(
            front["flops"],
            front["final_eval_metric"],
            facecolors="none",
            edgecolors="black",
            s=110,
            lw=1.2,
        )
        _log_flops_axis(ax, points["flops"].min(), points["flops"].max())
    else:
        _empty(ax)
    handles = [
        Line2D([], [], color=colors[a], marker="o", ls="", label=a)
        for a in sorted(colors)
        if a in set(points["arm"])
    ]
    handles += [
        Line2D([], [], color="grey", marker=markers[b], ls="", label=f"{int(b)} bits") for b in bits
    ]
    handles += [Line2D([], [], color="black", lw=1.2, marker="o", mfc="none", label="Pareto front")]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel("final eval accuracy")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_memory(
    memory: pd.DataFrame, path: str | Path, *, title: str, colors: dict[str, tuple] | None = None
) -> Path:
    """Peak tensor memory per arm, bars grouped by bit-width, in the unit that fits the data.

    ``memory``: rows of ``tradeoff.memory_by_arm`` (bits, arm, peak_memory_mean).
    """
    colors = _colors(colors, memory["arm"])
    unit, scale = byte_unit(float(memory["peak_memory_mean"].max()) if len(memory) else 0.0)
    fig, ax = plt.subplots(figsize=SMALL_SIZE, layout="constrained")
    arms = sorted(memory["arm"].unique())
    bits = sorted(memory["bits"].unique())
    width = 0.8 / max(len(arms), 1)
    for k, arm in enumerate(arms):
        rows = memory[memory["arm"] == arm].set_index("bits")
        x = [i + (k - (len(arms) - 1) / 2) * width for i, b in enumerate(bits) if b in rows.index]
        heights = [rows.loc[b, "peak_memory_mean"] / scale for b in bits if b in rows.index]
        bars = ax.bar(x, heights, width=width * 0.95, color=colors[arm], label=arm)
        ax.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=1)
    ax.set_xticks(range(len(bits)), [f"{int(b)} bits" for b in bits])
    ax.set_xlabel("weight bit-width")
    ax.set_ylabel(f"peak tensor memory ({unit})")
    ax.grid(True, axis="y", alpha=0.3)
    if arms:
        fig.legend(title="arm", loc="outside right upper", fontsize="small")
    else:
        _empty(ax, "no trial measured memory")
    ax.set_title(title)
    return _save(fig, path)


def plot_diagnostics(
    rows: pd.DataFrame, path: str | Path, *, title: str, colors: dict[str, tuple] | None = None
) -> Path:
    """Gradient quality vs training step, one column per bit-width: cosine of each arm's mean
    estimate to the reference gradient (top; STE's at the same probes dashed grey) and the
    estimate's variance, trace of the covariance (bottom, log scale; STE has none). STE's
    cosine at each other arm's probes (its own trajectory) is the thin dashed line in that
    arm's colour.

    ``rows`` is one (model, dataset, quantizer)'s rows of ``report.diagnostics`` (one per
    probe); several seeds of an arm are averaged per step.
    """
    bits = sorted(rows["bits"].dropna().unique()) or [None]
    colors = _colors(colors, rows["arm"])
    fig, axes = plt.subplots(
        2, len(bits), figsize=CURVES_SIZE, sharex=True, squeeze=False, layout="constrained"
    )
    for col, b in enumerate(bits):
        panel = rows[rows["bits"] == b]
        top, bottom = axes[0, col], axes[1, col]
        for arm, line in panel.groupby("arm"):
            is_ste = (line["estimator"] == "ste").all() if "estimator" in line else False
            line = (
                line.groupby("step")[["est_cosine", "est_variance", "ste_cosine"]]
                .mean()
                .reset_index()
            )
            top.plot(
                line["step"],
                line["est_cosine"],
                color=colors[arm],
                lw=1.8,
                marker="o",
                ms=3,
                label=arm,
            )
            if not is_ste:
                top.plot(
                    line["step"], line["ste_cosine"], color=colors[arm], lw=1.0, ls="--", alpha=0.7
                )
            positive = line[line["est_variance"] > 0]
            if len(positive):
                bottom.plot(
                    positive["step"],
                    positive["est_variance"],
                    color=colors[arm],
                    lw=1.8,
                    marker="o",
                    ms=3,
                )
        if panel.empty:
            _empty(top)
            _empty(bottom)
        if bottom.lines:
            bottom.set_yscale("log")
        top.set_title(f"{int(b)} bits" if b is not None else "")
        top.axhline(0, color="black", lw=0.6)
        bottom.set_xlabel("training step")
        for ax in (top, bottom):
            ax.grid(True, which="major", alpha=0.3)
        if col == 0:
            top.set_ylabel("cosine(mean estimate, reference)")
            bottom.set_ylabel("variance (trace of covariance)")
    handles = [
        Line2D([], [], color=c, lw=2.5, label=a) for a, c in colors.items() if a in set(rows["arm"])
    ]
    handles.append(Line2D([], [], color="grey", lw=1.0, ls="--", label="STE at that arm's probes"))
    fig.legend(handles=handles, loc="outside right upper", title="arm")
    fig.suptitle(title)
    return _save(fig, path)
