import pytest
import torch

from conftest import assert_float32_close
from seqtrain.data.collate import lengths_to_mask, pad
from seqtrain.data.subwords import ngram_buckets, pad_buckets
from seqtrain.models.classifier import POOLINGS, SequenceClassifier
from seqtrain.models.rnn import CELLS

VOCAB, CLASSES = 30, 3


def examples(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=generator) for n in (5, 1, 9, 3)]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_never_changes_a_prediction(pooling, bidirectional):
    torch.manual_seed(0)
    model = SequenceClassifier(
        VOCAB,
        CLASSES,
        embedding_dim=8,
        cell="lstm",
        hidden_size=6,
        num_layers=2,
        bidirectional=bidirectional,
        pooling=pooling,
        mlp_hidden=5,
        attention_size=4,
    ).eval()
    seqs = examples()
    tokens, lengths = pad(seqs)
    with torch.no_grad():
        batched = model(tokens, lengths)  # (B, C)
        extra = torch.cat([tokens, torch.zeros(len(seqs), 4, dtype=torch.long)], dim=1)
        for i, seq in enumerate(seqs):
            alone = model(seq[None], torch.tensor([len(seq)]))
            assert_float32_close(batched[i], alone[0])
        assert_float32_close(model(extra, lengths), batched)  # more padding, same logits


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_gives_class_logits_and_gradients(cell):
    model = SequenceClassifier(VOCAB, CLASSES, embedding_dim=8, cell=cell, hidden_size=6, embedding_dropout=0.5)
    tokens, lengths = pad(examples())
    logits = model.train()(tokens, lengths)
    assert logits.shape == (4, CLASSES)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_last_pooling_reads_the_last_real_position_forwards_and_the_first_backwards():
    model = SequenceClassifier(VOCAB, CLASSES, embedding_dim=4, hidden_size=3, bidirectional=True, pooling="last")
    states = torch.arange(2 * 4 * 6, dtype=torch.float).view(2, 4, 6)  # (B, T, 2H)
    pooled = model.pool(states, torch.tensor([4, 2]))
    torch.testing.assert_close(pooled[1], torch.cat([states[1, 1, :3], states[1, 0, 3:]]))
    torch.testing.assert_close(pooled[0], torch.cat([states[0, 3, :3], states[0, 0, 3:]]))


def test_embedding_dropout_drops_whole_token_vectors_only_in_training():
    torch.manual_seed(0)
    model = SequenceClassifier(VOCAB, CLASSES, embedding_dim=8, hidden_size=6, embedding_dropout=0.5, dropout=0.0)
    seen = []
    model.rnn.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    tokens, lengths = pad(examples())
    embedded = model.embedding(tokens)  # (B, T, E)
    model.eval()(tokens, lengths)
    assert torch.equal(seen[-1], embedded)
    model.train()(tokens, lengths)
    ratio = seen[-1] / embedded  # (B, T, E): 0 where a token was dropped, 1 / (1 - p) = 2 where kept
    real = lengths_to_mask(lengths)
    assert set(ratio[real].unique().tolist()) == {0.0, 2.0}
    assert bool((ratio[real] == ratio[real][:, :1]).all())  # one decision per token, all its features alike


def test_an_unknown_pooling_names_the_valid_ones():
    with pytest.raises(ValueError, match="last, mean, max, attention"):
        SequenceClassifier(VOCAB, CLASSES, pooling="sum")


def test_subword_vectors_keep_padding_invisible_and_survive_word_dropout():
    torch.manual_seed(0)
    model = SequenceClassifier(
        VOCAB, CLASSES, embedding_dim=8, hidden_size=6, embedding_dropout=0.5, dropout=0.0, subword_buckets=40
    )
    words = [["a", "fine", "film"], ["dull"], ["not", "bad", "at", "all"]]
    seqs = [torch.randint(1, VOCAB, (len(w),)) for w in words]
    subwords = [ngram_buckets(w, 40) for w in words]
    tokens, lengths = pad(seqs)
    batch_subwords = pad_buckets(subwords)  # (B, T, K)
    with torch.no_grad():
        batched = model.eval()(tokens, lengths, batch_subwords)
        for i in range(len(words)):
            alone = model(seqs[i][None], lengths[i : i + 1], subwords[i][None])
            assert_float32_close(batched[i], alone[0])
    seen = []
    model.rnn.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.train()(tokens, lengths, batch_subwords)
    spelling = model.subwords(batch_subwords.flatten(0, 1)).view(*tokens.shape, -1)  # (B, T, E)
    ratio = (seen[-1] - spelling) / model.embedding(tokens)  # 0 where the word was dropped, 1 / (1 - p) = 2 where kept
    real = lengths_to_mask(lengths)
    assert set(ratio[real].round(decimals=4).unique().tolist()) == {0.0, 2.0}
    dropped = (ratio[..., 0].round(decimals=4) == 0) & real
    assert (seen[-1][dropped].abs().sum(-1) > 0).all()  # the word goes, its spelling stays
