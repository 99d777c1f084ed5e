"""Time-series forecasting (many-to-many regression): one recurrent model for many series forecasts the
next `horizon` values of each, with a prediction interval, scored as the M4 competition scores forecasts.

What differs from the other recipes: series in flat arrays (seqtrain/data/series.py), training windows cut
from them on the fly (a history of up to `context` values and the `horizon` values after it), a pinball
loss on the median and the interval's bounds in each series' own scale, and the M4 metrics (sMAPE, MASE,
OWA against Naive2, MSIS and coverage) as additive statistics, with Naive2's and the seasonal naive's
figures on the same series beside them (seqtrain/forecast_metrics.py defines them).

Splits. M4: the training file's series are the training series, its test file the test split. Your own
series (data=csv) and the embedded ones: the last `horizon` values of each series are the test split and
the rest the training series. Validation is always the last `horizon` values of each training series,
forecast from what comes before them; training windows are cut from that same history, so neither the
validation nor the test values are ever trained on.

Series rules (beyond seqtrain/data/series.py's, which fill gaps and drop empty series): a series needs one
season plus one horizon of training history after validation and test are held out; shorter ones are
dropped, and counted in the one line printed about the data.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from seqtrain.data.collate import batch_stats, device_of, pad, to_device
from seqtrain.data.sampler import BatchingConfig
from seqtrain.data.series import M4_HORIZON_PERIOD, SeriesSet, last_horizon_split, read_csv_series, read_m4
from seqtrain.data.synthetic_series import synthetic_series
from seqtrain.errors import ConfigError, DataError, check_choices
from seqtrain.forecast_metrics import interval_scores, mase_scale, naive2, seasonal_naive, smape_terms
from seqtrain.models.forecaster import RecurrentForecaster
from seqtrain.models.init import RECURRENT_SCHEMES, SCHEMES, initialize
from seqtrain.models.rnn import CELLS
from seqtrain.plots import ForecastPanel, forecast_image, save_forecasts
from seqtrain.recipe import Graph, Prepared, Recipe, SampleOptions
from seqtrain.task import Stats, evaluating

SOURCES = ("synthetic", "m4", "csv")
LAYOUTS = ("long", "rows", "columns")
MONITORED = 4  # validation series drawn into TensorBoard at every validation
PLOTTED = 6  # series `seqtrain sample --plot` draws


@dataclass
class ModelConfig:
    cell: str = "lstm"  # rnn_tanh, rnn_relu, gru, lstm
    hidden_size: int = 128  # units per recurrent layer
    num_layers: int = 2  # stacked recurrent layers
    dropout: float = 0.1  # between recurrent layers and before the head
    mlp_hidden: int = 256  # the head from the last state to the whole horizon
    init: str = "default"  # default, xavier, kaiming
    recurrent_init: str = "default"  # default, orthogonal, xavier
    # The loss's setting: the central share of outcomes the prediction interval is trained to hold
    interval: float = 0.95

    def __post_init__(self):
        check_choices(
            "model",
            {
                "cell": (self.cell, CELLS),
                "init": (self.init, SCHEMES),
                "recurrent_init": (self.recurrent_init, RECURRENT_SCHEMES),
            },
        )
        if not (0 <= self.dropout < 1 and 0 < self.interval < 1):
            raise ConfigError("model.dropout must be in [0, 1) and model.interval in (0, 1)")


@dataclass
class DataConfig(BatchingConfig):
    batch_size: Optional[int] = 256  # windows per batch
    source: str = "synthetic"  # synthetic, m4, csv
    num_series: int = 300  # synthetic
    seed: int = 0  # synthetic
    root: Optional[str] = None  # m4: the folder of {Frequency}-train.csv and -test.csv
    frequency: str = "hourly"  # m4: yearly, quarterly, monthly, weekly, daily, hourly
    path: Optional[str] = None  # csv: the file
    layout: str = "long"  # csv: long (id,timestamp,value rows), rows (a series per row), columns (a series per column)
    delimiter: str = ","  # csv
    horizon: Optional[int] = None  # values to forecast; csv: required; m4 and synthetic: their own
    period: Optional[int] = None  # the seasonal period (24 for hourly data with a daily cycle); csv: required
    context: Optional[int] = None  # history the model reads; null: 7 horizons, in whole periods
    max_windows: int = 200_000  # training windows an epoch, evenly spaced back from each series' end

    def __post_init__(self):
        super().__post_init__()
        check_choices("data", {"source": (self.source, SOURCES), "layout": (self.layout, LAYOUTS)})
        if self.source == "m4" and not self.root:
            raise ConfigError("data=m4 needs data.root=DIR (the folder of the M4 csv files)")
        if self.source == "m4" and self.frequency.lower() not in M4_HORIZON_PERIOD:
            raise ConfigError(f"data.frequency={self.frequency!r} is unknown; valid: {', '.join(M4_HORIZON_PERIOD)}")
        if self.source == "csv" and not (self.path and self.horizon and self.period):
            raise ConfigError("data=csv needs data.path=FILE, data.horizon=H and data.period=P")
        for key in ("horizon", "period", "context"):
            if (value := getattr(self, key)) is not None and value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        if self.max_windows < 1:
            raise ConfigError(f"data.max_windows must be >= 1, got {self.max_windows}")


class Windows(torch.utils.data.Dataset):
    """Training windows cut on the fly from flat arrays: window i is a history of up to `context` values of
    one series and the `horizon` values after it. Each series gives the windows that end `stride` apart,
    counted back from its end (so its latest window is always there); `stride` grows until the whole set
    has at most `max_windows`. Only offsets are stored, never a copy of the values."""

    def __init__(self, series: SeriesSet, horizon: int, period: int, context: int, max_windows: int):
        self.series, self.horizon, self.context = series, horizon, context
        room = np.maximum(series.lengths - horizon - period, -1) + 1  # (S,) window ends a series allows
        self.stride = max(1, math.ceil(room.sum() / max_windows))
        counts = np.where(room > 0, (room - 1) // self.stride + 1, 0)  # (S,)
        self.first = np.concatenate([[0], np.cumsum(counts)])  # (S+1,) index of each series' first window
        self.series_of = np.repeat(np.arange(len(series)), counts)  # (W,)
        back = np.arange(len(self.series_of)) - self.first[self.series_of]  # windows before this one's end
        self.ends = series.offsets[1:][self.series_of] - horizon - back * self.stride  # (W,) where history stops
        starts = np.maximum(series.offsets[:-1][self.series_of], self.ends - context)
        self.lengths = self.ends - starts

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> dict:
        end, values = int(self.ends[i]), self.series.values
        return {"history": values[end - self.lengths[i] : end], "target": values[end : end + self.horizon]}


class Origins(torch.utils.data.Dataset):
    """One forecast per series from the end of its history (validation, test, `sample`), with what the M4
    metrics need beside it: the series' MASE scale over its whole history and the two naive forecasts."""

    def __init__(self, histories: SeriesSet, targets: SeriesSet | None, horizon: int, period: int, context: int):
        self.ids = histories.ids
        self.items = []
        for i, history in enumerate(histories):
            item = {"history": history[-context:]}
            if targets is not None:
                item |= {
                    "target": targets[i],
                    "mase_scale": mase_scale(history, period),
                    "naive2": naive2(history, horizon, period),
                    "snaive": seasonal_naive(history, horizon, period),
                }
            self.items.append(item)
        self.lengths = [len(item["history"]) for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(items: list[dict]) -> dict:
    history, lengths = pad(
        [torch.from_numpy(np.asarray(item["history"], np.float32)) for item in items]
    )  # (B, T), (B,)
    batch = {"history": history, "lengths": lengths, **batch_stats(lengths)}
    for key, dtype in (("target", torch.float32), ("naive2", torch.float64), ("snaive", torch.float64)):
        if key in items[0]:
            batch[key] = torch.from_numpy(np.stack([np.asarray(item[key]) for item in items])).to(dtype)  # (B, H)
    if "mase_scale" in items[0]:
        batch["mase_scale"] = torch.tensor([item["mase_scale"] for item in items], dtype=torch.float64)  # (B,)
    return batch


class ForecastLoss:
    """The pinball (quantile) loss of the interval's lower bound, the median and the upper bound, on errors
    divided by each series' scale, so that every series weighs the same whatever its size; the median's
    term is half the absolute error. On held-out batches (those with M4 baselines) also the M4 metrics'
    sums, exact over any batching: sMAPE, MASE, MSIS and coverage, and the two naive forecasts' sMAPE and
    MASE, from which `summarize` makes OWA."""

    def __init__(self, interval: float):
        self.interval = interval
        self.levels = torch.tensor([(1 - interval) / 2, 0.5, (1 + interval) / 2])

    def __call__(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, Stats]:
        forecast, scale = model(batch["history"], batch["lengths"])  # (B, H, 3), (B,)
        target = batch["target"]  # (B, H)
        error = (target[..., None] - forecast) / scale[:, None, None]  # (B, H, 3)
        levels = self.levels.to(error)
        loss_sum = torch.maximum(levels * error, (levels - 1) * error).sum()
        steps = target.numel()
        stats = {"loss_sum": loss_sum.detach(), "steps": torch.tensor(float(steps))}
        if "mase_scale" in batch:
            stats |= m4_stats(target.double(), forecast.detach().double(), batch, 1 - self.interval)
        return loss_sum / steps, stats


def m4_stats(target: torch.Tensor, forecast: torch.Tensor, batch: dict, alpha: float) -> Stats:
    """Sums of the M4 metrics' terms for a batch of forecasts (B, H, 3) against their targets (B, H)."""
    scale = batch["mase_scale"]  # (B,)
    scored = scale > 0  # MASE and MSIS leave out series whose scale is 0 (seqtrain/forecast_metrics.py)
    per_step = torch.where(scored, scale, torch.ones_like(scale))[:, None]  # (B, 1)

    def sums(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        smape = torch.from_numpy(smape_terms(target.cpu().numpy(), point.cpu().numpy())).sum()
        mase = ((target - point).abs() / per_step)[scored].sum()
        return smape, mase

    stats: Stats = {}
    for name, point in (("", forecast[..., 1]), ("naive2_", batch["naive2"]), ("snaive_", batch["snaive"])):
        stats[f"{name}smape_sum"], stats[f"{name}mase_sum"] = sums(point)
    lower, upper = forecast[..., 0], forecast[..., 2]
    scores = torch.from_numpy(interval_scores(target.cpu().numpy(), lower.cpu().numpy(), upper.cpu().numpy(), alpha))
    stats["msis_sum"] = (scores.to(target) / per_step)[scored].sum()
    stats["covered"] = ((target >= lower) & (target <= upper)).sum().double()
    stats["scored_steps"] = scored.sum().double() * target.size(1)
    return stats


class Forecast(Recipe):
    """Time-series forecasting (many-to-many regression): a global RNN forecasts every series' next values."""

    name = "forecast"
    ModelConfig = ModelConfig
    DataConfig = DataConfig
    splits = ("train", "valid", "test")

    def prepare(self, data: DataConfig, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        """Without `vocab`, the data fixes the horizon, the period and the context; with one, they are the
        trained model's, and data of another horizon is refused."""
        self.check_splits(splits)
        series, test, horizon, period = read_series(data)
        if vocab is not None:
            if horizon != vocab["horizon"]:
                raise ConfigError(f"the model forecasts {vocab['horizon']} values; this data's horizon is {horizon}")
            period, context = vocab["period"], vocab["context"]
        else:
            context = data.context or period * math.ceil(7 * horizon / period)
        if context < period:
            raise ConfigError(f"data.context={context} must hold at least one season (data.period={period})")
        series, test = keep_long_enough(series, test, horizon, period, "the data")
        before, valid_targets = last_horizon_split(series, horizon)
        vocab = vocab or {
            "horizon": horizon,
            "period": period,
            "context": context,
            "monitored": monitored(before, valid_targets, context),
        }
        sets = {}
        for split in splits:
            if split == "train":
                sets[split] = Windows(before, horizon, period, context, data.max_windows)
            elif split == "valid":
                sets[split] = Origins(before, valid_targets, horizon, period, context)
            else:
                sets[split] = Origins(series, test, horizon, period, context)
        return Prepared(vocab, sets, collate)

    def build_model(self, model: ModelConfig, vocab: dict) -> RecurrentForecaster:
        forecaster = RecurrentForecaster(
            vocab["horizon"],
            vocab["period"],
            model.cell,
            model.hidden_size,
            model.num_layers,
            model.dropout,
            model.mlp_hidden,
        )
        initialize(forecaster, model.init, model.recurrent_init)
        return forecaster

    def loss(self, model: ModelConfig, vocab: dict) -> ForecastLoss:
        return ForecastLoss(model.interval)

    def summarize(self, totals: Stats) -> dict[str, float]:
        """loss (the pinball loss per step, in each series' scale); on held-out data sMAPE, MASE, OWA, MSIS and
        coverage, and the same point figures of Naive2 and the seasonal naive on the same series."""
        metrics = {"loss": float(totals["loss_sum"] / totals["steps"])}
        if "smape_sum" not in totals:
            return metrics
        steps, scored = float(totals["steps"]), max(1.0, float(totals["scored_steps"]))
        point = {
            name: (float(totals[f"{name}smape_sum"]) / steps, float(totals[f"{name}mase_sum"]) / scored)
            for name in ("", "naive2_", "snaive_")
        }
        (smape, mase), (n2_smape, n2_mase), (sn_smape, sn_mase) = point[""], point["naive2_"], point["snaive_"]
        return metrics | {
            "smape": smape,
            "mase": mase,
            "owa": owa(smape, mase, n2_smape, n2_mase),
            "msis": float(totals["msis_sum"]) / scored,
            "coverage": float(totals["covered"]) / steps,
            "naive2_smape": n2_smape,
            "naive2_mase": n2_mase,
            "seasonal_naive_smape": sn_smape,
            "seasonal_naive_mase": sn_mase,
            "seasonal_naive_owa": owa(sn_smape, sn_mase, n2_smape, n2_mase),
        }

    def sample(self, model: torch.nn.Module, vocab: dict, options: SampleOptions, write: Callable[[str], None]) -> None:
        """Forecasts for the series of --input-file, read in the run's data.layout, as CSV lines
        `id,step,lower,forecast,upper`; --plot draws the first few."""
        if options.input_file is None or options.text is not None or options.prompt is not None:
            raise ConfigError("forecast reads the histories to forecast from --input-file FILE (a CSV of series)")
        series, cleaning = read_csv_series(options.input_file, options.layout, min_length=vocab["period"])
        if cleaning.kept < cleaning.read:
            print(f"{options.input_file}: {cleaning}", file=sys.stderr)
        histories = Origins(series, None, vocab["horizon"], vocab["period"], vocab["context"])
        forecasts = predict(model, histories)  # (S, H, 3)
        write("id,step,lower,forecast,upper\n")
        for name, rows in zip(series.ids, forecasts):
            for step, (lower, median, upper) in enumerate(rows.tolist(), start=1):
                write(f"{name},{step},{lower:.6g},{median:.6g},{upper:.6g}\n")
        if options.plot:
            panels = [
                (str(series.ids[i]), histories[i]["history"][-3 * vocab["horizon"] :], None, forecasts[i])
                for i in range(min(PLOTTED, len(series)))
            ]
            save_forecasts(panels, Path(options.plot))

    def log_samples(self, model: torch.nn.Module, vocab: dict, writer, step: int, totals: Stats) -> None:
        """The monitored validation series' forecasts against what happened, as one picture."""
        monitored = vocab["monitored"]
        histories = Origins(
            SeriesSet.from_arrays([m["id"] for m in monitored], [m["history"] for m in monitored]),
            None,
            vocab["horizon"],
            vocab["period"],
            vocab["context"],
        )
        forecasts = predict(model, histories)
        panels: list[ForecastPanel] = [
            (m["id"], np.asarray(m["history"])[-3 * vocab["horizon"] :], np.asarray(m["target"]), f)
            for m, f in zip(monitored, forecasts)
        ]
        writer.add_image("forecasts", forecast_image(panels), step, dataformats="HWC")

    def export_graphs(self, model: RecurrentForecaster, vocab: dict, format: str) -> list[Graph]:
        """Histories padded to the run's context (B, C) and their lengths -> forecasts (B, H, 3) and scales (B,),
        traced on rows of three lengths, so that the packed path serves any."""
        context, period = vocab["context"], vocab["period"]
        lengths = torch.tensor([context, max(period, context // 2), period])
        history = torch.rand(3, context) * 10 + 1
        axes = {"history": {0: "batch"}, "lengths": {0: "batch"}, "forecast": {0: "batch"}, "scale": {0: "batch"}}
        return [
            Graph("model", ForecastGraph(model), {"history": history, "lengths": lengths}, ["forecast", "scale"], axes)
        ]

    def from_export(self, graphs: dict, state: dict) -> torch.nn.Module:
        return ExportedForecaster(graphs["model"], state["vocab"]["context"])


def owa(smape: float, mase: float, naive2_smape: float, naive2_mase: float) -> float:
    return 0.5 * (smape / naive2_smape + mase / naive2_mase) if naive2_smape > 0 and naive2_mase > 0 else math.nan


def read_series(data: DataConfig) -> tuple[SeriesSet, SeriesSet | None, int, int]:
    """(the training series, the test split's values or None, horizon, period) of the configured data. The
    horizon and period are M4's or the embedded data's own unless data.horizon and data.period are set."""
    if data.source == "m4":
        train, test = read_m4(data.root, data.frequency)
        horizon, period = M4_HORIZON_PERIOD[data.frequency.lower()]
        if data.horizon not in (None, horizon):
            raise ConfigError(f"M4 {data.frequency} forecasts {horizon} values; leave data.horizon unset")
        return train, test, horizon, data.period or period
    if data.source == "synthetic":
        full, horizon, period = synthetic_series(data.num_series, data.seed)
        horizon, period = data.horizon or horizon, data.period or period
    else:
        full, cleaning = read_csv_series(data.path, data.layout, delimiter=data.delimiter)
        if cleaning.kept < cleaning.read or cleaning.filled or cleaning.trimmed:
            print(f"{data.path}: {cleaning}", file=sys.stderr)
        horizon, period = data.horizon, data.period
    series, test = last_horizon_split(full, horizon)
    return series, test, horizon, period


def keep_long_enough(
    series: SeriesSet, test: SeriesSet | None, horizon: int, period: int, source: str
) -> tuple[SeriesSet, SeriesSet | None]:
    """Drop the series with less than one season and one horizon of history before validation; say how many."""
    enough = series.lengths >= 2 * horizon + period
    if not enough.any():
        raise DataError(
            f"no series in {source} has the {2 * horizon + period} values a forecast of horizon {horizon} "
            f"with period {period} needs (one season and one horizon of history, one horizon of validation)"
        )
    if not enough.all():
        print(
            f"{source}: dropped {int((~enough).sum()):,} of {len(series):,} series shorter than "
            f"{2 * horizon + period} values (one season and one horizon of history, one horizon of validation)",
            file=sys.stderr,
        )
        series, test = series[np.flatnonzero(enough)], None if test is None else test[np.flatnonzero(enough)]
    return series, test


def monitored(histories: SeriesSet, targets: SeriesSet, context: int) -> list[dict]:
    """A few validation series, kept in the vocabulary for the TensorBoard picture of every validation."""
    chosen = np.linspace(0, len(histories) - 1, min(MONITORED, len(histories))).round().astype(int)
    return [
        {"id": str(histories.ids[i]), "history": histories[i][-context:].tolist(), "target": targets[i].tolist()}
        for i in dict.fromkeys(chosen.tolist())
    ]


@torch.no_grad()
def predict(model: torch.nn.Module, origins: Origins, batch_size: int = 256) -> np.ndarray:
    """(S, H, 3) lower, median and upper forecasts of every series of `origins`, in its order."""
    parts = []
    with evaluating(model):
        for start in range(0, len(origins), batch_size):
            batch = to_device(
                collate([origins[i] for i in range(start, min(start + batch_size, len(origins)))]), device_of(model)
            )
            parts.append(model(batch["history"], batch["lengths"])[0].float().cpu().numpy())
    return np.concatenate(parts)


class ForecastGraph(torch.nn.Module):
    """The forecaster with named outputs, as an export writes it."""

    def __init__(self, model: RecurrentForecaster):
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(history, lengths)


class ExportedForecaster(torch.nn.Module):
    """An export in the place of `RecurrentForecaster`: histories are padded to the run's context width, the
    width the graph was traced at."""

    def __init__(self, graph, context: int):
        super().__init__()
        self.graph, self.context = graph, context

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded = torch.nn.functional.pad(history.float(), (0, self.context - history.size(1)))
        out = self.graph(history=padded, lengths=lengths)
        return out["forecast"], out["scale"]
