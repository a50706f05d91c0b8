"""Statistics over seeds: median with its range, "within noise" overlap, and a seeded bootstrap.

With three seeds a mean ± std hides how far apart the seeds really are; the median and
the min–max range show it, and two arms whose ranges overlap are not told apart. The
bootstrap resamples seeds within each arm (never across arms) with a fixed generator
seed, so a report says the same thing every time it is built. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, min, max) of the finite values; NaNs when there is none."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, math.nan
    return float(np.median(v)), float(v.min()), float(v.max())


def fmt_spread(median: float, low: float, high: float, digits: int = 3) -> str:
    """``0.911 [0.866–0.914]``; one seed shows only its value; "—" when nothing was measured."""
    if median is None or math.isnan(median):
        return "—"
    if low == high:
        return _fmt(median, digits)
    return f"{_fmt(median, digits)} [{_fmt(low, digits)}–{_fmt(high, digits)}]"


def _fmt(value: float, digits: int) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}" if abs(value) < 10 ** (digits + 2) else f"{value:.{digits}g}"


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Do the seed ranges ``(min, max)`` of two arms overlap (a comparison "within noise")?"""
    if any(math.isnan(x) for x in (*a, *b)):
        return False
    return a[0] <= b[1] and b[0] <= a[1]


def _resampled_medians(values: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    draws = rng.integers(0, len(values), size=(samples, len(values)))
    return np.median(values[draws], axis=1)


def _interval(stat: np.ndarray, level: float) -> tuple[float, float]:
    # inverted_cdf picks observed values: no interpolation between an infinite and a finite one
    tail = (1 - level) / 2
    low, high = np.quantile(stat, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def difference_interval(
    focus: Iterable[float],
    baseline: Iterable[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Median(focus) − median(baseline) and its bootstrap ``level`` interval (seeds resampled
    within each arm): ``(difference, low, high)``. NaNs when an arm has no value."""
    a, b = np.asarray(list(focus), dtype=float), np.asarray(list(baseline), dtype=float)
    if not len(a) or not len(b):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    diff = _resampled_medians(a, rng, samples) - _resampled_medians(b, rng, samples)
    return (float(np.median(a) - np.median(b)), *_interval(diff, level))


def paired_interval(
    focus: Iterable[float],
    baseline: Iterable[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """The median of per-pair differences (focus[i] − baseline[i], pairs sharing a seed and so
    the same random draws) and its bootstrap interval (pairs resampled)."""
    a, b = np.asarray(list(focus), dtype=float), np.asarray(list(baseline), dtype=float)
    if not len(a) or len(a) != len(b):
        return math.nan, math.nan, math.nan
    d = a - b
    rng = np.random.default_rng(seed)
    return (float(np.median(d)), *_interval(_resampled_medians(d, rng, samples), level))


def ratio_interval(
    focus: Iterable[float],
    baseline: Iterable[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Median(baseline) / median(focus) — "how many times less the focus arm needs" — and its
    bootstrap interval. A cost of ``inf`` (never reached) is allowed: the ratio becomes 0 or ∞."""
    a, b = np.asarray(list(focus), dtype=float), np.asarray(list(baseline), dtype=float)
    if not len(a) or not len(b):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = _resampled_medians(b, rng, samples) / _resampled_medians(a, rng, samples)
        point = float(np.median(b) / np.median(a))
    ratios = np.where(np.isnan(ratios), 1.0, ratios)  # inf / inf: both never reached, no difference
    return (1.0 if math.isnan(point) else point, *_interval(ratios, level))


def noise_flags(
    medians: Iterable[float], lows: Iterable[float], highs: Iterable[float], lower_is_better: bool
) -> list[str]:
    """Per arm of one group: "best" (best median), "within noise" (its seed range overlaps the
    best arm's, so the two are not told apart) or "" (clearly behind the best; or a lone arm)."""
    medians, lows, highs = list(medians), list(lows), list(highs)
    finite = [i for i, m in enumerate(medians) if m is not None and not math.isnan(m)]
    if len(finite) < 2:  # nothing to compare with
        return [""] * len(medians)
    best = (min if lower_is_better else max)(finite, key=lambda i: medians[i])
    return [
        "best"
        if i == best
        else "within noise"
        if i in finite and overlaps((lows[i], highs[i]), (lows[best], highs[best]))
        else ""
        for i in range(len(medians))
    ]
