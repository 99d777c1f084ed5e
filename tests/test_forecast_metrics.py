import math

import numpy as np
import pytest

from conftest import SHARED_DATA
from seqtrain import forecast_metrics as fm
from seqtrain.data.series import SeriesSet, read_m4

M4 = SHARED_DATA / "m4"
HISTORY = [1.0, 3.0, 2.0, 5.0, 4.0]  # lag-1 differences 2, 1, 3, 1 (mean 7/4); lag-2 ones 1, 2, 2 (mean 5/3)


def test_smape_by_hand_with_zero_over_zero_counting_zero():
    # 200·10/210, 200·20/380, and 0/0 -> 0
    assert fm.smape([100, 200, 0], [110, 180, 0]) == pytest.approx((2000 / 210 + 4000 / 380 + 0) / 3, rel=1e-12)


def test_a_set_is_pooled_over_every_step_and_a_ragged_set_works():
    y, yhat = np.array([[100.0, 200.0], [50.0, 50.0]]), np.array([[110.0, 180.0], [50.0, 25.0]])
    by_hand = (2000 / 210 + 4000 / 380 + 0 + 5000 / 75) / 4
    assert fm.smape(y, yhat) == pytest.approx(by_hand, rel=1e-12)
    assert fm.smape(list(y), list(yhat)) == pytest.approx(by_hand, rel=1e-12)
    ragged = fm.smape([[100.0], [200.0, 0.0]], [[110.0], [180.0, 0.0]])
    assert ragged == pytest.approx((2000 / 210 + 4000 / 380) / 3, rel=1e-12)
    with pytest.raises(ValueError, match="same horizons"):
        fm.smape(y, yhat[:, :1])


def test_mase_by_hand_for_lag_one_and_lag_m():
    # errors |6-5| = 1 and |7-9| = 2: mean 1.5
    assert fm.mase([6, 7], [5, 9], HISTORY, 1) == pytest.approx(1.5 / (7 / 4), rel=1e-12)
    assert fm.mase([6, 7], [5, 9], HISTORY, 2) == pytest.approx(1.5 / (5 / 3), rel=1e-12)
    assert fm.mase_scale([1.0, 4.0], 4) == 3.0  # at most m values: lag-1 differences


def test_a_zero_or_undefined_scale_leaves_the_series_out_of_mase():
    assert fm.mase_scale([2.0, 2.0, 2.0], 1) == 0.0
    assert math.isnan(fm.mase_scale([2.0], 1))
    assert math.isnan(fm.mase([1.0], [2.0], [2.0, 2.0, 2.0], 1))
    ys, forecasts, histories = [[6.0, 7.0], [3.0, 3.0]], [[5.0, 9.0], [1.0, 1.0]], [HISTORY, [2.0, 2.0, 2.0]]
    assert fm.mase(ys, forecasts, histories, 1) == pytest.approx(1.5 / (7 / 4), rel=1e-12)
    scores = fm.evaluate(ys, forecasts, histories, 1)
    assert scores["mase_skipped"] == 1 and scores["mase"] == pytest.approx(1.5 / (7 / 4), rel=1e-12)
    assert scores["smape"] == pytest.approx((200 / 11 + 400 / 16 + 400 / 4 + 400 / 4) / 4, rel=1e-12)  # sMAPE keeps it


def test_msis_and_coverage_by_hand():
    y, lower, upper = [10.0, 20.0, 30.0], [8.0, 21.0, 25.0], [12.0, 25.0, 28.0]
    # inside: width 4; below by 1: 4 + 40·1; above by 2: 3 + 40·2  -> (4 + 44 + 83) / 3, over the scale 7/4
    assert fm.msis(y, lower, upper, HISTORY, 1) == pytest.approx(131 / 3 / (7 / 4), rel=1e-12)
    assert fm.coverage(y, lower, upper) == pytest.approx(1 / 3)
    scores = fm.evaluate([y], [y], [HISTORY], 1, lower=[lower], upper=[upper])
    assert scores["msis"] == pytest.approx(131 / 3 / (7 / 4), rel=1e-12) and scores["coverage"] == pytest.approx(1 / 3)
    assert "msis" not in fm.evaluate([y], [y], [HISTORY], 1)


def test_owa():
    assert fm.owa(10.0, 1.0, 20.0, 2.0) == 0.5  # half of each baseline error
    assert fm.owa(20.0, 4.0, 20.0, 2.0) == 1.5


def test_acf_as_r_computes_it():
    # x = 1..4: deviations -1.5 -0.5 0.5 1.5, sum of squares 5; lag 1: 0.75 - 0.25 + 0.75 = 1.25; lag 2: -0.75 - 0.75
    # lag 3: -2.25. R: acf(1:4) -> 1.00 0.25 -0.30 -0.45
    np.testing.assert_allclose(fm.acf(np.arange(1.0, 5.0), 3), [0.25, -0.30, -0.45], rtol=1e-12)
    assert np.isnan(fm.acf(np.ones(5), 2)).all()


def test_seasonality_test_on_clear_cases():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    assert fm.is_seasonal(10 + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, 120), 12)
    assert not fm.is_seasonal(10 + rng.normal(0, 1, 120), 12)  # white noise
    assert not fm.is_seasonal(10 + 3 * np.sin(2 * np.pi * t / 12), 1)  # m = 1 is never seasonal
    assert not fm.is_seasonal(10 + 3 * np.sin(2 * np.pi * t[:35] / 12), 12)  # n < 3m
    assert not fm.is_seasonal(np.full(60, 4.0), 12)  # constant: r is NaN
    # R's acf stops at lag floor(10·log10(n)): 23 for n = 240, so m = 24 is never reached there
    daily = 10 + 3 * np.sin(2 * np.pi * np.arange(264) / 24)
    assert not fm.is_seasonal(daily[:240], 24) and fm.is_seasonal(daily, 24)


def test_decomposition_by_hand():
    x = np.array([10.0, 20.0, 30.0, 40.0, 12.0, 22.0, 32.0, 42.0])
    # 2x4 moving average, weights 1/8, 1/4, 1/4, 1/4, 1/8: at t=2 (5 + 20 + 30 + 40 + 6) / 4, then 103/4, 105/4, 107/4
    trend = fm.centred_moving_average(x, 4)
    np.testing.assert_allclose(trend, [np.nan, np.nan, 101 / 4, 103 / 4, 105 / 4, 107 / 4, np.nan, np.nan], rtol=1e-12)
    np.testing.assert_allclose(fm.centred_moving_average(np.arange(1.0, 6.0), 3), [np.nan, 2, 3, 4, np.nan])  # odd m
    raw = np.array([12 / (105 / 4), 22 / (107 / 4), 30 / (101 / 4), 40 / (103 / 4)])  # positions t % 4 = 0, 1, 2, 3
    np.testing.assert_allclose(fm.seasonal_figure(x, 4), raw / raw.mean(), rtol=1e-12)


def test_naive2_continues_a_seasonal_cycle_and_falls_back_to_naive():
    cycle = np.tile([2.0, 4.0, 6.0, 8.0], 10)  # every 2x4 average is 5, so the figure is 0.4 0.8 1.2 1.6
    assert fm.is_seasonal(cycle, 4)
    np.testing.assert_allclose(fm.seasonal_figure(cycle, 4), [0.4, 0.8, 1.2, 1.6], rtol=1e-12)
    np.testing.assert_allclose(fm.naive2(cycle[:-1], 5, 4), [8.0, 2.0, 4.0, 6.0, 8.0], rtol=1e-12)  # 6 / 1.2 · figure
    np.testing.assert_array_equal(fm.naive2(cycle, 3, 1), [8.0] * 3)  # m = 1
    with_zero = cycle.copy()
    with_zero[0] = 0.0  # non-positive: the plain naive
    np.testing.assert_array_equal(fm.naive2(with_zero, 3, 4), [8.0] * 3)
    noise = np.random.default_rng(0).uniform(1, 2, 40)
    assert not fm.is_seasonal(noise, 4)
    np.testing.assert_array_equal(fm.naive2(noise, 2, 4), [noise[-1]] * 2)  # not seasonal: the plain naive


def test_seasonal_naive():
    history = np.arange(1.0, 11.0)
    np.testing.assert_array_equal(fm.seasonal_naive(history, 5, 4), [7, 8, 9, 10, 7])
    np.testing.assert_array_equal(fm.seasonal_naive(history, 2, 1), [10, 10])
    np.testing.assert_array_equal(fm.seasonal_naive(history[:3], 2, 4), [3, 3])  # fewer than m values: naive


def test_naive2_against_itself_scores_owa_one_by_construction():
    rng = np.random.default_rng(1)
    arrays = [50 + 10 * np.sin(np.arange(n) * np.pi / 6) + rng.normal(0, 2, n) for n in (40, 55, 70)]
    histories = SeriesSet.from_arrays(["a", "b", "c"], arrays)
    assert [fm.is_seasonal(x, 12) for x in histories] == [False, True, True]  # both of Naive2's branches
    actuals = rng.uniform(40, 60, (3, 6))
    forecasts = [fm.naive2(x, 6, 12) for x in histories]
    scores = fm.evaluate(actuals, forecasts, histories, 12)
    assert scores["owa"] == 1.0
    assert (scores["smape"], scores["mase"]) == (scores["naive2"]["smape"], scores["naive2"]["mase"])
    assert set(scores) == {"smape", "mase", "owa", "series", "mase_skipped", "naive2", "seasonal_naive"}
    assert set(scores["seasonal_naive"]) == {"smape", "mase", "owa"}


@pytest.mark.skipif(not (M4 / "Hourly-train.csv").is_file(), reason=f"{M4} is absent")
def test_m4_hourly_baselines_match_the_published_figures():
    train, test = read_m4(M4, "Hourly")
    horizon, period = 48, 24
    forecasts = [fm.seasonal_naive(x, horizon, period) for x in train]
    scores = fm.evaluate(test, forecasts, train, period)
    naive2, seasonal = scores["naive2"], scores["seasonal_naive"]
    assert (round(naive2["smape"], 3), round(naive2["mase"], 3)) == (18.383, 2.395)
    assert (round(seasonal["smape"], 3), round(seasonal["mase"], 3)) == (13.912, 1.193)
    # "Evaluation and Ranks.xlsx" holds sMAPE and MASE rounded to 3 decimals and computes OWA from those
    # cells (formula ((B3/B$5)+(I3/I$5))/2): 0.62745 there, 0.62750 from the unrounded figures.
    rounded = (round(v, 3) for v in (seasonal["smape"], seasonal["mase"], naive2["smape"], naive2["mase"]))
    assert round(fm.owa(*rounded), 3) == 0.627
    assert seasonal["owa"] == pytest.approx(0.6275, abs=5e-5)
