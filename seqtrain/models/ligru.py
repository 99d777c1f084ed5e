"""Li-GRU, the light GRU of Ravanelli et al. (2018), "Light Gated Recurrent Units for Speech Recognition".

A GRU without its reset gate, with a ReLU candidate and batch-normalised input projections:

    z_t  = sigmoid(BN(W_z x_t) + U_z h_{t-1})          update gate
    h~_t = ReLU(BN(W_h x_t) + U_h h_{t-1}) * m          candidate; m is a dropout mask drawn once per sequence
    h_t  = z_t * h_{t-1} + (1 - z_t) * h~_t

One gate fewer than a GRU makes it about a third cheaper per step; the ReLU keeps gradients alive over
long utterances, and batch normalisation of W x (computed for all steps at once, outside the
recurrence) keeps the ReLU's activations in range. Batch-norm statistics use real frames only, and the
state stops at each sequence's end, so padding never changes an output. The interface is that of
`seqtrain.models.rnn.RecurrentStack`: (B, T, input) + lengths -> (B, T, output_size), final state.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from seqtrain.data.collate import lengths_to_mask
from seqtrain.models.dropout import dropout


class MaskedBatchNorm(nn.Module):
    """Batch normalisation over the last dimension of (..., C) whose statistics count only positions
    where `mask` (broadcastable to x.shape[:-1]) is True, so that padding never shifts them."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            weights = mask.expand(x.shape[:-1]).unsqueeze(-1).to(x.dtype)  # (..., 1)
            dims = tuple(range(x.dim() - 1))
            count = weights.sum().clamp(min=1)
            mean = (x * weights).sum(dims) / count  # (C,)
            var = ((x - mean).pow(2) * weights).sum(dims) / count
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean), self.momentum)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, ...) within its own length; padding stays where it is."""
    t = torch.arange(x.size(1), device=x.device)[None]  # (1, T)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))


def recurrence(
    projected: torch.Tensor, u: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step loop: (T, D, B, 2H) projected inputs, (D, H, 2H) recurrent weights, (D, B, H) state and
    dropout mask, (T, 1, B, 1) valid steps -> every step's state (T, D, B, H) and the last (D, B, H)."""
    steps = []
    for t in range(projected.size(0)):
        candidate, gate = (projected[t] + torch.bmm(h, u)).chunk(2, dim=-1)  # (D, B, H) each
        z = torch.sigmoid(gate)
        h_next = z * h + (1 - z) * torch.relu(candidate) * keep
        h = torch.where(valid[t], h_next, h)  # past its end a sequence's state stays put
        steps.append(h)
    return torch.stack(steps), h


@functools.cache
def scripted_recurrence():
    """`recurrence` compiled by TorchScript, for tracing (`seqtrain export`): a tracer unrolls a Python
    loop into the number of steps it saw, a scripted one stays a loop over any length. Training runs the
    plain function, so autograd and speed are as before."""
    return torch.jit.script(recurrence)


class LiGRULayer(nn.Module):
    """One Li-GRU layer, both directions stepped together.

    Parameter layout, per direction d: rows d*2H .. d*2H+H of `w.weight` (and columns 0..H of `u[d]`)
    feed the candidate, the next H rows (columns H..2H) the update gate.
    """

    def __init__(self, input_size: int, hidden_size: int, directions: int, dropout: float):
        super().__init__()
        self.hidden_size, self.directions, self.dropout = hidden_size, directions, dropout
        self.w = nn.Linear(input_size, directions * 2 * hidden_size, bias=False)  # BN supplies the bias
        self.norm = MaskedBatchNorm(directions * 2 * hidden_size)
        self.u = nn.Parameter(torch.empty(directions, hidden_size, 2 * hidden_size))
        for d in range(directions):
            for block in self.u.data[d].chunk(2, dim=1):
                nn.init.orthogonal_(block)  # orthogonal recurrent matrices keep the state's norm stable

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, h: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, input), lengths (B,), mask (B, T), state (D, B, H) or None -> (B, T, D * H), (D, B, H)."""
        B, T, _ = x.shape
        D, H = self.directions, self.hidden_size
        projected = self.norm(self.w(x), mask).view(B, T, D, 2 * H)  # (B, T, D, 2H)
        if D == 2:
            projected = torch.stack([projected[:, :, 0], reverse_padded(projected[:, :, 1], lengths)], dim=2)
        projected = projected.permute(1, 2, 0, 3)  # (T, D, B, 2H)
        h = x.new_zeros(D, B, H) if h is None else h
        keep = torch.ones_like(h)
        if self.training and self.dropout > 0:  # one mask per sequence, shared by every step
            keep = dropout(keep, self.dropout)
        valid = mask.T[:, None, :, None]  # (T, 1, B, 1)
        recur = scripted_recurrence() if torch.jit.is_tracing() else recurrence
        steps, h = recur(projected, self.u, h, keep, valid)  # (T, D, B, H), (D, B, H)
        out = steps.permute(2, 0, 1, 3)  # (T, D, B, H) -> (B, T, D, H)
        if D == 2:
            out = torch.stack([out[:, :, 0], reverse_padded(out[:, :, 1], lengths)], dim=2)
        out = out.masked_fill(~mask[:, :, None, None], 0.0)
        return out.reshape(B, T, D * H), h


class LiGRU(nn.Module):
    """Stacked, optionally bidirectional Li-GRU; `dropout` is the per-sequence recurrent dropout of each layer."""

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        if num_layers < 1 or hidden_size < 1 or not 0 <= dropout < 1:
            raise ValueError("Li-GRU needs num_layers >= 1, hidden_size >= 1 and dropout in [0, 1)")
        self.directions = 2 if bidirectional else 1
        sizes = [input_size] + [hidden_size * self.directions] * (num_layers - 1)
        self.layers = nn.ModuleList(LiGRULayer(size, hidden_size, self.directions, dropout) for size in sizes)
        self.output_size = hidden_size * self.directions

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, input) -> (B, T, output_size) with zeros past each length, and the final state
        (num_layers * directions, B, H) as nn.GRU orders it (the backward direction's ends at t = 0)."""
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), device=x.device)
        mask = lengths_to_mask(lengths.to(x.device), x.size(1))  # (B, T)
        finals = []
        for i, layer in enumerate(self.layers):
            initial = None if state is None else state[i * self.directions : (i + 1) * self.directions]
            x, final = layer(x, lengths.to(x.device), mask, initial)
            finals.append(final)
        return x, torch.cat(finals)
