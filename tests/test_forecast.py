"""The forecast recipe: windows cut from flat arrays, a forecaster that padding never changes and that starts
as the seasonal naive forecast, M4 metrics summed exactly over batches, and the commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, assert_float32_close, seqtrain
from seqtrain import checkpoint
from seqtrain.config import compose
from seqtrain.data.series import SeriesSet
from seqtrain.forecast_metrics import evaluate, seasonal_naive
from seqtrain.models.forecaster import RecurrentForecaster
from seqtrain.recipes.forecast import Forecast, ForecastLoss, Origins, Windows, collate

RECIPE = Forecast()
TINY = [
    "data.num_series=40",
    "model.hidden_size=16",
    "model.mlp_hidden=16",
    "data.batch_size=32",
    "trainer.max_time=null",
    "trainer.max_steps=30",
    "trainer.val_every_steps=15",
    "trainer.log_every_steps=5",
]


def test_windows_cut_every_series_from_its_end_and_stop_before_what_they_forecast():
    series = SeriesSet.from_arrays(["a", "b", "c"], [np.arange(100.0), np.arange(1000, 1030.0), np.arange(5.0)])
    windows = Windows(series, horizon=6, period=4, context=20, max_windows=1000)
    assert windows.stride == 1 and len(windows) == (100 - 6 - 4 + 1) + (30 - 6 - 4 + 1)  # "c" is too short for any
    first = windows[0]  # series a's latest window: the last 20 values before the last 6
    assert first["history"].tolist() == list(range(74, 94)) and first["target"].tolist() == list(range(94, 100))
    assert min(windows.lengths) == 4 and max(windows.lengths) == 20
    for i in range(len(windows)):
        item = windows[i]
        assert item["history"][-1] + 1 == item["target"][0] and len(item["target"]) == 6  # contiguous, one series
    capped = Windows(series, horizon=6, period=4, context=20, max_windows=30)
    assert capped.stride == 4 and len(capped) <= 30 and capped[0]["target"].tolist() == list(range(94, 100))


def test_an_untrained_forecaster_is_the_seasonal_naive_forecast_and_padding_never_changes_a_forecast():
    torch.manual_seed(0)
    model = RecurrentForecaster(horizon=10, period=4, hidden_size=8, mlp_hidden=8).eval()
    rng = np.random.default_rng(0)
    histories = [rng.uniform(1, 50, n).astype(np.float32) for n in (23, 9, 16)]
    batch = collate([{"history": h} for h in histories])
    with torch.no_grad():
        together, _ = model(batch["history"], batch["lengths"])
        for i, h in enumerate(histories):
            alone, _ = model(torch.from_numpy(h)[None], torch.tensor([len(h)]))
            assert_float32_close(together[i], alone[0])
            assert_float32_close(alone[0, :, 1], torch.from_numpy(seasonal_naive(h, 10, 4)).float())
    assert (together[..., 0] < together[..., 1]).all() and (together[..., 1] < together[..., 2]).all()


def test_the_m4_metrics_summed_over_batches_equal_the_organisers_definitions():
    cfg = compose("forecast", TINY)
    prepared = RECIPE.prepare(cfg.data, None, ("valid",))
    origins: Origins = prepared.splits["valid"]
    torch.manual_seed(1)
    model = RECIPE.build_model(cfg.model, prepared.vocab)
    torch.nn.init.normal_(model.head[-1].weight, std=0.05)  # a forecast other than the naive one
    step = ForecastLoss(0.95)
    totals: dict = {}
    forecasts = []
    with torch.no_grad():
        for start in range(0, len(origins), 7):  # uneven batches
            batch = collate([origins[i] for i in range(start, min(start + 7, len(origins)))])
            _, stats = step(model.eval(), batch)
            forecasts.append(model(batch["history"], batch["lengths"])[0].double().numpy())
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + value.double()
    metrics = RECIPE.summarize(totals)
    forecasts = np.concatenate(forecasts)
    actual = [origins[i]["target"] for i in range(len(origins))]
    histories = prepared_histories(cfg)
    expected = evaluate(actual, forecasts[..., 1], histories, 24, forecasts[..., 0], forecasts[..., 2])
    for key in ("smape", "mase", "owa", "msis", "coverage"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-9), key
    assert metrics["naive2_smape"] == pytest.approx(expected["naive2"]["smape"], rel=1e-9)
    assert metrics["seasonal_naive_owa"] == pytest.approx(expected["seasonal_naive"]["owa"], rel=1e-9)


def prepared_histories(cfg) -> list[np.ndarray]:
    """The whole validation histories (Origins keeps only the last `context` values of each)."""
    from seqtrain.data.series import last_horizon_split
    from seqtrain.recipes.forecast import read_series

    series, _, horizon, _ = read_series(cfg.data)
    before, _ = last_horizon_split(series, horizon)
    return [np.asarray(h) for h in before]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("forecast") / "run"
    result = seqtrain("fit", "recipe=forecast", *TINY, f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout)


def test_fit_prints_the_m4_metrics_with_the_baselines_and_the_loss_falls(trained):
    run_dir, final = trained
    assert {"smape", "mase", "owa", "msis", "coverage", "naive2_smape", "seasonal_naive_owa"} <= final.keys()
    train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in train if r["split"] == "valid"]
    assert losses[-1] < losses[0]
    assert checkpoint.load(run_dir / "checkpoints" / "best.pt")["vocab"]["horizon"] == 24


def test_evaluate_samples_plots_and_exports(trained, tmp_path):
    run_dir, _ = trained
    test = json.loads(seqtrain("evaluate", run_dir, "split=test").stdout)
    assert 0 < test["owa"] < 5 and 0 <= test["coverage"] <= 1 and test["naive2_mase"] > 0
    rows = ["id,timestamp,value"] + [
        f"{name},{t},{10 + 5 * np.sin(t / 3) + i}" for i, name in enumerate("xy") for t in range(60)
    ]
    history = tmp_path / "history.csv"
    history.write_text("\n".join(rows) + "\n")
    picture = tmp_path / "forecast.png"
    result = seqtrain("sample", run_dir, "--input-file", history, "--plot", picture)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "id,step,lower,forecast,upper" and len(lines) == 1 + 2 * 24 and lines[1].startswith("x,1,")
    assert picture.stat().st_size > 10_000
    exported = seqtrain("export", run_dir, "--out", tmp_path / "export")
    assert exported.exit_code == 0, exported.output
    from_export = seqtrain("sample", tmp_path / "export", "--input-file", history)
    for mine, theirs in zip(lines[1:], from_export.stdout.splitlines()[1:]):
        assert np.allclose(
            [float(v) for v in mine.split(",")[2:]], [float(v) for v in theirs.split(",")[2:]], rtol=1e-4
        )


@pytest.mark.parametrize("layout", ["long", "rows", "columns"])
def test_your_own_series_in_each_csv_layout_train(tmp_path, layout):
    rng = np.random.default_rng(0)
    values = {f"s{i}": 50 + 10 * np.sin(np.arange(80) * 2 * np.pi / 7) + rng.normal(0, 1, 80) for i in range(6)}
    if layout == "long":
        text = "id,date,sales\n" + "".join(
            f"{k},2024-01-{1 + t // 24:02d}T{t % 24:02d}:00,{v[t]:.3f}\n" for k, v in values.items() for t in range(80)
        )
    elif layout == "rows":
        text = "".join(f"{k}," + ",".join(f"{x:.3f}" for x in v) + "\n" for k, v in values.items())
    else:
        text = (
            ",".join(values)
            + "\n"
            + "".join(",".join(f"{v[t]:.3f}" for v in values.values()) + "\n" for t in range(80))
        )
    path = tmp_path / "sales.csv"
    path.write_text(text)
    result = seqtrain(
        "fit",
        "recipe=forecast",
        "data=csv",
        f"data.path={path}",
        f"data.layout={layout}",
        "data.horizon=7",
        "data.period=7",
        *TINY,
        f"run_dir={tmp_path / 'run'}",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["owa"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["data=csv", "data.horizon=7"], "data=csv needs data.path=FILE, data.horizon=H and data.period=P"),
        (
            ["data=csv", "data.path=SHORT", "data.horizon=30", "data.period=7"],
            "no series in the data has the 67 values",
        ),
        (["data.context=3"], "data.context=3 must hold at least one season (data.period=24)"),
        (["data=m4"], "data=m4 needs data.root=DIR"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, args, message):
    short = tmp_path / "short.csv"
    short.write_text("a," + ",".join(["1"] * 40) + "\n")
    args = [a.replace("SHORT", str(short)) + ("" if "SHORT" not in a else "") for a in args]
    args += ["data.layout=rows"] if "data.path" in " ".join(args) else []
    result = seqtrain("fit", "recipe=forecast", *args, f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 2 and result.output.count("error:") == 1 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not (SHARED_DATA / "m4" / "Hourly-train.csv").is_file(), reason="../shared/data/m4 is absent")
def test_m4_hourly_trains_and_scores_the_test_file(tmp_path):
    run_dir = tmp_path / "run"
    fit = seqtrain("fit", "recipe=forecast", "data=m4", f"data.root={SHARED_DATA / 'm4'}", *TINY, f"run_dir={run_dir}")
    assert fit.exit_code == 0, fit.output
    test = json.loads(seqtrain("evaluate", run_dir, "split=test").stdout)
    assert test["naive2_smape"] == pytest.approx(18.383, abs=5e-4) and test["naive2_mase"] == pytest.approx(
        2.395, abs=5e-4
    )
