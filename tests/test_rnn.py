import pytest
import torch

from conftest import assert_float32_close
from seqtrain.models.init import initialize
from seqtrain.models.rnn import CELLS, RecurrentStack


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_outputs_or_final_state(cell, bidirectional):
    torch.manual_seed(0)
    rnn = RecurrentStack(cell, 4, 6, num_layers=2, bidirectional=bidirectional).eval()
    short, long = torch.randn(1, 3, 4), torch.randn(1, 7, 4)
    alone_out, alone_state = rnn(short)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 4)), long])
    out, state = rnn(batch, torch.tensor([3, 7]))
    assert_float32_close(out[0, :3], alone_out[0], ulps=64)
    assert torch.all(out[0, 3:] == 0)
    h = state[0] if isinstance(state, tuple) else state
    h_alone = alone_state[0] if isinstance(alone_state, tuple) else alone_state
    assert_float32_close(h[:, 0], h_alone[:, 0], ulps=64)


def test_orthogonal_recurrent_init_and_forget_bias():
    lstm = RecurrentStack("lstm", 4, 8)
    initialize(lstm, "xavier", "orthogonal")
    w_hh = lstm.rnn.weight_hh_l0.detach()
    for gate in w_hh.chunk(4):
        assert torch.allclose(gate @ gate.T, torch.eye(8), atol=1e-5)
    assert torch.all(lstm.rnn.bias_ih_l0.detach().chunk(4)[1] == 1) and torch.all(lstm.rnn.bias_hh_l0 == 0)


def test_kaiming_init_scales_with_fan_in():
    layer = torch.nn.Sequential(torch.nn.Linear(1000, 1000))
    initialize(layer, "kaiming")
    assert layer[0].weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.05)


@pytest.mark.parametrize("cell, gates", [(torch.nn.LSTMCell, 4), (torch.nn.GRUCell, 3), (torch.nn.RNNCell, 1)])
def test_one_step_cells_are_initialised_like_full_sequence_rnns(cell, gates):
    """A decoder's cells get the same per-gate orthogonal recurrent matrices and LSTM forget-gate bias."""
    rnn_cell = torch.nn.Sequential(cell(4, 8))
    initialize(rnn_cell, "xavier", "orthogonal")
    for gate in rnn_cell[0].weight_hh.detach().chunk(gates):
        assert torch.allclose(gate @ gate.T, torch.eye(8), atol=1e-5)
    forget = rnn_cell[0].bias_ih.detach().chunk(gates)[1 if gates > 1 else 0]
    assert torch.all(forget == (1 if gates == 4 else 0)) and torch.all(rnn_cell[0].bias_hh == 0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_weight_drop_masks_the_recurrent_weights_in_training_only(cell):
    torch.manual_seed(0)
    dropped = RecurrentStack(cell, 4, 32, num_layers=2, weight_drop=0.5)
    plain = RecurrentStack(cell, 4, 32, num_layers=2)
    plain.load_state_dict(dropped.state_dict())
    x, lengths = torch.randn(3, 5, 4), torch.tensor([5, 2, 4])
    out, _ = dropped(x, lengths)
    assert not torch.allclose(out, plain(x, lengths)[0])
    out.square().sum().backward()
    for layer in (0, 1):
        hh = getattr(dropped.rnn, f"weight_hh_l{layer}")
        ih = getattr(dropped.rnn, f"weight_ih_l{layer}")
        assert 0.4 < (hh.grad == 0).float().mean() < 0.6  # the zeroed weights' gradients are exactly zero
        assert (ih.grad == 0).float().mean() < 0.05  # input weights are not dropped
    dropped.eval()
    plain.eval()
    assert_float32_close(dropped(x, lengths)[0], plain(x, lengths)[0], ulps=4)
    assert all(torch.equal(a, b) for a, b in zip(dropped.state_dict().values(), plain.state_dict().values()))


def test_weight_drop_refuses_ligru():
    with pytest.raises(ValueError, match="Li-GRU"):
        RecurrentStack("ligru", 4, 8, weight_drop=0.3)
