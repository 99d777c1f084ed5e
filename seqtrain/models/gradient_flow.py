"""Gradient flow through time: how much of the loss's gradient reaches each step of each recurrent layer.

For every recurrent layer and direction in a model, and every real time step t of one batch, this measures
‖∂loss/∂h_t‖: the TOTAL derivative of the batch's loss with respect to the layer's hidden state h_t, through
the recurrence and through the layers above, per example; then averages it over the examples at each distance
from the end of their reading. A tanh RNN's curve falls geometrically with that distance (vanishing
gradients: the loss cannot reach early inputs) or grows (exploding); an LSTM's cell state carries the
gradient back much further, as the lectures show.

How h_t is read. A fused nn.RNN/GRU/LSTM kernel never shows autograd the states of its inner steps, so while
measuring (`stepwise`) every RecurrentStack in the model runs step by step in Python, with the same weights
and the same equations (tested against the fused modules and Li-GRU), and each step's state stays in the
graph. `torch.autograd.grad(loss, states)` then computes ∂loss/∂h_t for those tensors only: the parameters'
`.grad`, which belong to the training step, are never touched. Nothing changes outside a measurement.

Padding, as packing does it. All rows step together; past its length a row's state stays put
(h = where(t < length, h_next, h)) and its outputs are zeros, so the layers above and the final state see the
last real step's state, as with a packed batch. The backward direction reads each row reversed within its own
length, so the end of its reading is position 0. A padded step's state passes its gradient back only to the
last real step (through the `where`), as the packed kernel's final state does, and padded steps' norms are
never read: an example's norms are those it has alone, up to float32 rounding. The lengths are those each
stack is called with (a seq2seq encoder's are the source's), so a measurement needs none. One-step cells
(a seq2seq decoder's nn.LSTMCell) are not RecurrentStacks and are not measured.

What the figures are. Norms scale with the loss's reduction (a mean over B examples divides each example's
gradient by B); the ratio of the first step's norm to the last step's does not. Everything runs in eval mode
(no dropout, no weight-drop mask, batch-norm statistics untouched) and the model's modes and the global RNG
states are restored afterwards, so measuring never changes training. Norms are computed in float64: a
vanishing gradient goes below 1e-19, whose square float32 cannot hold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from seqtrain.data.collate import lengths_to_mask
from seqtrain.models.ligru import LiGRU, reverse_padded
from seqtrain.models.rnn import RecurrentStack, State
from seqtrain.resume import rng_state, set_rng_state

# One step of a cell: input projection x_t W_ih + b_ih (B, G), state h (B, H) and cell c (B, H) or None -> h, c.
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Recording:
    """The states of one layer and direction during one call of a stack, in the order it read them."""

    path: str  # the stack's module path in the model
    call: int  # 0 for the stack's first call in the measured forward, 1 for its second...
    layer: int
    direction: str  # "forward" or "backward"
    states: list[torch.Tensor]  # T tensors (B, H): the state after each step of its reading
    lengths: torch.Tensor  # (B,)

    @property
    def name(self) -> str:
        """ "<module path>/layer<i>/<direction>", with "@<k>" after the path for the stack's k-th extra call."""
        stack = self.path + (f"@{self.call}" if self.call else "")
        return "/".join(filter(None, (stack, f"layer{self.layer}", self.direction)))


@dataclass(frozen=True)
class GradientFlow:
    """One measurement: per layer and direction, the curve and its one-number summary."""

    norms: dict[str, torch.Tensor]  # (T,) float64: mean ‖∂loss/∂h‖ by distance from the end (0 = last step)
    ratios: dict[str, float]  # mean norm at each example's first step / mean norm at its last step


def gradient_flow(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor]) -> GradientFlow:
    """Measure ‖∂loss/∂h_t‖ in every recurrent layer of `model`; `loss_of(model)` runs the forward of one batch
    and returns its scalar loss. The mean at distance d is over the examples longer than d.

    Pass the plain model, not the DDP or torch.compile wrapper that trains it: a DDP forward would wait for a
    backward into the parameters that never comes, and compiling a one-off step-by-step forward only costs."""
    norms, ratios = {}, {}
    for name, (per_example, lengths) in step_gradient_norms(model, loss_of).items():
        real = lengths_to_mask(lengths, per_example.size(1))  # (B, T)
        norms[name] = per_example.sum(0) / real.sum(0)  # (T,)
        first = per_example.gather(1, (lengths.long() - 1)[:, None])  # (B, 1): the step that read the first input
        ratios[name] = float(first.mean() / per_example[:, 0].mean())
    return GradientFlow(norms, ratios)


def step_gradient_norms(
    model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per example: layer name -> ((B, T) float64 ‖∂loss/∂h‖ by distance from the end, zero from each length on,
    with T the longest length; (B,) lengths)."""
    with stepwise(model) as recordings, torch.enable_grad():
        loss = loss_of(model)
        if not recordings:
            raise ValueError(f"{type(model).__name__}'s forward ran no RecurrentStack: no gradient flow to measure")
        states = [h for recording in recordings for h in recording.states]
        grads = iter(torch.autograd.grad(loss, states, materialize_grads=True))
    result = {}
    for recording in recordings:
        lengths = recording.lengths
        norms = torch.stack([next(grads).double().norm(dim=-1) for _ in recording.states], dim=1)  # (B, T)
        by_distance = reverse_padded(norms, lengths)[:, : int(lengths.max())]  # step len-1-d is at distance d
        real = lengths_to_mask(lengths, by_distance.size(1))
        result[recording.name] = (by_distance.masked_fill(~real, 0.0), lengths)
    return result


@contextmanager
def stepwise(model: nn.Module) -> Iterator[list[Recording]]:
    """Within: `model` in eval mode, each of its RecurrentStacks stepping in Python and appending each layer's
    and direction's states to the yielded list. On leaving, every module's mode and the RNG states are restored."""
    stacks = [(path, module) for path, module in model.named_modules() if isinstance(module, RecurrentStack)]
    modes = {module: module.training for module in model.modules()}
    rng = rng_state()
    recordings: list[Recording] = []
    model.eval()
    for path, stack in stacks:
        stack.forward = functools.partial(_stepwise_forward, stack, path, recordings)  # shadows the class's forward
    try:
        yield recordings
    finally:
        for _, stack in stacks:
            del stack.forward
        for module, training in modes.items():
            module.training = training
        set_rng_state(rng)


def _stepwise_forward(
    stack: RecurrentStack,
    path: str,
    recordings: list[Recording],
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    state: State | None = None,
) -> tuple[torch.Tensor, State]:
    """RecurrentStack.forward in eval mode, one step at a time: (B, T, input) -> (B, T, output_size), final state."""
    B, T, _ = x.shape
    lengths = torch.full((B,), T, device=x.device) if lengths is None else lengths.to(x.device)
    valid = lengths_to_mask(lengths, T)  # (B, T)
    x = x.masked_fill(~valid[..., None], 0.0)  # never read; zeroed so that inf or NaN there cannot reach a gradient
    rnn, lstm = stack.rnn, isinstance(stack.rnn, nn.LSTM)
    h0, c0 = state if lstm and state is not None else (state, None)
    call = sum(r.path == path and r.layer == 0 and r.direction == "forward" for r in recordings)
    finals, cells = [], []
    for layer in range(_num_layers(rnn)):
        directions = _directions(rnn, layer, x, valid)
        outputs = []
        for d, (projected, step) in enumerate(directions):  # (B, T, G) in position order, the cell's step
            i = layer * len(directions) + d
            h = x.new_zeros(B, _hidden_size(rnn)) if h0 is None else h0[i]
            c = (torch.zeros_like(h) if c0 is None else c0[i]) if lstm else None
            projected = projected if d == 0 else reverse_padded(projected, lengths)
            states = []
            for t in range(T):
                h_next, c_next = step(projected[:, t], h, c)
                keep = valid[:, t, None]  # (B, 1): past its length a row's state stays put, as packing does
                h = torch.where(keep, h_next, h)
                c = None if c is None else torch.where(keep, c_next, c)
                states.append(h)
            recordings.append(Recording(path, call, layer, ("forward", "backward")[d], states, lengths))
            out = torch.stack(states, dim=1)  # (B, T, H)
            outputs.append(out if d == 0 else reverse_padded(out, lengths))
            finals.append(h)
            cells.append(c)
        x = torch.cat(outputs, dim=-1).masked_fill(~valid[..., None], 0.0)  # (B, T, D * H), zeros past each length
    final = torch.stack(finals)  # (L * D, B, H), layer-major as the fused modules order it
    return x, ((final, torch.stack(cells)) if lstm else final)


def _num_layers(rnn: nn.Module) -> int:
    return len(rnn.layers) if isinstance(rnn, LiGRU) else rnn.num_layers


def _hidden_size(rnn: nn.Module) -> int:
    return rnn.layers[0].hidden_size if isinstance(rnn, LiGRU) else rnn.hidden_size


def _directions(rnn: nn.Module, layer: int, x: torch.Tensor, valid: torch.Tensor) -> list[tuple[torch.Tensor, Step]]:
    """Per direction of one layer reading x (B, T, input): every step's input projection (B, T, G), computed
    for all steps at once as the fused kernels do, and the cell's step function with its recurrent weights."""
    if isinstance(rnn, LiGRU):
        ligru = rnn.layers[layer]
        projected = ligru.norm(ligru.w(x), valid)  # (B, T, D * 2H); eval mode: running statistics
        return [
            (block, functools.partial(_ligru_step, ligru.u[d]))
            for d, block in enumerate(projected.chunk(ligru.directions, dim=-1))
        ]
    step = {"RNN_TANH": _tanh_step, "RNN_RELU": _relu_step, "GRU": _gru_step, "LSTM": _lstm_step}[rnn.mode]
    directions = []
    for suffix in ("", "_reverse")[: 1 + rnn.bidirectional]:
        w_ih, w_hh, b_ih, b_hh = (
            getattr(rnn, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        hh = functools.partial(F.linear, weight=w_hh, bias=b_hh)
        directions.append((F.linear(x, w_ih, b_ih), functools.partial(step, hh)))
    return directions


# The cells' equations, as PyTorch documents them for nn.RNN, nn.GRU and nn.LSTM; `hh` is h -> W_hh h + b_hh.


def _tanh_step(hh, x, h, c):
    return torch.tanh(x + hh(h)), None


def _relu_step(hh, x, h, c):
    return torch.relu(x + hh(h)), None


def _gru_step(hh, x, h, c):
    x_r, x_z, x_n = x.chunk(3, dim=-1)  # gate order: reset, update, new
    h_r, h_z, h_n = hh(h).chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, None


def _lstm_step(hh, x, h, c):
    i, f, g, o = (x + hh(h)).chunk(4, dim=-1)  # gate order: input, forget, cell, output
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _ligru_step(u, x, h, c):
    candidate, gate = (x + h @ u).chunk(2, dim=-1)  # (B, H) each; seqtrain/models/ligru.py's `recurrence`
    z = torch.sigmoid(gate)
    return z * h + (1 - z) * torch.relu(candidate), None
