"""Attention over encoder states: additive (Bahdanau), dot and general (Luong), chosen by name.

A decoder asks one question per step (the query) of all source positions (the keys/values). The
key-side projection does not depend on the step, so `project_keys` computes it once per source
sentence and the decoder passes it back on every step; beam search only reorders it.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTIONS = ("additive", "dot", "general")


class Attention(nn.Module):
    """score(q, k): additive v·tanh(W_q q + W_k k); dot q·k; general q·(W k). Softmax over real positions."""

    def __init__(self, kind: str, query_size: int, key_size: int, hidden_size: int | None = None):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTIONS)}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs equal query and key sizes, got {query_size} and {key_size}")
        self.kind = kind
        self.key_proj = None
        if kind == "additive":
            hidden_size = hidden_size or query_size
            self.query_proj = nn.Linear(query_size, hidden_size)
            self.key_proj = nn.Linear(key_size, hidden_size, bias=False)
            self.v = nn.Linear(hidden_size, 1, bias=False)
        elif kind == "general":
            self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, values: torch.Tensor) -> torch.Tensor:
        """(B, S, H_enc) -> (B, S, A): the step-independent part of the score."""
        return values if self.key_proj is None else self.key_proj(values)

    def forward(
        self,
        query: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H), values (B, S, H_enc), mask (B, S) True at real positions; keys from `project_keys`
        (computed here when not given). Returns context (B, H_enc) and weights (B, S).

        Padded positions score -inf, so softmax gives them exactly zero weight: padding cannot leak into
        the context. Every row needs at least one real position.
        """
        keys = self.project_keys(values) if keys is None else keys
        if self.kind == "additive":
            # (B, 1, A) + (B, S, A) -> (B, S, A) -> (B, S)
            scores = self.v(torch.tanh(self.query_proj(query)[:, None] + keys)).squeeze(-1)
        else:
            scores = torch.bmm(keys, query[:, :, None]).squeeze(-1)  # (B, S, H) @ (B, H, 1) -> (B, S)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)  # (B, S)
        context = torch.bmm(weights[:, None], values).squeeze(1)  # (B, 1, S) @ (B, S, H_enc) -> (B, H_enc)
        return context, weights
