"""Greedy decoding and batched beam search, the one decode path for evaluation and sampling.

A model is decodable when it has `encode(src, lengths) -> state` and `step(state, prev) -> (logits,
state, attention weights)`, and its state has `select(index)` to expand and reorder rows (Seq2Seq
does). Beam search keeps all sentences x beams in one batch, so each step is one model call; finished
sentences leave the batch. Hypotheses are ranked by length-normalised log-probability, because raw
log-probability only falls with every token and so favours short outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from seqtrain.models.rnn import onednn_off
from seqtrain.task import evaluating

LENGTH_NORMS = ("none", "average", "gnmt")


@dataclass
class SearchOptions:
    beam_size: int = 5  # 1 = greedy
    max_len_a: float = 1.5  # at most floor(a * source length + b) target tokens, EOS included
    max_len_b: int = 10
    length_norm: str = "gnmt"  # none; average: log-prob per token; gnmt: log-prob / ((5 + n) / 6) ** alpha
    alpha: float = 0.6

    def __post_init__(self):
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"unknown length_norm {self.length_norm!r}; valid: {', '.join(LENGTH_NORMS)}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without BOS and EOS
    log_prob: float  # summed token log-probabilities, EOS included
    score: float  # log_prob normalised for length: hypotheses are ranked by it
    attention: torch.Tensor  # (len(tokens), source length): the weights with which each token was produced
    finished: bool  # ended with EOS (False: cut at the max length)


class Decodable(Protocol):
    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> Any: ...

    def step(self, state: Any, prev: torch.Tensor) -> tuple[torch.Tensor, Any, torch.Tensor]: ...


def normalise(log_prob: float, length: int, options: SearchOptions) -> float:
    """Length-normalised score of a hypothesis of `length` tokens (EOS counted)."""
    if options.length_norm == "average":
        return log_prob / length
    if options.length_norm == "gnmt":
        return log_prob / ((5 + length) / 6) ** options.alpha
    return log_prob


def max_lengths(lengths: torch.Tensor, options: SearchOptions) -> list[int]:
    """(B,) source lengths -> the most tokens each target may have, at least 1."""
    return [max(1, int(options.max_len_a * n + options.max_len_b)) for n in lengths.tolist()]


def decode(
    model: Decodable, src: torch.Tensor, lengths: torch.Tensor, bos: int, eos: int, options: SearchOptions
) -> list[Hypothesis]:
    """(B, S) padded source ids, (B,) lengths -> the best hypothesis of each sentence."""
    if options.beam_size == 1:
        return greedy(model, src, lengths, bos, eos, options)
    return [nbest[0] for nbest in beam_search(model, src, lengths, bos, eos, options)]


@contextmanager
def decoding(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode, no autograd and oneDNN off for the step loop; the model's mode is restored after."""
    with evaluating(model), torch.no_grad(), onednn_off():
        yield


def greedy(
    model: Decodable, src: torch.Tensor, lengths: torch.Tensor, bos: int, eos: int, options: SearchOptions
) -> list[Hypothesis]:
    """The most likely next token at every step, all sentences in one batch."""
    limits = max_lengths(lengths, options)
    with decoding(model):
        state = model.encode(src, lengths)
        prev = torch.full((src.size(0),), bos, dtype=torch.long, device=src.device)
        total = torch.zeros(src.size(0), device=src.device)
        alive = torch.ones(src.size(0), dtype=torch.bool, device=src.device)
        limit = torch.tensor(limits, device=src.device)
        tokens, weights = [], []
        for t in range(max(limits)):
            logits, state, step_weights = model.step(state, prev)  # (B, V), (B, S)
            best, prev = logits.float().log_softmax(-1).max(-1)  # (B,), (B,)
            total = total + best.masked_fill(~alive, 0.0)
            tokens.append(prev)
            weights.append(step_weights)
            alive = alive & (prev != eos) & (limit > t + 1)
            if not alive.any():
                break
    tokens, weights = torch.stack(tokens, 1).cpu(), torch.stack(weights, 1).float().cpu()  # (B, T), (B, T, S)
    hypotheses = []
    for b, (row, n) in enumerate(zip(tokens.tolist(), lengths.tolist())):
        end = row.index(eos) + 1 if eos in row[: limits[b]] else limits[b]
        hypotheses.append(_hypothesis(row[:end], float(total[b]), weights[b, :end, :n], eos, options))
    return hypotheses


def beam_search(
    model: Decodable, src: torch.Tensor, lengths: torch.Tensor, bos: int, eos: int, options: SearchOptions
) -> list[list[Hypothesis]]:
    """The `beam_size` best hypotheses of each sentence, best first.

    Each step scores every (beam, next token) pair of every active sentence at once, keeps the 2K best
    per sentence (at most K of them end in EOS, so K can always continue), moves EOS-ended ones among
    the K best to the sentence's finished list, and continues the K best others. A sentence is done
    when it reaches its max length (its live beams are then kept as unfinished hypotheses), or when it
    has K finished hypotheses and none of them would be displaced by its best live beam ending now.
    (Stopping at K finished alone, as fairseq does, can stop while a far likelier beam is still going:
    in a small vocabulary, early EOS candidates easily fill the K best slots.)
    """
    batch, k, device = src.size(0), options.beam_size, src.device
    limits, src_lens = max_lengths(lengths, options), lengths.tolist()
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    with decoding(model):
        state = model.encode(src, lengths).select(torch.arange(batch, device=device).repeat_interleave(k))
        sentences = list(range(batch))  # the original index of each active sentence
        scores = torch.full((batch, k), float("-inf"), device=device)  # (n, K) summed log-probs
        scores[:, 0] = 0.0  # one live beam per sentence at the start: the others would duplicate it
        history = torch.full((batch * k, 1), bos, dtype=torch.long, device=device)  # (n K, t + 1), BOS first
        attention = src.new_zeros(batch * k, 0, src.size(1), dtype=torch.float)  # (n K, t, S)
        for t in range(max(limits)):
            logits, state, weights = model.step(state, history[:, -1])  # (n K, V), (n K, S)
            n, vocab = scores.size(0), logits.size(-1)
            candidates = (scores.view(-1, 1) + logits.float().log_softmax(-1)).view(n, k * vocab)
            top, index = candidates.topk(min(2 * k, k * vocab), dim=1)  # (n, 2K)
            rows = index // vocab + torch.arange(n, device=device)[:, None] * k  # (n, 2K) parent row
            words = index % vocab  # (n, 2K)
            is_eos = words == eos
            keep, pos = top.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (n, K) best continuing
            at_limit = torch.tensor([limits[b] == t + 1 for b in sentences], device=device)[:, None]  # (n, 1)
            ending = is_eos & (torch.arange(top.size(1), device=device) < k)  # (n, 2K) EOS among the K best
            # At a sentence's max length its K best continuing candidates end too, unfinished.
            ending = ending | torch.zeros_like(ending).scatter(1, pos, at_limit.expand(-1, k))
            for i, j in (ending & top.isfinite()).nonzero().tolist():
                b, r = sentences[i], int(rows[i, j])
                tokens = history[r, 1:].tolist() + [int(words[i, j])]
                steps = torch.cat([attention[r], weights[r, None].float()])  # (t + 1, S)
                finished[b].append(_hypothesis(tokens, float(top[i, j]), steps[:, : src_lens[b]].cpu(), eos, options))
            live = keep[:, 0].tolist()  # (n,) the best continuing score of each sentence
            active = [
                i
                for i, b in enumerate(sentences)
                if limits[b] > t + 1 and not _settled(finished[b], live[i], t + 1, options)
            ]
            if not active:
                break
            picked = torch.tensor(active, device=device)
            selected = rows.gather(1, pos)[picked].flatten()  # (n' K) rows that continue
            state = state.select(selected)
            history = torch.cat([history[selected], words.gather(1, pos)[picked].view(-1, 1)], 1)
            attention = torch.cat([attention[selected], weights[selected, None].float()], 1)
            scores = keep[picked]
            sentences = [sentences[i] for i in active]
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:k] for hyps in finished]


def _settled(finished: list[Hypothesis], live: float, length: int, options: SearchOptions) -> bool:
    """Whether the K best finished hypotheses all score at least the best live beam ending at `length`."""
    k = options.beam_size
    return len(finished) >= k and sorted(h.score for h in finished)[-k] >= normalise(live, length, options)


def _hypothesis(
    tokens: list[int], log_prob: float, attention: torch.Tensor, eos: int, options: SearchOptions
) -> Hypothesis:
    """tokens as generated (EOS last when finished) and their (T, S) attention -> a Hypothesis without EOS."""
    ended = tokens[-1] == eos
    score = normalise(log_prob, len(tokens), options)
    kept = len(tokens) - ended
    return Hypothesis(tokens[:kept], log_prob, score, attention[:kept], ended)
