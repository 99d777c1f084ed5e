"""An RNN encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015).

Encoder: embedding -> stacked bidirectional GRU/LSTM over packed sequences, so padding never changes
an output. Bridge: each layer's final forward and backward states, concatenated, through a linear
layer and tanh, give the decoder layer's initial state (encoder and decoder have the same depth).

Decoder: Luong's attentional decoder with input feeding. At step t the cell stack reads the previous
token's embedding together with the previous attentional vector h~_{t-1}; the top hidden state h_t
queries the encoder states for a context c_t; h~_t = tanh(W_c [h_t; c_t]) predicts the next token and
is fed to step t+1, so the decoder knows where it has already attended. Every attention kind
(additive, dot, general) plugs in as the score function. With tied embeddings h~_t has the embedding
size, so the output layer can reuse the decoder's input embedding matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from seqtrain.data.collate import lengths_to_mask
from seqtrain.models.attention import Attention
from seqtrain.models.dropout import Dropout
from seqtrain.models.rnn import RecurrentStack

DECODER_CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}


@dataclass
class DecoderState:
    """Everything one decoder step needs; every tensor has the batch (or batch x beam) first
    (the hidden states after their layer dimension), so that `select` can reorder or expand it."""

    h: torch.Tensor  # (L, B, H_dec)
    c: torch.Tensor | None  # (L, B, H_dec) for LSTM, None for GRU
    feed: torch.Tensor  # (B, O) the previous attentional vector h~
    memory: torch.Tensor  # (B, S, 2 H_enc) encoder outputs, the attention values
    keys: torch.Tensor  # (B, S, A) their step-independent projection
    mask: torch.Tensor  # (B, S) True at real source positions

    def select(self, index: torch.Tensor) -> DecoderState:
        """Rows `index` (N,) of every tensor: beam search expands sentences to beams and reorders them."""
        return DecoderState(
            self.h[:, index],
            None if self.c is None else self.c[:, index],
            self.feed[index],
            self.memory[index],
            self.keys[index],
            self.mask[index],
        )


class Encoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        pad_id: int,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        self.rnn = RecurrentStack(cell, embedding_dim, hidden_size, num_layers, bidirectional=True, dropout=dropout)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor):
        """(B, S) ids -> outputs (B, S, 2 H_enc) and the final states, each (L, B, 2 H_enc) fwd;bwd."""
        out, state = self.rnn(self.dropout(self.embedding(src)), lengths)
        states = state if isinstance(state, tuple) else (state,)
        return out, tuple(_join_directions(s) for s in states)


def _join_directions(state: torch.Tensor) -> torch.Tensor:
    """(L * 2, B, H) in PyTorch's layer-major order -> (L, B, 2 H)."""
    layers2, batch, hidden = state.shape
    return state.view(layers2 // 2, 2, batch, hidden).permute(0, 2, 1, 3).reshape(layers2 // 2, batch, 2 * hidden)


class Decoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        memory_size: int,
        attention: str,
        dropout: float,
        tie_embeddings: bool,
        pad_id: int,
    ):
        super().__init__()
        if cell not in DECODER_CELLS:
            raise ValueError(f"unknown decoder cell {cell!r}; valid: {', '.join(DECODER_CELLS)}")
        self.out_size = embedding_dim if tie_embeddings else hidden_size  # the size of h~
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        sizes = [embedding_dim + self.out_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(DECODER_CELLS[cell](size, hidden_size) for size in sizes)
        self.attention = Attention(attention, hidden_size, memory_size)
        self.combine = nn.Linear(hidden_size + memory_size, self.out_size)
        self.head = nn.Linear(self.out_size, vocab_size)
        if tie_embeddings:
            self.head.weight = self.embedding.weight

    def step(self, state: DecoderState, prev: torch.Tensor) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One target position: previous tokens (B,) -> logits (B, V), the new state, attention weights (B, S)."""
        new, weights = self.advance(state, self.embed(prev))
        return self.logits(new.feed), new, weights

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (...) -> their input vectors (..., E), dropout applied."""
        return self.dropout(self.embedding(tokens))

    def logits(self, feed: torch.Tensor) -> torch.Tensor:
        """Attentional vectors (..., O) -> logits (..., V)."""
        return self.head(self.dropout(feed))

    def advance(self, state: DecoderState, embedded: torch.Tensor) -> tuple[DecoderState, torch.Tensor]:
        """The recurrence alone: the previous tokens' vectors (B, E) -> the new state (its `feed` is the
        attentional vector h~ the logits come from) and the attention weights (B, S)."""
        x = torch.cat([embedded, state.feed], -1)  # (B, E + O)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            if state.c is None:
                h = cell(x, state.h[layer])  # (B, H_dec)
            else:
                h, c = cell(x, (state.h[layer], state.c[layer]))
                cs.append(c)
            hs.append(h)
            x = self.dropout(h)
        context, weights = self.attention(h, state.memory, state.mask, state.keys)  # (B, 2 H_enc), (B, S)
        feed = torch.tanh(self.combine(torch.cat([h, context], -1)))  # (B, O)
        return replace(state, h=torch.stack(hs), c=torch.stack(cs) if cs else None, feed=feed), weights


class Seq2Seq(nn.Module):
    """Source ids -> target logits. `encode` + `step` are the decoding interface (see decoding.py)."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        cell: str = "gru",
        embedding_dim: int = 256,
        hidden_size: int = 256,  # per direction in the encoder; the decoder's is 2x, matching the states
        num_layers: int = 1,
        attention: str = "general",
        dropout: float = 0.1,
        tie_embeddings: bool = False,
        teacher_forcing: float = 1.0,  # probability of feeding the gold token; < 1 is scheduled sampling
        pad_id: int = 0,
    ):
        super().__init__()
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing}")
        memory = 2 * hidden_size
        self.encoder = Encoder(src_vocab_size, embedding_dim, cell, hidden_size, num_layers, dropout, pad_id)
        self.decoder = Decoder(
            tgt_vocab_size, embedding_dim, cell, memory, num_layers, memory, attention, dropout, tie_embeddings, pad_id
        )
        self.bridge = nn.ModuleList(nn.Linear(memory, memory) for _ in range(2 if cell == "lstm" else 1))
        self.teacher_forcing = teacher_forcing

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> DecoderState:
        """(B, S) source ids and (B,) lengths -> the decoder's initial state."""
        memory, finals = self.encoder(src, lengths)  # (B, S, 2 H_enc), [(L, B, 2 H_enc)]
        h, *c = [torch.tanh(bridge(final)) for bridge, final in zip(self.bridge, finals)]  # (L, B, H_dec)
        mask = lengths_to_mask(lengths.to(src.device), src.size(1))  # (B, S)
        return DecoderState(
            h=h,
            c=c[0] if c else None,
            feed=memory.new_zeros(src.size(0), self.decoder.out_size),
            memory=memory,
            keys=self.decoder.attention.project_keys(memory),
            mask=mask,
        )

    def step(self, state: DecoderState, prev: torch.Tensor) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """(B,) previous tokens -> logits (B, V), new state, attention weights (B, S)."""
        return self.decoder.step(state, prev)

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt_in: torch.Tensor,
        teacher_forcing: float | None = None,
        generator: torch.Generator | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) source, (B,) lengths, (B, T) target input (BOS first) -> logits (B, T, V), or (N, V) at
        the N positions where `positions` (B, T) is True: the loss needs no logits for padding, and the
        output layer is the largest product of a training step.

        In training with a teacher-forcing ratio below 1, each example at each step feeds back the model's
        own previous argmax instead of the gold token with probability 1 - ratio (coins drawn from
        `generator`, or the global RNG). Evaluation always feeds the gold tokens.
        """
        ratio = self.teacher_forcing if teacher_forcing is None else teacher_forcing
        state = self.encode(src, src_lengths)
        if not (self.training and ratio < 1.0):
            # Gold tokens in: the embedding and the output layer each run once over all positions, one
            # product and one weight gradient for the whole target rather than one per position.
            # unbind, not embedded[:, t]: the gradient of each index would be a zeroed copy of all of it.
            feeds = []
            for embedded in self.decoder.embed(tgt_in).unbind(1):  # (B, T, E) -> T x (B, E)
                state, _ = self.decoder.advance(state, embedded)
                feeds.append(state.feed)
            feeds = torch.stack(feeds, 1)  # (B, T, O)
            return self.decoder.logits(feeds if positions is None else feeds[positions])  # (B, T, V) or (N, V)
        prev, logits = tgt_in[:, 0], []
        for t in range(tgt_in.size(1)):
            step_logits, state, _ = self.decoder.step(state, prev)  # (B, V)
            logits.append(step_logits)
            if t + 1 < tgt_in.size(1):
                device = generator.device if generator is not None else prev.device
                gold = torch.rand(prev.shape, generator=generator, device=device).to(prev.device) < ratio
                prev = torch.where(gold, tgt_in[:, t + 1], step_logits.detach().argmax(-1))
        logits = torch.stack(logits, 1)  # (B, T, V)
        return logits if positions is None else logits[positions]
