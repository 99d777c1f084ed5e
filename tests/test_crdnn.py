"""CRDNN: padding never changes a prediction; configuration errors are one clear line."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_float32_close
from seqtrain.errors import ConfigError
from seqtrain.models.crdnn import CRDNN

SMALL = dict(cnn_channels=(4, 6), rnn_hidden=8, rnn_layers=2, dnn_sizes=(8,))
VARIANTS = {
    "lstm-batch-mean": dict(rnn_cell="lstm", norm="batch", pooling="mean"),
    "gru-layer-attentive": dict(rnn_cell="gru", norm="layer", pooling="attentive", activation="gelu"),
    "ligru-batch-attentive-uni": dict(rnn_cell="ligru", norm="batch", pooling="attentive", bidirectional=False),
    "ligru-none-mean-multitask": dict(rnn_cell="ligru", norm="none", pooling="mean", aux_classes=3),
}


def warmed(model: CRDNN) -> CRDNN:
    """Run a few training batches so batch-norm running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            model(torch.randn(4, 15, 16, generator=g) * 2 + 1, torch.tensor([15, 12, 9, 5]))
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_never_changes_a_prediction(variant):
    torch.manual_seed(0)
    model = warmed(CRDNN(16, 5, **SMALL, **VARIANTS[variant]))
    utterances = [torch.randn(n, 16) for n in (13, 7, 2)]
    batch = torch.nn.utils.rnn.pad_sequence(utterances, batch_first=True)
    batch[1, 7:], batch[2, 2:] = 30.0, -30.0  # garbage in the padding
    with torch.no_grad():
        out = model(batch, torch.tensor([13, 7, 2]))
        for b, utterance in enumerate(utterances):
            alone = model(utterance[None], torch.tensor([len(utterance)]))
            assert out.keys() == alone.keys()
            for key in out:
                assert_float32_close(out[key][b], alone[key][0])


def test_training_statistics_ignore_padding():
    """With dropout off, extra padding changes neither training-mode logits nor batch-norm statistics."""
    torch.manual_seed(1)
    args = dict(**SMALL, cnn_dropout=0.0, rnn_dropout=0.0, dnn_dropout=0.0, rnn_cell="ligru")
    model, twin = CRDNN(16, 5, **args).train(), CRDNN(16, 5, **args).train()
    twin.load_state_dict(model.state_dict())
    feats, lengths = torch.randn(3, 10, 16), torch.tensor([10, 6, 3])
    longer = torch.cat([feats, torch.full((3, 4, 16), 8.0)], dim=1)
    assert_float32_close(twin(longer, lengths)["logits"], model(feats, lengths)["logits"])
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert_float32_close(a, b)


def test_shapes_and_the_second_head():
    model = CRDNN(40, 7, **SMALL, aux_classes=4)
    out = model(torch.randn(2, 20, 40), torch.tensor([20, 11]))
    assert out["logits"].shape == (2, 7) and out["aux_logits"].shape == (2, 4)
    (out["logits"].sum() + out["aux_logits"].sum()).backward()
    assert "aux_logits" not in CRDNN(40, 7, **SMALL)(torch.randn(1, 5, 40), torch.tensor([5]))


def test_the_adversarial_head_learns_its_target_and_pushes_the_encoder_the_other_way():
    """The same weights with and without the reversal: the head's own gradient is the same, every
    gradient before the pooled summary is negated, and the logits are unchanged."""
    torch.manual_seed(0)
    multitask = CRDNN(40, 7, **SMALL, aux_classes=4)
    adversarial = CRDNN(40, 7, **SMALL, aux_classes=4, aux_adversarial=True)
    adversarial.load_state_dict(multitask.state_dict())
    feats, lengths = torch.randn(3, 20, 40), torch.tensor([20, 14, 9])
    grads = []
    for model in (multitask, adversarial):
        model.eval()  # no dropout: both see the same function
        out = model(feats, lengths)
        out["aux_logits"].square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert_float32_close(multitask(feats, lengths)["aux_logits"], adversarial(feats, lengths)["aux_logits"])
    head = {name for name in grads[0] if name.startswith("aux_head.")}
    assert head == {"aux_head.weight", "aux_head.bias"} and len(grads[0]) > len(head)
    for name, grad in grads[0].items():
        assert_float32_close(grads[1][name], grad if name in head else -grad)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(cnn_kernel=4), "cnn_kernel must be odd"),
        (dict(pooling="max"), "model.pooling='max' is unknown"),
        (dict(rnn_cell="transformer"), "valid: rnn_tanh, rnn_relu, gru, lstm, ligru"),
        (dict(cnn_channels=(4, 4, 4, 4, 4), cnn_pool=2), "leave no frequency bins"),
    ],
)
def test_bad_configuration_is_one_clear_line(bad, message):
    with pytest.raises(ConfigError, match=message) as error:
        CRDNN(16, 5, **{**SMALL, **bad})
    assert "\n" not in str(error.value)


def test_learns_an_order_only_task():
    """Class 0 is pattern A then B, class 1 is B then A: the same frames, only the order differs."""
    torch.manual_seed(2)
    a, b = torch.zeros(16), torch.zeros(16)
    a[:8], b[8:] = 1.0, 1.0
    g = torch.Generator().manual_seed(0)

    def batch(n: int):
        labels = torch.randint(0, 2, (n,), generator=g)
        first, second = torch.where(labels[:, None] == 0, a, b), torch.where(labels[:, None] == 0, b, a)
        x = torch.cat([first[:, None].expand(n, 6, 16), second[:, None].expand(n, 6, 16)], 1)
        return x + 0.3 * torch.randn(x.shape, generator=g), torch.full((n,), 12), labels

    model = CRDNN(16, 2, cnn_channels=(4,), rnn_hidden=8, rnn_layers=1, dnn_sizes=(8,), rnn_cell="gru")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        x, lengths, labels = batch(16)
        loss = torch.nn.functional.cross_entropy(model(x, lengths)["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, lengths, labels = batch(200)
    with torch.no_grad():
        accuracy = (model.eval()(x, lengths)["logits"].argmax(1) == labels).float().mean()
    assert accuracy > 0.95
