"""The forecasting recipe's embedded default data: a few hundred generated hourly-like series.

Why generated: the recipe must run with no download, and its data should reward what a global model can
learn across series (shapes shared by many series, a weekly rhythm, how noise persists) while leaving the
one-series baselines well short. Forecasting the last day of each of the default 300 series: the
seasonal naive scores an sMAPE of 12.6 (OWA 1.36: it repeats the last day, so it misses every weekend's
start and end), Naive2 9.0, a global ridge regression on the last week's logs 7.1 (OWA 0.81; a test in
tests/test_series.py checks it stays under 0.9), and an oracle that knows each series' components 4.6
(OWA 0.54): a good global model has room between the last two.

How a series of n values is made (n from 300 to 800: holding out two days for validation and test leaves at
least 252, the fewest for which the organisers' seasonality test reaches lag 24); every factor is positive,
so every value is:
    x_t = level · exp(growth·t) · shift_t · day_t · week_t · exp(noise_t)
- level: log-uniform from 20 to 2000, so a model has to normalise each series;
- growth: a drift of N(0, 0.4/n) per step in logs, at most about ±1.3 over a series;
- day_t: one of 6 daily profiles shared across series (24-hour cycle, 2 harmonics), scaled by a depth
  of 0.2 to 0.6, with a start hour drawn per series;
- week_t: for three series in four, a weekend two days a week, lowered by a factor of 0.5 to 0.8 or raised
  by 1.25 to 1.6, with soft edges;
- shift_t: level shifts by a factor exp(N(0, 0.25)), about one per 500 steps;
- noise_t: AR(1) in logs with coefficient 0.5 to 0.9 and innovations of 0.02 to 0.05.
Generation is deterministic for a seed, with one numpy Generator drawing everything in a fixed order.
"""

from __future__ import annotations

import numpy as np

from seqtrain.data.series import SeriesSet

HORIZON = 24  # forecast one day ahead
PERIOD = 24  # the seasonal period that MASE and Naive2 use
WEEK = 168
PROFILES = 6  # daily shapes shared across series: what a global model can learn from many series at once


def synthetic_series(num_series: int = 300, seed: int = 0) -> tuple[SeriesSet, int, int]:
    """(series, horizon, period): `num_series` positive series of 300-800 values."""
    rng = np.random.default_rng(seed)
    hours = np.arange(PERIOD) / PERIOD
    profiles = [  # (PROFILES, 24) zero-mean shapes of amplitude 1: a daily and a half-daily harmonic
        _unit(
            np.cos(2 * np.pi * hours + rng.uniform(0, 2 * np.pi))
            + rng.uniform(0, 0.8) * np.cos(4 * np.pi * hours + rng.uniform(0, 2 * np.pi))
        )
        for _ in range(PROFILES)
    ]
    arrays = [_one(rng, profiles) for _ in range(num_series)]
    return SeriesSet.from_arrays([f"S{i}" for i in range(num_series)], arrays), HORIZON, PERIOD


def _unit(shape: np.ndarray) -> np.ndarray:
    shape = shape - shape.mean()
    return shape / np.abs(shape).max()


def _one(rng: np.random.Generator, profiles: list[np.ndarray]) -> np.ndarray:
    n = int(rng.integers(300, 801))
    t = np.arange(n)
    log = rng.uniform(np.log(20), np.log(2000)) + rng.normal(0, 0.4 / n) * t  # level and growth
    start = int(rng.integers(WEEK))  # where in the day and the week the series starts
    day = 1 + rng.uniform(0.2, 0.6) * profiles[rng.integers(PROFILES)][(t + start) % PERIOD]
    week = np.ones(n)
    if rng.random() < 3 / 4:
        away = np.abs(((t + start) % WEEK) / PERIOD - 6)  # days from the weekend's middle (days 5 and 6 of 0..6)
        away = np.minimum(away, 7 - away)  # round the week's circle
        edge = 1 / (1 + np.exp(-6 * (1 - away)))  # (n,) about 1 in the weekend, 0 outside, soft edges
        week = rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.25, 1.6)]) ** edge
    for step in rng.integers(0, n, rng.poisson(n / 500)):
        log[step:] += rng.normal(0, 0.25)
    phi, sigma = rng.uniform(0.5, 0.9), rng.uniform(0.02, 0.05)
    shocks = rng.normal(0, sigma, n)
    noise = np.empty(n)
    noise[0] = shocks[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        noise[i] = phi * noise[i - 1] + shocks[i]
    return np.exp(log + noise) * day * week
