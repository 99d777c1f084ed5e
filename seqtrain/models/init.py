"""Weight initialisation schemes from the lectures, chosen by config."""

from __future__ import annotations

from torch import nn

SCHEMES = ("default", "xavier", "kaiming")
RECURRENT_SCHEMES = ("default", "orthogonal", "xavier")


def initialize(model: nn.Module, scheme: str = "default", recurrent: str = "default") -> None:
    """Initialise feed-forward and input weights by `scheme` and hidden-to-hidden weights by `recurrent`.

    "default" keeps PyTorch's own initialisation. Xavier suits tanh/sigmoid layers, Kaiming (He) suits
    ReLU layers; orthogonal recurrent matrices keep gradient norms stable through time. Any non-default
    choice also zeroes biases and sets LSTM forget-gate biases to 1 so that memory is kept early on.
    """
    if scheme not in SCHEMES or recurrent not in RECURRENT_SCHEMES:
        raise ValueError(f"unknown init {scheme!r}/{recurrent!r}")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.EmbeddingBag)) and scheme != "default":
            _init_matrix(module.weight, scheme)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell)):
            _init_recurrent(module, scheme, recurrent)


def _init_matrix(weight, scheme: str) -> None:
    if scheme == "xavier":
        nn.init.xavier_uniform_(weight)
    else:
        nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _init_recurrent(rnn: nn.RNNBase | nn.RNNCellBase, scheme: str, recurrent: str) -> None:
    """A full-sequence RNN or a one-step cell (a decoder's): both name their weights weight_ih*, weight_hh*."""
    lstm = isinstance(rnn, (nn.LSTM, nn.LSTMCell))
    gates = 4 if lstm else 3 if isinstance(rnn, (nn.GRU, nn.GRUCell)) else 1
    for name, param in rnn.named_parameters():
        blocks = param.data.chunk(gates, dim=0)  # one block per gate: each is initialised as its own matrix
        if name.startswith("weight_ih") and scheme != "default":
            for block in blocks:
                _init_matrix(block, scheme)
        elif name.startswith("weight_hh") and recurrent != "default":
            for block in blocks:
                nn.init.orthogonal_(block) if recurrent == "orthogonal" else nn.init.xavier_uniform_(block)
        elif name.startswith("bias") and (scheme != "default" or recurrent != "default"):
            nn.init.zeros_(param)
            if lstm and name.startswith("bias_ih"):
                blocks[1].fill_(1.0)  # PyTorch's gate order is input, forget, cell, output
