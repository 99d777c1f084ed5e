"""A stack of recurrent layers that packs padded batches, so padding never changes an output."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtrain.models.dropout import dropout
from seqtrain.models.ligru import LiGRU

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "ligru")

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def weight_drop_problem(cell: str, weight_drop: float) -> str | None:
    """Why `weight_drop` cannot apply to `cell`, or None: one message for the model and the configs."""
    if not 0 <= weight_drop < 1:
        return f"model.weight_drop must be in [0, 1), got {weight_drop}"
    if weight_drop and cell == "ligru":
        return "model.weight_drop is for rnn, gru and lstm cells; Li-GRU drops its recurrent units with model.dropout"
    return None


def onednn_off():
    """Switch oneDNN's RNN kernels off where they hurt; only the `enabled` flag is touched.

    On CPU oneDNN makes LSTM training about 2x faster but adds ~1.75 ms per layer to every one-step
    call, which dominates sampling and beam search. And on a CPU without AVX-512 bf16 it has no bf16
    LSTM at all (autocast to bf16 fails with "could not create a primitive descriptor"), where torch's
    own kernels still run it.
    """
    return torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None)


class RecurrentStack(nn.Module):
    """Elman RNN (tanh or relu), GRU, LSTM or Li-GRU; stacked, optionally bidirectional, with dropout
    between layers (Li-GRU: per-sequence recurrent dropout in each layer).

    `weight_drop` is AWD-LSTM's DropConnect on the hidden-to-hidden weights (Merity et al., 2018): one
    mask per batch, the same at every time step, so it regularises the recurrence itself, which dropout
    between layers never touches, and the fused RNN kernels still run. Not for Li-GRU, which drops its
    recurrent units instead.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(CELLS)}")
        if problem := weight_drop_problem(cell, weight_drop):
            raise ValueError(problem)
        self.weight_drop = weight_drop
        kwargs = dict(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        if cell == "ligru":
            self.rnn = LiGRU(input_size, hidden_size, num_layers, bidirectional, dropout)
        elif cell.startswith("rnn_"):
            self.rnn = nn.RNN(nonlinearity=cell.removeprefix("rnn_"), **kwargs)
        else:
            self.rnn = nn.GRU(**kwargs) if cell == "gru" else nn.LSTM(**kwargs)
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """(B, T, input) -> (B, T, output_size), final state. Positions past a length come out as zeros."""
        if isinstance(self.rnn, LiGRU):  # masks instead of packing
            return self.rnn(x, lengths, state)
        if lengths is None or bool((lengths == x.size(1)).all()):
            return self._recur(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self._recur(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out, state

    def _recur(self, x, state: State | None):
        if not (self.training and self.weight_drop):
            return self.rnn(x, state)
        dropped = {
            name: dropout(weight, self.weight_drop)
            for name, weight in self.rnn.named_parameters()
            if name.startswith("weight_hh")
        }
        return torch.func.functional_call(self.rnn, dropped, (x, state))
