"""The M4 competition's point and interval metrics and its two naive baselines, in float64 numpy.

Definitions follow the organisers' `Benchmarks and Evaluation.R` (Mcompetitions/M4-methods) and the
competition guide, so that a figure printed here can be set beside the published tables:
- sMAPE = mean of 200·|y−ŷ| / (|y|+|ŷ|);
- MASE  = mean of |y−ŷ| / scale, scale = mean over the series' training values of |x_t − x_{t−m}|;
- OWA   = ½ (sMAPE / sMAPE of Naive2 + MASE / MASE of Naive2), each mean taken over the whole set first;
- MSIS  = mean of (U−L) + (2/α)(L−y)·1{y<L} + (2/α)(y−U)·1{y>U}, divided by the same scale (α = 0.05);
- coverage = share of actuals within [L, U].
Every mean is over all (series, step) terms; with one horizon for all series, as in M4, that is the
mean over series of each series' mean, which is how the organisers average.

Rules where the organisers' code gives NaN or Inf (no M4 series reaches them):
- sMAPE: a term with |y| + |ŷ| = 0 (both zero, a perfect forecast) counts 0.
- MASE scale: a history of at most m values uses the lag-1 differences instead of lag m; a scale that is
  zero (a constant history, or a perfectly m-periodic one) or undefined (fewer than two values) leaves
  the series out of MASE and MSIS, for the method and its baselines alike (`evaluate` counts them in
  `mase_skipped`); sMAPE and coverage still count it. With every series left out, MASE is NaN.
- Seasonal naive with fewer than m values of history: the plain naive forecast.
- Naive2 on a series holding a value <= 0: the plain naive forecast, since the multiplicative
  decomposition divides by its values.

A set of series is a 2-D array (one row each), a sequence of 1-D arrays (ragged), or a `SeriesSet`; a
1-D array is one series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

ALPHA = 0.05  # M4 scores 95% prediction intervals
SEASONALITY_Z = 1.645  # the organisers' critical value (one-sided 95%) for the lag-m autocorrelation

Series = np.ndarray | Sequence[float]
SeriesLike = np.ndarray | Iterable[np.ndarray] | Iterable[Sequence[float]]


def as_rows(series: SeriesLike) -> list[np.ndarray]:
    """One series (1-D) or a set (2-D array, SeriesSet, sequence of 1-D arrays) -> float64 rows."""
    if isinstance(series, np.ndarray):
        if series.ndim == 1:
            return [series.astype(np.float64)]
        if series.ndim == 2:
            return list(series.astype(np.float64))
        raise ValueError(f"expected one series (1-D) or a set (2-D), got shape {series.shape}")
    rows = list(series)
    if rows and np.ndim(rows[0]) == 0:
        return [np.asarray(rows, dtype=np.float64)]
    return [np.asarray(row, dtype=np.float64) for row in rows]


def _flat(*sets: SeriesLike) -> tuple[list[int], list[np.ndarray]]:
    """Sets of equal shape -> (horizon of each series, one flat (sum of horizons,) array per set)."""
    rows = [as_rows(s) for s in sets]
    horizons = [len(r) for r in rows[0]]
    for other in rows[1:]:
        if [len(r) for r in other] != horizons:
            raise ValueError("actuals, forecasts and bounds must hold the same series with the same horizons")
    return horizons, [np.concatenate(r) if r else np.zeros(0) for r in rows]


def smape_terms(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """(N,), (N,) -> (N,) 200·|y−ŷ| / (|y|+|ŷ|), 0 where both are 0."""
    denominator = np.abs(y) + np.abs(yhat)
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, 200.0 * np.abs(y - yhat) / safe)


def smape(y: SeriesLike, yhat: SeriesLike) -> float:
    """sMAPE (0-200) over every step of one series or a set."""
    _, (y, yhat) = _flat(y, yhat)
    return float(smape_terms(y, yhat).mean())


def mase_scale(history: Series, m: int) -> float:
    """Mean |x_t − x_{t−m}| over the training values (lag 1 when there are at most m); NaN under two values."""
    x = np.asarray(history, dtype=np.float64)
    lag = m if len(x) > m else 1
    if len(x) <= lag:
        return math.nan
    return float(np.abs(x[lag:] - x[:-lag]).mean())


def mase_scales(histories: SeriesLike, m: int) -> np.ndarray:
    """(S,) MASE scale of each history; 0 or NaN where MASE leaves the series out."""
    return np.array([mase_scale(x, m) for x in as_rows(histories)], dtype=np.float64)


def _scaled_mean(terms: np.ndarray, scales: np.ndarray, horizons: list[int]) -> float:
    """Mean of terms / their series' scale over the series whose scale is positive; NaN if none is."""
    if len(scales) != len(horizons):
        raise ValueError(f"{len(scales)} histories for {len(horizons)} series of actuals")
    scale = np.repeat(scales, horizons)  # (S,) -> (sum of horizons,)
    usable = scale > 0  # False for 0 and NaN
    return float((terms[usable] / scale[usable]).mean()) if usable.any() else math.nan


def mase(y: SeriesLike, yhat: SeriesLike, history: SeriesLike, m: int) -> float:
    """MASE over every step of one series or a set; `history` holds each series' training values."""
    horizons, (y, yhat) = _flat(y, yhat)
    return _scaled_mean(np.abs(y - yhat), mase_scales(history, m), horizons)


def interval_scores(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """(N,) x3 -> (N,) the interval score: width plus 2/α times the distance by which y falls outside."""
    below = np.where(y < lower, lower - y, 0.0)
    above = np.where(y > upper, y - upper, 0.0)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def msis(
    y: SeriesLike,
    lower: SeriesLike,
    upper: SeriesLike,
    history: SeriesLike,
    m: int,
    alpha: float = ALPHA,
) -> float:
    """MSIS of (1−α) intervals over one series or a set, scaled like MASE."""
    horizons, (y, lower, upper) = _flat(y, lower, upper)
    return _scaled_mean(interval_scores(y, lower, upper, alpha), mase_scales(history, m), horizons)


def coverage(y: SeriesLike, lower: SeriesLike, upper: SeriesLike) -> float:
    """Share (0-1) of actuals within [lower, upper], over every step."""
    _, (y, lower, upper) = _flat(y, lower, upper)
    return float(((y >= lower) & (y <= upper)).mean())


def owa(smape_value: float, mase_value: float, smape_naive2: float, mase_naive2: float) -> float:
    """Overall weighted average: 1 is Naive2's accuracy, lower is better."""
    return 0.5 * (smape_value / smape_naive2 + mase_value / mase_naive2)


def acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """(n,) -> (max_lag,) autocorrelations at lags 1..max_lag as R's acf: mean-centred, each sum divided
    by n (not n−k), relative to lag 0. NaN for a constant series."""
    d = np.asarray(x, dtype=np.float64) - np.mean(x)
    c0 = float(d @ d)
    if c0 == 0:
        return np.full(max_lag, math.nan)
    return np.array([d[:-k] @ d[k:] for k in range(1, max_lag + 1)]) / c0


def is_seasonal(history: Series, m: int) -> bool:
    """The organisers' test: n >= 3m and |r_m| > 1.645·sqrt((1 + 2·Σ_{k<m} r_k²) / n).

    R's acf stops at lag floor(10·log10(n)) by default, so the organisers' r_m is NA (not seasonal) when
    m exceeds that, e.g. for m = 24 below n = 252; this function follows them. m = 1 is never seasonal."""
    x = np.asarray(history, dtype=np.float64)
    n = len(x)
    if m <= 1 or n < 3 * m or m > min(math.floor(10 * math.log10(n)), n - 1):
        return False
    r = acf(x, m)  # r[k-1] = r_k
    limit = SEASONALITY_Z * math.sqrt((1 + 2 * np.sum(r[: m - 1] ** 2)) / n)
    return bool(abs(r[m - 1]) > limit)  # False when r is NaN


def centred_moving_average(x: np.ndarray, m: int) -> np.ndarray:
    """(n,) -> (n,) R's decompose trend: an m-term centred moving average (2×m with half weights at the
    ends for even m), NaN where the window runs past either end."""
    weights = np.ones(m + 1 - m % 2) / m
    if m % 2 == 0:
        weights[[0, -1]] = 0.5 / m
    half = len(weights) // 2
    trend = np.full(len(x), math.nan)
    if len(x) >= len(weights):
        trend[half : len(x) - half] = np.convolve(x, weights, mode="valid")
    return trend


def seasonal_figure(history: Series, m: int) -> np.ndarray:
    """(m,) R's multiplicative `decompose` figure: index i is the mean of x/trend at positions i, i+m, ...
    (counted from the first value, NA ignored), normalised to mean 1. Position t's index is figure[t % m]."""
    x = np.asarray(history, dtype=np.float64)
    ratio = x / centred_moving_average(x, m)
    figure = np.array([np.nanmean(ratio[i::m]) for i in range(m)])
    return figure / figure.mean()


def naive(history: Series, h: int) -> np.ndarray:
    """(h,) the last value repeated."""
    return np.full(h, float(np.asarray(history, dtype=np.float64)[-1]))


def seasonal_naive(history: Series, h: int, m: int) -> np.ndarray:
    """(h,) the last m values repeated (the plain naive for m = 1 or fewer than m values)."""
    x = np.asarray(history, dtype=np.float64)
    if m <= 1 or len(x) < m:
        return naive(x, h)
    return np.resize(x[-m:], h)  # resize repeats the cycle


def naive2(history: Series, h: int, m: int) -> np.ndarray:
    """(h,) Naive2: for a seasonal series of positive values, the last seasonally adjusted value times the
    seasonal indices continued; otherwise the plain naive."""
    x = np.asarray(history, dtype=np.float64)
    if not (np.all(x > 0) and is_seasonal(x, m)):
        return naive(x, h)
    figure = seasonal_figure(x, m)
    n = len(x)
    return x[-1] / figure[(n - 1) % m] * figure[(n + np.arange(h)) % m]


def evaluate(
    actuals: SeriesLike,
    forecasts: SeriesLike,
    histories: SeriesLike,
    m: int,
    lower: SeriesLike | None = None,
    upper: SeriesLike | None = None,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Score forecasts of a set against its actuals, with Naive2 and the seasonal naive beside them.

    Returns smape, mase, owa, series (count) and mase_skipped, plus msis and coverage when bounds are given,
    and "naive2": {smape, mase}, "seasonal_naive": {smape, mase, owa}. Baselines forecast from `histories`.
    """
    histories = as_rows(histories)
    if (lower is None) != (upper is None):
        raise ValueError("give both interval bounds or neither")
    horizons, (y, yhat, *bounds) = _flat(actuals, forecasts, *([lower, upper] if lower is not None else []))
    scales = mase_scales(histories, m)  # (S,)
    n2 = np.concatenate([naive2(x, h, m) for x, h in zip(histories, horizons)] or [np.zeros(0)])
    sn = np.concatenate([seasonal_naive(x, h, m) for x, h in zip(histories, horizons)] or [np.zeros(0)])

    def point(forecast: np.ndarray) -> dict[str, float]:  # (sum of horizons,) -> its sMAPE and MASE
        mase_value = _scaled_mean(np.abs(y - forecast), scales, horizons)
        return {"smape": float(smape_terms(y, forecast).mean()), "mase": mase_value}

    method, naive2_scores, seasonal = point(yhat), point(n2), point(sn)
    for scores in (method, seasonal):
        scores["owa"] = owa(scores["smape"], scores["mase"], naive2_scores["smape"], naive2_scores["mase"])
    result: dict[str, Any] = {**method, "series": len(horizons), "mase_skipped": int(np.sum(~(scales > 0)))}
    if bounds:
        lo, up = bounds
        result["msis"] = _scaled_mean(interval_scores(y, lo, up, alpha), scales, horizons)
        result["coverage"] = float(((y >= lo) & (y <= up)).mean())
    return {**result, "naive2": naive2_scores, "seasonal_naive": seasonal}
