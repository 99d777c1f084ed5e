"""Decoding: beam 1 is greedy, batching never changes a result, length normalisation and the max-length
rule do what they say, and the best hypothesis's attention can be drawn."""

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import assert_float32_close
from seqtrain.data.collate import lengths_to_mask, pad
from seqtrain.models.decoding import SearchOptions, beam_search, decode, greedy
from seqtrain.models.seq2seq import Seq2Seq
from seqtrain.plots import attention_image, save_attention

PAD, BOS, EOS, A, B, C = range(6)
SOURCES = [[3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 3, 4, 5], [6]]


@functools.cache
def half_trained(cell: str = "gru") -> Seq2Seq:
    """60 steps on reversal: unlike an untrained model, it ends hypotheses at varied lengths."""
    torch.manual_seed(0)
    model = Seq2Seq(13, 13, cell=cell, embedding_dim=8, hidden_size=8, num_layers=2, attention="additive")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(0)
    for _ in range(60):
        sources = [torch.randint(3, 13, (k,), generator=data) for k in torch.randint(1, 8, (16,), generator=data)]
        src, lengths = pad(sources, PAD)
        tgt_in, _ = pad([torch.cat([torch.tensor([BOS]), s.flip(0)]) for s in sources], PAD)
        tgt_out, _ = pad([torch.cat([s.flip(0), torch.tensor([EOS])]) for s in sources], PAD)
        loss = F.cross_entropy(model(src, lengths, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def padded(sources):
    return pad([torch.tensor(s) for s in sources], PAD)


def same(got, expected):
    assert [h.tokens for h in got] == [h.tokens for h in expected]
    assert [h.finished for h in got] == [h.finished for h in expected]
    for g, e in zip(got, expected):
        assert g.score == pytest.approx(e.score, abs=1e-5) and g.log_prob == pytest.approx(e.log_prob, abs=1e-5)
        assert_float32_close(g.attention, e.attention)


@pytest.mark.parametrize("cell,norm", [("gru", "gnmt"), ("lstm", "average"), ("gru", "none")])
def test_beam_of_one_is_greedy(cell, norm):
    model, (src, lengths) = half_trained(cell), padded(SOURCES)
    options = SearchOptions(beam_size=1, length_norm=norm, max_len_a=0.5, max_len_b=1)
    best = greedy(model, src, lengths, BOS, EOS, options)
    assert {h.finished for h in best} == {True, False}  # both ways of ending are covered
    same([nbest[0] for nbest in beam_search(model, src, lengths, BOS, EOS, options)], best)
    same(decode(model, src, lengths, BOS, EOS, options), best)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_batched_beam_search_equals_one_sentence_at_a_time(cell):
    model, (src, lengths) = half_trained(cell), padded(SOURCES)
    options = SearchOptions(beam_size=4, max_len_a=0.5, max_len_b=2)
    batched = beam_search(model, src, lengths, BOS, EOS, options)
    for sentence, nbest in zip(SOURCES, batched):
        assert len(nbest) == 4 and [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        same(nbest, beam_search(model, *padded([sentence]), BOS, EOS, options)[0])
    assert [h.tokens for h in decode(model, src, lengths, BOS, EOS, options)] == [n[0].tokens for n in batched]


def test_attention_rows_cover_the_real_source_only():
    model, (src, lengths) = half_trained(), padded(SOURCES)
    for hypothesis, n in zip(beam_search(model, src, lengths, BOS, EOS, SearchOptions(beam_size=3))[0:4], lengths):
        best = hypothesis[0]
        assert best.attention.shape == (len(best.tokens), int(n))
        torch.testing.assert_close(best.attention.sum(-1), torch.ones(len(best.tokens)))


@dataclass
class Rows:
    mask: torch.Tensor  # (B, S)

    def select(self, index):
        return Rows(self.mask[index])


class Table(torch.nn.Module):
    """A stub model whose next-token distribution depends only on the previous token."""

    def __init__(self, rows: dict[int, dict[int, float]]):
        super().__init__()
        probs = torch.zeros(6, 6)
        for prev, nexts in rows.items():
            probs[prev, list(nexts)] = torch.tensor(list(nexts.values()))
        self.logits = probs.log()  # (V, V); impossible tokens are -inf

    def encode(self, src, lengths):
        return Rows(lengths_to_mask(lengths, src.size(1)).float())

    def step(self, state, prev):
        return self.logits[prev], state, state.mask / state.mask.sum(-1, keepdim=True)


def test_length_normalisation_changes_the_choice():
    # Ending at once has p = 0.5 (per token 0.5); "A B" then EOS has p = 0.45 * 0.9 * 0.9 = 0.36 (per token 0.71).
    model = Table(
        {BOS: {EOS: 0.5, A: 0.45, C: 0.05}, A: {B: 0.9, EOS: 0.05, C: 0.05}, B: {EOS: 0.9, C: 0.1}, C: {C: 1.0}}
    )
    src, lengths = padded([[3, 4]])
    raw = decode(model, src, lengths, BOS, EOS, SearchOptions(beam_size=2, length_norm="none"))[0]
    average = decode(model, src, lengths, BOS, EOS, SearchOptions(beam_size=2, length_norm="average"))[0]
    assert raw.tokens == [] and raw.log_prob == pytest.approx(np.log(0.5))
    assert average.tokens == [A, B] and average.score == pytest.approx(np.log(0.45 * 0.9 * 0.9) / 3)
    assert greedy(model, src, lengths, BOS, EOS, SearchOptions(beam_size=1))[0].tokens == []


def test_beam_search_goes_on_while_a_likelier_beam_is_live():
    # Two unlikely early EOS candidates fill both slots after step 2, while "A B" (p = 0.94) has not ended yet.
    model = Table(
        {
            BOS: {A: 0.96, EOS: 0.02, B: 0.015, C: 0.005},
            A: {B: 0.98, EOS: 0.015, C: 0.005},
            B: {EOS: 0.98, C: 0.02},
            C: {EOS: 1.0},
        }
    )
    src, lengths = padded([[3, 4]])
    best = decode(model, src, lengths, BOS, EOS, SearchOptions(beam_size=2, length_norm="none"))[0]
    assert best.tokens == [A, B] and best.log_prob == pytest.approx(np.log(0.96 * 0.98 * 0.98))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_max_length_rule_cuts_hypotheses_that_never_end(beam_size):
    model = Table({BOS: {C: 0.6, A: 0.4}, A: {A: 0.5, C: 0.5}, C: {C: 0.9, A: 0.1}})  # EOS is impossible
    src, lengths = padded([[3, 4], [3, 4, 5, 6, 7]])
    options = SearchOptions(beam_size=beam_size, max_len_a=2.0, max_len_b=1)
    hypotheses = decode(model, src, lengths, BOS, EOS, options)
    assert [len(h.tokens) for h in hypotheses] == [5, 11] and not any(h.finished for h in hypotheses)
    assert hypotheses[0].tokens == [C] * 5


def test_decoding_restores_the_mode_and_the_best_alignment_can_be_drawn(tmp_path):
    model, (src, lengths) = half_trained().train(), padded(SOURCES[2:3])
    best = decode(model, src, lengths, BOS, EOS, SearchOptions(beam_size=3, max_len_b=4))[0]
    assert model.training
    source, target = [f"s{i}" for i in SOURCES[2]], [f"t{i}" for i in best.tokens]
    png = save_attention(best.attention, source, target, tmp_path / "plots" / "align.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = attention_image(best.attention, source, target)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
    with pytest.raises(ValueError, match="labels"):
        attention_image(best.attention, source[:-1], target)
