import math

import pytest
import torch
from torch import nn

from seqtrain.models.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.35, 0.5, 0.9])
def test_mask_keeps_one_minus_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of four: the last word is cut
    keep, scale = keep_mask(torch.Size([n]), p)
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * sigma
    out = dropout(torch.ones(n), p)
    assert torch.equal(out.unique(), torch.tensor([0.0, scale]))
    assert abs(out.mean().item() - 1.0) < 5 * sigma * scale


def test_neighbouring_elements_are_independent():
    """Four elements share one random word: their masks must still be uncorrelated."""
    torch.manual_seed(1)
    keep = keep_mask(torch.Size([4_000_000]), 0.5)[0].float().view(-1, 4) * 2 - 1  # +-1
    for a in range(4):
        for b in range(a + 1, 4):
            assert abs((keep[:, a] * keep[:, b]).mean().item()) < 5 / math.sqrt(1_000_000)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(8, 33, 17, requires_grad=True)
    out = dropout(x, 0.35)
    out.sum().backward()
    kept = out != 0
    _, scale = keep_mask(torch.Size([1]), 0.35)
    assert torch.equal(out[kept], x[kept] * scale)
    assert torch.equal(x.grad, kept.float() * scale)


def test_seeded_like_torch_and_different_each_call():
    torch.manual_seed(3)
    first, second = dropout(torch.ones(1000), 0.5), dropout(torch.ones(1000), 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(torch.ones(1000), 0.5), first)
    assert not torch.equal(first, second)


def test_identity_in_eval_and_at_zero_and_zeros_at_one():
    x = torch.randn(5, 7)
    module = Dropout(0.5).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_module_has_nn_dropouts_interface():
    module = Dropout(0.25)
    assert isinstance(module, nn.Dropout) and module.p == 0.25
    assert module.state_dict() == {}
    torch.manual_seed(4)
    out = module(torch.ones(100_000))
    assert abs((out == 0).float().mean().item() - 0.25) < 0.01
