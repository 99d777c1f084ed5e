"""The encoder-decoder: padding never changes outputs, the step interface matches the training forward,
scheduled sampling is reproducible, and a tiny model learns to reverse sequences."""

import pytest
import torch
from torch.nn import functional as F

from conftest import assert_float32_close
from seqtrain.data.collate import pad
from seqtrain.models.decoding import SearchOptions, decode
from seqtrain.models.seq2seq import Seq2Seq

PAD, BOS, EOS = 0, 1, 2


def tiny(cell="gru", attention="general", **kwargs) -> Seq2Seq:
    torch.manual_seed(0)
    options = dict(embedding_dim=8, hidden_size=6, num_layers=2, dropout=0.0) | kwargs
    return Seq2Seq(11, 13, cell=cell, attention=attention, **options)


def batch_of(sources, targets):
    src, src_lengths = pad([torch.tensor(s) for s in sources], PAD)
    tgt, tgt_lengths = pad([torch.tensor([BOS] + t) for t in targets], PAD)
    return src, src_lengths, tgt, tgt_lengths


@pytest.mark.parametrize(
    "cell,attention", [("gru", "additive"), ("gru", "dot"), ("lstm", "general"), ("lstm", "additive")]
)
def test_outputs_do_not_change_with_padding(cell, attention):
    model = tiny(cell, attention).eval()
    sources, targets = [[3, 4, 5], [6, 7, 8, 9, 10, 3, 4], [5]], [[5, 6], [7, 8, 9, 10, 11, 12], [3, 4, 5, 6]]
    src, src_lengths, tgt, _ = batch_of(sources, targets)
    batched = model(src, src_lengths, tgt)  # (3, 7, 13)
    assert batched.shape == (3, 7, 13)
    for b in range(3):
        one_src, one_len, one_tgt, _ = batch_of(sources[b : b + 1], targets[b : b + 1])
        alone = model(one_src, one_len, one_tgt)  # (1, T_b, 13)
        assert_float32_close(batched[b, : alone.size(1)], alone[0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_step_by_step_equals_the_training_forward(cell):
    model = tiny(cell).eval()
    src, src_lengths, tgt, _ = batch_of([[3, 4, 5], [6, 7]], [[5, 6, 7], [8]])
    expected = model(src, src_lengths, tgt)
    state, steps = model.encode(src, src_lengths), []
    for t in range(tgt.size(1)):
        logits, state, weights = model.step(state, tgt[:, t])
        assert weights.shape == (2, 3) and torch.equal(weights[1, 2], torch.tensor(0.0))
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), expected)


@pytest.mark.parametrize("teacher_forcing", [1.0, 0.5])
def test_positions_give_the_logits_of_those_positions_alone(teacher_forcing):
    """What the training loss asks for: only the real target positions, in row-major order."""
    src, src_lengths, tgt, tgt_lengths = batch_of([[3, 4, 5], [6, 7]], [[5, 6, 7], [8]])
    positions = torch.arange(tgt.size(1))[None] < tgt_lengths[:, None]  # (2, 4)
    model = tiny(teacher_forcing=teacher_forcing).train()
    full = model(src, src_lengths, tgt, generator=torch.Generator().manual_seed(5))
    picked = model(src, src_lengths, tgt, generator=torch.Generator().manual_seed(5), positions=positions)
    assert picked.shape == (int(tgt_lengths.sum()), 13)
    torch.testing.assert_close(picked, full[positions])


def test_tied_embeddings_share_one_matrix():
    model = tiny(tie_embeddings=True)
    assert model.decoder.head.weight is model.decoder.embedding.weight
    src, src_lengths, tgt, _ = batch_of([[3, 4]], [[5, 6]])
    assert model(src, src_lengths, tgt).shape == (1, 3, 13)


def test_scheduled_sampling_follows_the_ratio_and_the_generator():
    model = tiny().train()
    src, src_lengths, tgt, _ = batch_of([[3, 4, 5], [6, 7, 8]], [[5, 6, 7, 8], [9, 10, 11, 12]])
    gold = model(src, src_lengths, tgt, teacher_forcing=1.0)
    torch.testing.assert_close(gold, model.eval()(src, src_lengths, tgt, teacher_forcing=0.0))  # eval: always gold
    model.train()
    scrambled = tgt.clone()
    scrambled[:, 1:] = 12
    own = model(src, src_lengths, tgt, teacher_forcing=0.0)  # ratio 0 never reads the gold tokens after BOS
    torch.testing.assert_close(model(src, src_lengths, scrambled, teacher_forcing=0.0), own)
    first = model(src, src_lengths, tgt, 0.5, torch.Generator().manual_seed(7))
    torch.testing.assert_close(model(src, src_lengths, tgt, 0.5, torch.Generator().manual_seed(7)), first)
    with pytest.raises(ValueError, match="teacher_forcing"):
        Seq2Seq(5, 5, teacher_forcing=1.5)


def reverse_task(n: int, generator: torch.Generator):
    """Random sequences of 2-7 symbols (ids 3..12) and their reversals."""
    lengths = torch.randint(2, 8, (n,), generator=generator).tolist()
    sources = [torch.randint(3, 13, (k,), generator=generator).tolist() for k in lengths]
    return sources, [s[::-1] for s in sources]


def test_a_tiny_model_learns_to_reverse():
    torch.manual_seed(0)
    model = Seq2Seq(13, 13, cell="gru", embedding_dim=32, hidden_size=48, attention="additive", dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 400)  # linear decay to 0
    data = torch.Generator().manual_seed(1)
    for _ in range(400):
        sources, targets = reverse_task(32, data)
        src, src_lengths, tgt_in, _ = batch_of(sources, targets)
        tgt_out, _ = pad([torch.tensor(t + [EOS]) for t in targets], PAD)  # (B, T): tgt_in shifted left
        logits = model(src, src_lengths, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    sources, targets = reverse_task(200, data)
    src, src_lengths, _, _ = batch_of(sources, targets)
    for beam_size in (1, 3):
        hypotheses = decode(model, src, src_lengths, BOS, EOS, SearchOptions(beam_size, max_len_a=1, max_len_b=3))
        exact = sum(h.tokens == t for h, t in zip(hypotheses, targets)) / len(targets)
        assert exact == 1.0, f"beam {beam_size}: exact match {exact:.3f} (last loss {loss.item():.4f})"
    assert model.training  # decoding restored the mode
