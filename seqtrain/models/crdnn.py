"""CRDNN: convolutions, then a recurrent stack, then a DNN, pooled over time into class logits.

The CNN blocks learn local time-frequency patterns (and shrink the frequency axis by pooling over it,
never over time, so frame lengths stay valid), the recurrent stack carries context across the whole
utterance, the DNN blocks transform each frame, and masked pooling over time turns the variable-length
sequence into one vector for the classifier (and an optional second head: multitask, or adversarial
behind a gradient reversal so that the summary unlearns what that head predicts).

Padding never changes a prediction: features past a length are zeroed before every convolution (so a
kernel reaching past the end sees the zeros it would see alone), batch normalisation counts real
frames only, the recurrent stack packs or masks, and pooling ignores padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seqtrain.data.collate import lengths_to_mask
from seqtrain.errors import ConfigError
from seqtrain.models.dropout import Dropout
from seqtrain.models.ligru import MaskedBatchNorm
from seqtrain.models.rnn import CELLS, RecurrentStack

NORMS = ("batch", "layer", "none")
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}
POOLINGS = ("mean", "attentive")


class Norm(nn.Module):
    """Masked batch norm over the channels, layer norm over `shape` (the trailing dims), or nothing."""

    def __init__(self, kind: str, shape: tuple[int, ...]):
        super().__init__()
        self.kind = kind
        if kind == "batch":
            self.norm = MaskedBatchNorm(shape[-1])
        elif kind == "layer":
            self.norm = nn.LayerNorm(shape)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x, mask)
        return self.norm(x) if self.kind == "layer" else x


class ConvBlock(nn.Module):
    """Conv2d over (time, frequency) -> norm -> activation -> max-pool over frequency -> dropout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bins: int,
        kernel: int,
        pool: int,
        norm: str,
        activation: str,
        dropout: float,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)  # "same": T and F kept
        self.norm = Norm(norm, (bins, out_channels))  # layer norm: over each frame's whole feature map
        self.activation = ACTIVATIONS[activation]()
        self.pool = pool
        self.dropout = Dropout(dropout)
        self.out_bins = bins // pool

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, F, C) channels-last, mask (B, T) -> (B, T, F // pool, C'), zero past each length."""
        x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, T, F, C')
        x = self.activation(self.norm(x, mask[:, :, None]))
        x = x[:, :, : self.out_bins * self.pool].unflatten(2, (self.out_bins, self.pool)).amax(3)  # (B, T, F/p, C')
        return self.dropout(x).masked_fill(~mask[:, :, None, None], 0.0)


class DenseBlock(nn.Module):
    """Linear -> norm -> activation -> dropout, frame by frame."""

    def __init__(self, in_size: int, out_size: int, norm: str, activation: str, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_size, out_size)
        self.norm = Norm(norm, (out_size,))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, in) -> (B, T, out)"""
        return self.dropout(self.activation(self.norm(self.linear(x), mask)))


def mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), mask (B, T) -> (B, D): the mean over real frames."""
    weights = mask[..., None].to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al. 2018): a learned score per frame, softmax over the
    real frames, then the weighted mean and standard deviation. (B, T, D) -> (B, 2D)."""

    def __init__(self, size: int, attention_size: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(size, attention_size), nn.Tanh(), nn.Linear(attention_size, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        weights = torch.softmax(scores, dim=1)[..., None]  # (B, T, 1), exactly 0 on padding
        mean = (weights * x).sum(1)
        var = (weights * x * x).sum(1) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-5).sqrt()], dim=-1)  # the floor keeps sqrt's gradient finite


class ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015): the head behind it learns to
    predict its target while everything before it is pushed to make that target unpredictable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class CRDNN(nn.Module):
    """(B, T, num_features) features + lengths -> {"logits": (B, num_classes)} (+ "aux_logits": (B, aux_classes))."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        cnn_channels: Sequence[int] = (32, 64),
        cnn_kernel: int = 3,
        cnn_pool: int = 2,
        cnn_dropout: float = 0.15,
        norm: str = "batch",
        activation: str = "leaky_relu",
        rnn_cell: str = "lstm",
        rnn_hidden: int = 128,
        rnn_layers: int = 2,
        bidirectional: bool = True,
        rnn_dropout: float = 0.15,
        dnn_sizes: Sequence[int] = (128,),
        dnn_dropout: float = 0.15,
        pooling: str = "mean",
        aux_classes: int = 0,
        aux_adversarial: bool = False,
    ):
        super().__init__()
        for name, value, valid in [
            ("norm", norm, NORMS),
            ("activation", activation, tuple(ACTIVATIONS)),
            ("rnn_cell", rnn_cell, CELLS),
            ("pooling", pooling, POOLINGS),
        ]:
            if value not in valid:
                raise ConfigError(f"model.{name}={value!r} is unknown; valid: {', '.join(valid)}")
        if cnn_kernel < 1 or cnn_kernel % 2 == 0 or cnn_pool < 1:
            raise ConfigError(
                f"model.cnn_kernel must be odd (got {cnn_kernel}) and model.cnn_pool >= 1 (got {cnn_pool})"
            )
        if num_features // cnn_pool ** len(cnn_channels) < 1:
            raise ConfigError(
                f"{len(cnn_channels)} CNN blocks pooling by {cnn_pool} leave no frequency bins of {num_features}"
            )
        self.convs = nn.ModuleList()
        channels, bins = 1, num_features
        for out_channels in cnn_channels:
            self.convs.append(
                ConvBlock(channels, out_channels, bins, cnn_kernel, cnn_pool, norm, activation, cnn_dropout)
            )
            channels, bins = out_channels, bins // cnn_pool
        self.rnn = RecurrentStack(rnn_cell, channels * bins, rnn_hidden, rnn_layers, bidirectional, rnn_dropout)
        self.dnn = nn.ModuleList()
        size = self.rnn.output_size
        for out_size in dnn_sizes:
            self.dnn.append(DenseBlock(size, out_size, norm, activation, dnn_dropout))
            size = out_size
        self.pool = AttentiveStatsPool(size) if pooling == "attentive" else None
        pooled = 2 * size if pooling == "attentive" else size
        self.head = nn.Linear(pooled, num_classes)
        self.aux_head = nn.Linear(pooled, aux_classes) if aux_classes else None
        self.aux_adversarial = aux_adversarial

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.pooled(feats, lengths)  # (B, P)
        out = {"logits": self.head(pooled)}
        if self.aux_head is not None:
            out["aux_logits"] = self.aux_head(ReverseGradient.apply(pooled) if self.aux_adversarial else pooled)
        return out

    def pooled(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features -> (B, P): the utterance's summary the heads read."""
        mask = lengths_to_mask(lengths, feats.size(1))  # (B, T)
        x = feats.masked_fill(~mask[..., None], 0.0)[..., None]  # (B, T, F) -> (B, T, F, 1)
        for block in self.convs:
            x = block(x, mask)  # -> (B, T, F', C)
        x, _ = self.rnn(x.flatten(2), lengths)  # (B, T, F' * C) -> (B, T, rnn output)
        for block in self.dnn:
            x = block(x, mask)  # -> (B, T, dnn size)
        return self.pool(x, mask) if self.pool is not None else mean_pool(x, mask)
