"""Li-GRU against its equations, and padding invariance."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_float32_close
from seqtrain.models.ligru import LiGRU, MaskedBatchNorm, reverse_padded


def randomized(model: LiGRU, seed: int = 0) -> LiGRU:
    """Give batch norm non-trivial running statistics and affine parameters, so the test sees them."""
    g = torch.Generator().manual_seed(seed)
    for layer in model.layers:
        n = layer.norm.weight.numel()
        layer.norm.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
        layer.norm.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        layer.norm.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
        layer.norm.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def reference(model: LiGRU, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Li-GRU equations for one unpadded sequence (T, F), step by step, in eval mode."""
    finals = []
    for layer in model.layers:
        H, norm = layer.hidden_size, layer.norm
        wx = x @ layer.w.weight.T  # (T, D * 2H)
        bn = (wx - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias
        outputs = []
        for d in range(layer.directions):
            block = bn[:, d * 2 * H : (d + 1) * 2 * H]
            u_h, u_z = layer.u[d][:, :H], layer.u[d][:, H:]
            h = torch.zeros(H)
            out = torch.zeros(len(x), H)
            for t in range(len(x)) if d == 0 else reversed(range(len(x))):
                z = torch.sigmoid(block[t, H:] + h @ u_z)
                candidate = torch.relu(block[t, :H] + h @ u_h)
                h = z * h + (1 - z) * candidate
                out[t] = h
            outputs.append(out)
            finals.append(h)
        x = torch.cat(outputs, dim=1)
    return x, torch.stack(finals)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_outputs_follow_the_equations(bidirectional):
    torch.manual_seed(0)
    model = randomized(LiGRU(3, 4, num_layers=2, bidirectional=bidirectional))
    x = torch.randn(1, 6, 3)
    with torch.no_grad():
        out, state = model(x)
        expected_out, expected_state = reference(model, x[0])
    torch.testing.assert_close(out[0], expected_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state[:, 0], expected_state, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_outputs_in_eval(bidirectional):
    torch.manual_seed(1)
    model = randomized(LiGRU(5, 8, num_layers=2, bidirectional=bidirectional))
    sequences = [torch.randn(n, 5) for n in (9, 4, 1)]
    batch = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
    batch[1, 4:], batch[2, 1:] = 50.0, -50.0  # garbage in the padding
    with torch.no_grad():
        out, state = model(batch, torch.tensor([9, 4, 1]))
        for b, seq in enumerate(sequences):
            alone, alone_state = model(seq[None])
            assert_float32_close(out[b, : len(seq)], alone[0])
            assert_float32_close(state[:, b], alone_state[:, 0])
            assert (out[b, len(seq) :] == 0).all()


def test_training_batch_norm_ignores_padding():
    """In training, extra padding (with garbage in it) changes neither outputs nor running statistics."""
    torch.manual_seed(2)
    model = LiGRU(4, 6, num_layers=2, bidirectional=True).train()
    lengths = torch.tensor([7, 3])
    x = torch.randn(2, 7, 4)
    x[1, 3:] = 0
    longer = torch.cat([x, torch.full((2, 5, 4), 9.0)], dim=1)
    twin = LiGRU(4, 6, num_layers=2, bidirectional=True).train()
    twin.load_state_dict(model.state_dict())
    out, _ = model(x, lengths)
    out_longer, _ = twin(longer, lengths)
    assert_float32_close(out_longer[:, :7], out)
    assert (out_longer[:, 7:] == 0).all()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert_float32_close(a, b, ulps=64)


def test_masked_batch_norm_matches_batch_norm_on_real_positions():
    torch.manual_seed(3)
    x = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    ours, torch_bn = MaskedBatchNorm(4).train(), torch.nn.BatchNorm1d(4).train()
    out = ours(x, mask)
    expected = torch_bn(x[mask])  # (8 real positions, 4)
    assert_float32_close(out[mask], expected)
    torch.testing.assert_close(ours.running_mean, torch_bn.running_mean)
    torch.testing.assert_close(ours.running_var, torch_bn.running_var)


def test_recurrent_dropout_mask_is_shared_across_time():
    torch.manual_seed(4)
    model = LiGRU(3, 64, dropout=0.5).train()
    model.layers[0].norm.bias.data[:64] = 5.0  # candidates (BN output, no recurrent part) always positive:
    model.layers[0].u.data[..., :64] = 0.0  # only dropout can zero a unit
    out, _ = model(torch.randn(8, 20, 3))
    silent = (out == 0).all(dim=1)  # (B, H): a unit dropped for the sequence stays exactly 0
    assert 0.35 < silent.float().mean() < 0.65
    partly_silent = (out == 0).any(dim=1) & ~silent  # a mask drawn per step would leave some of these
    assert not partly_silent.any()
    model.eval()
    assert not (model(torch.randn(8, 20, 3))[0] == 0).any()


def test_reverse_padded_reverses_within_each_length():
    x = torch.arange(1, 6).repeat(2, 1)[..., None]  # (2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))[..., 0]
    assert out.tolist() == [[5, 4, 3, 2, 1], [3, 2, 1, 4, 5]]


def test_gradients_reach_every_parameter():
    model = LiGRU(3, 4, num_layers=2, bidirectional=True, dropout=0.2)
    out, state = model(torch.randn(2, 5, 3), torch.tensor([5, 2]))
    (out.sum() + state.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
