"""Attention: padding gets exactly zero weight and cannot change the context."""

import pytest
import torch

from conftest import assert_float32_close
from seqtrain.models.attention import ATTENTIONS, Attention


def make(kind: str, size: int = 6) -> Attention:
    torch.manual_seed(0)
    return Attention(kind, query_size=size, key_size=size, hidden_size=5)


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_padded_positions_get_exactly_zero_weight(kind):
    attention = make(kind)
    values = torch.randn(3, 7, 6)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None]  # (B, S)
    values[~mask] = 1e4  # huge junk in the padding must not leak
    context, weights = attention(torch.randn(3, 6), values, mask)
    assert context.shape == (3, 6) and weights.shape == (3, 7)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert context.abs().max() < 100  # a weighted mean of the real values only


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_padding_does_not_change_the_context(kind):
    attention = make(kind)
    query, values = torch.randn(1, 6), torch.randn(1, 4, 6)
    alone, alone_weights = attention(query, values, torch.ones(1, 4, dtype=torch.bool))
    padded_values = torch.cat([values, torch.randn(1, 3, 6)], 1)  # (1, 7, 6)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    padded, padded_weights = attention(query, padded_values, mask)
    assert_float32_close(padded, alone, ulps=64)
    assert_float32_close(padded_weights[:, :4], alone_weights, ulps=64)


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_precomputed_keys_give_the_same_result(kind):
    attention = make(kind)
    query, values, mask = torch.randn(2, 6), torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool)
    expected = attention(query, values, mask)
    got = attention(query, values, mask, keys=attention.project_keys(values))
    torch.testing.assert_close(got, expected)


def test_query_and_key_sizes_may_differ_except_for_dot():
    for kind in ("additive", "general"):
        context, _ = Attention(kind, 4, 6)(torch.randn(2, 4), torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool))
        assert context.shape == (2, 6)
    with pytest.raises(ValueError, match="equal query and key sizes"):
        Attention("dot", 4, 6)
    with pytest.raises(ValueError, match="valid: additive, dot, general"):
        Attention("bilinear", 4, 4)
