"""A global recurrent forecaster: one model for many series, which reads each series' recent history one
season at a time and forecasts the whole horizon at once, with a prediction interval.

    history (B, T), lengths (B,)
      -> scale: the mean |value| of the history read                         (per series, so the model is scale-free)
      -> the last whole seasons of history / scale, one season per step        (B, N, period)
      -> stacked RNN/GRU/LSTM over the seasons, packed                         (B, hidden)
      -> MLP -> for each of the H steps, a median offset and two interval widths
      -> median = the seasonal naive forecast (the last season repeated) + offset; lower/upper around it
      -> x scale                                                               (B, H, 3): lower, median, upper

Why this shape. Dividing by each series' level lets one model learn from series of any size (DeepAR and
N-BEATS scale their inputs the same way). Stepping once per season (a day of hourly data) rather than once
per value shows the network two weeks of hourly history in 14 steps: cheap on a CPU, and the recurrence
carries the weekly pattern and the trend from day to day, the part the seasonal naive forecast misses.
Starting from the seasonal naive forecast (ES-RNN starts from its exponential smoothing) means an untrained
model is already the seasonal naive, and training learns only the correction. The whole horizon comes out
at once (MQ-RNN, N-BEATS): no error feeds back through 48 steps of its own forecasts. The interval's bounds
are quantiles trained with the pinball loss, at least as far from the median as zero, so they never cross.

Padding never changes a forecast: a history is read from its end (its last `lengths[b]` values), the
recurrent stack packs, and positions past a length are never read.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from seqtrain.models.dropout import Dropout
from seqtrain.models.rnn import RecurrentStack


class RecurrentForecaster(nn.Module):
    def __init__(
        self,
        horizon: int,
        period: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.1,
        mlp_hidden: int = 256,
    ):
        super().__init__()
        self.horizon, self.period = horizon, period
        self.rnn = RecurrentStack(
            cell, period + 1, hidden_size, num_layers, dropout=dropout
        )  # + the season's log-level
        self.head = nn.Sequential(
            Dropout(dropout), nn.Linear(hidden_size, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, horizon * 3)
        )
        nn.init.zeros_(self.head[-1].weight)  # untrained: the seasonal naive forecast with narrow bounds
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) histories right-padded, (B,) lengths >= period -> (B, H, 3) lower, median and upper
        forecasts in the series' units, and (B,) the scale they were divided by."""
        seasons, scale = self.seasons(history, lengths)  # (B, N, P), (B,)
        counts = lengths // self.period  # whole seasons read  (B,)
        level = torch.log1p(seasons.abs().mean(-1, keepdim=True))  # (B, N, 1): each season's size, compressed
        states, _ = self.rnn(torch.cat([seasons, level], -1), counts)  # (B, N, hidden), zeros past each count
        last = states.gather(1, (counts - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.size(-1))).squeeze(1)
        out = self.head(last).view(-1, self.horizon, 3).float()  # (B, H, 3)
        final = seasons.gather(1, (counts - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, self.period)).squeeze(
            1
        )  # (B, P)
        naive = final.float().repeat(1, -(-self.horizon // self.period))[:, : self.horizon]  # (B, H) the seasonal naive
        median = naive + out[..., 1]
        lower, upper = median - F.softplus(out[..., 0]), median + F.softplus(out[..., 2])
        return torch.stack([lower, median, upper], -1) * scale[:, None, None], scale

    def seasons(self, history: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last whole seasons of each history, first to last and left-aligned (B, N, P), divided by the
        mean |value| over them (B,); a history of zeros keeps scale 1."""
        counts = lengths // self.period  # (B,)
        steps = int(history.size(1)) // self.period
        start = lengths - counts * self.period  # where each row's first whole season begins  (B,)
        index = (start[:, None] + torch.arange(steps * self.period, device=history.device)[None]).clamp(
            max=history.size(1) - 1
        )
        read = history.gather(1, index)  # (B, N*P): row b's values from start[b], then values past its end
        real = torch.arange(steps * self.period, device=history.device)[None] < (counts * self.period)[:, None]
        read = read * real
        mean = read.abs().sum(1) / (counts * self.period).clamp(min=1)  # (B,)
        scale = torch.where(mean > 0, mean, torch.ones_like(mean))
        return (read / scale[:, None]).view(-1, steps, self.period), scale
