"""Many-to-one sequence classifier: read a whole sequence, predict one label.

    tokens -> embedding (+ embedding dropout) (+ character n-gram embeddings)
           -> stacked (bi)RNN/GRU/LSTM, packed -> pooling over time -> dropout -> MLP -> class logits

The recurrent stack packs padded batches and every pooling masks padded positions, so padding never
changes a prediction: an example scores the same alone or in a padded batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from seqtrain.data.collate import lengths_to_mask
from seqtrain.data.subwords import PAD_BUCKET
from seqtrain.models.dropout import Dropout, dropout
from seqtrain.models.rnn import RecurrentStack

POOLINGS = ("last", "mean", "max", "attention")


class AdditiveSelfAttention(nn.Module):
    """Score each position with v·tanh(W h_t) (Bahdanau-style, one learnt query), softmax over the real
    positions, and return the weighted sum: the model learns which words to listen to."""

    def __init__(self, size: int, attention_size: int):
        super().__init__()
        self.project = nn.Linear(size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H), (B, T) -> pooled (B, H), weights (B, T) that are zero on padding."""
        scores = self.score(torch.tanh(self.project(states))).squeeze(-1)  # (B, T)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return torch.einsum("bt,bth->bh", weights, states), weights


class SequenceClassifier(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 128,
        cell: str = "lstm",
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "attention",
        dropout: float = 0.3,
        embedding_dropout: float = 0.1,
        mlp_hidden: int = 0,
        attention_size: int = 128,
        padding_idx: int = 0,
        subword_buckets: int = 0,
        weight_drop: float = 0.0,
    ):
        """`dropout` acts between recurrent layers and before each MLP layer; `embedding_dropout` zeroes
        whole token vectors (word dropout), so the model cannot lean on any single word. `mlp_hidden`
        = 0 makes the head one linear layer. `subword_buckets` > 0 adds to each word's vector the mean of
        its hashed character n-grams' vectors (seqtrain/data/subwords.py), which word dropout leaves in
        place: the model learns to read a word it cannot identify from its spelling, as it must for a
        word unseen in training. `weight_drop` is DropConnect on the recurrent weights (RecurrentStack)."""
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.bidirectional = bidirectional
        self.embedding_dropout = embedding_dropout
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.subwords = (
            nn.EmbeddingBag(subword_buckets, embedding_dim, mode="mean", padding_idx=PAD_BUCKET)
            if subword_buckets
            else None
        )
        self.rnn = RecurrentStack(cell, embedding_dim, hidden_size, num_layers, bidirectional, dropout, weight_drop)
        size = self.rnn.output_size
        self.attention = AdditiveSelfAttention(size, attention_size) if pooling == "attention" else None
        if mlp_hidden:
            self.head = nn.Sequential(
                Dropout(dropout),
                nn.Linear(size, mlp_hidden),
                nn.ReLU(),
                Dropout(dropout),
                nn.Linear(mlp_hidden, num_classes),
            )
        else:
            self.head = nn.Sequential(Dropout(dropout), nn.Linear(size, num_classes))

    def forward(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        subwords: torch.Tensor | None = None,
        mix: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids, (B,) lengths, (B, T, K) n-gram buckets if subword_buckets > 0 -> (B, C) class logits.

        `mix` = (lam (B,), partner (B,)) blends each pooled sentence vector with its partner's before the
        head, lam * own + (1 - lam) * partner's: sentence mixup, inside the forward so that DDP sees it."""
        features = self.features(tokens, lengths, subwords)  # (B, H)
        if mix is not None:
            lam, partner = mix
            lam = lam.to(features)[:, None]
            features = lam * features + (1 - lam) * features[partner]
        return self.head(features)

    def features(
        self, tokens: torch.Tensor, lengths: torch.Tensor, subwords: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pooled sentence vector (B, H) that `head` turns into logits: what mixup blends."""
        x = self.embedding(tokens)  # (B, T, E)
        if self.training and self.embedding_dropout > 0:
            keep = dropout(x.new_ones(x.shape[:2] + (1,)), self.embedding_dropout)  # (B, T, 1): 0 or 1/(1-p)
            x = x * keep
        if self.subwords is not None:
            x = x + self.subword_vectors(subwords)
        states, _ = self.rnn(x, lengths)  # (B, T, H), zeros past each length
        return self.pool(states, lengths)

    def subword_vectors(self, subwords: torch.Tensor) -> torch.Tensor:
        """(B, T, K) n-gram buckets -> (B, T, E): the mean of each word's n-gram vectors; zeros for a word
        with none (an all-padding bag). ONNX has no EmbeddingBag with a padding index, so an ONNX export
        computes the same mean as a gather, a masked sum and a divide."""
        if torch.onnx.is_in_onnx_export():
            real = (subwords != PAD_BUCKET).unsqueeze(-1)
            vectors = F.embedding(subwords, self.subwords.weight) * real
            return vectors.sum(-2) / real.sum(-2).clamp(min=1)
        return self.subwords(subwords.flatten(0, 1)).view(*subwords.shape[:2], -1)

    def pool(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, H), looking only at the first `lengths[b]` positions of each row."""
        if self.pooling == "last":
            return self.last_state(states, lengths)
        if self.pooling == "mean":
            return states.sum(dim=1) / lengths.to(states)[:, None]  # padded positions are already zero
        mask = lengths_to_mask(lengths.to(states.device), states.size(1))  # (B, T)
        if self.pooling == "max":
            return states.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
        return self.attention(states, mask)[0]

    def last_state(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The forward direction's state at the last real position; for a bidirectional stack, joined
        with the backward direction's state at position 0, where it has read the whole sequence."""
        last = (lengths.to(states.device) - 1).view(-1, 1, 1).expand(-1, 1, states.size(2))  # (B, 1, H)
        final = states.gather(1, last).squeeze(1)  # (B, H)
        if not self.bidirectional:
            return final
        half = states.size(2) // 2
        return torch.cat([final[:, :half], states[:, 0, half:]], dim=-1)
