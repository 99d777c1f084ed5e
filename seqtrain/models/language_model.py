"""A recurrent language model: embedding (or one-hot) -> recurrent stack -> softmax over the vocabulary."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from seqtrain.models.dropout import Dropout
from seqtrain.models.rnn import RecurrentStack, State


class RecurrentLM(nn.Module):
    """Karpathy's min-char-rnn, grown up: any cell, stacked, dropout, weight drop, optional weight tying.

    For truncated BPTT across consecutive windows (`stream=`), the model keeps the last training
    state itself, detached, and checkpoints it as extra state so that a resumed run continues it.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 512,
        num_layers: int = 2,
        embedding_dim: int = 64,
        dropout: float = 0.0,
        tie_weights: bool = False,
        weight_drop: float = 0.0,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim) if embedding_dim > 0 else None
        self.dropout = Dropout(dropout)
        self.rnn = RecurrentStack(
            cell, embedding_dim or vocab_size, hidden_size, num_layers, dropout=dropout, weight_drop=weight_drop
        )
        out_dim = hidden_size
        self.projection = None
        if tie_weights:
            if self.embedding is None:
                raise ValueError("weight tying needs an embedding (embedding_dim > 0)")
            if hidden_size != embedding_dim:
                self.projection = nn.Linear(hidden_size, embedding_dim)
            out_dim = embedding_dim
        self.head = nn.Linear(out_dim, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight
        self.carry: State | None = None

    def forward(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: State | None = None,
        stream: str | None = None,
    ) -> tuple[torch.Tensor, State]:
        """(B, T) token ids -> (B, T, V) logits and the final state.

        stream="start" or "continue" (training only): begin a fresh carried state, or continue the one
        kept from the previous batch.
        """
        if stream is not None and self.training:
            state = self.carry if stream == "continue" else None
        x = self.embedding(tokens) if self.embedding is not None else F.one_hot(tokens, self.vocab_size).float()
        out, state = self.rnn(self.dropout(x), lengths, state)  # (B, T, H)
        out = self.dropout(out)
        if self.projection is not None:
            out = self.projection(out)
        if stream is not None and self.training:
            self.carry = _detach(state)
        return self.head(out), state

    def get_extra_state(self) -> dict[str, Any]:
        if self.carry is None:
            return {}
        return {"carry": list(self.carry) if isinstance(self.carry, tuple) else [self.carry]}

    def set_extra_state(self, extra: dict[str, Any]) -> None:
        carry = extra.get("carry")
        self.carry = None if not carry else (tuple(carry) if len(carry) == 2 else carry[0])


def _detach(state: State) -> State:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
