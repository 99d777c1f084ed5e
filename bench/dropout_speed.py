"""seqtrain's CPU dropout (seqtrain/models/dropout.py: one 64-bit random word per four elements) against
torch's (one Bernoulli draw per element), on the mask alone and on whole training steps.

    python bench/dropout_speed.py [--rounds 3] [--steps 40]

- `mask`: forward and backward of dropout(p=0.35) on char_lm's LSTM output, (16, 64, 512).
- `char_lm`: training steps/s of char_lm's default model and batch (1x512 LSTM, dropout 0.35, windows of
  64, batches of 16; AdamW with the recipe's lr and weight decay), built by the recipe from its defaults.
- `seq2seq`: training steps/s of the Multi30k-size model of bench/seq2seq_step_speed.py (dropout 0.3).

Each pair is the same model, weights and batches, with every seqtrain Dropout swapped for torch's
nn.Dropout in the baseline; the two alternate in one process, so background load affects both alike.
Ratios are seqtrain / torch (median over rounds). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from bench.seq2seq_step_speed import VOCAB, batches
from seqtrain.config import compose
from seqtrain.models.dropout import Dropout, dropout
from seqtrain.models.seq2seq import Seq2Seq
from seqtrain.recipes.char_lm import CharLM


def with_torch_dropout(model: nn.Module) -> nn.Module:
    baseline = copy.deepcopy(model)
    for module in baseline.modules():
        if isinstance(module, Dropout):
            module.__class__ = nn.Dropout
    return baseline


def mask_seconds(fn, rounds: int = 50) -> float:
    x = torch.randn(16, 64, 512, requires_grad=True)
    grad = torch.randn_like(x)
    for _ in range(3):
        fn(x).backward(grad)
    start = time.perf_counter()
    for _ in range(rounds):
        fn(x).backward(grad)
    return (time.perf_counter() - start) / rounds


def steps_per_s(model: nn.Module, optimizer, data, loss_fn) -> float:
    model.train()
    for i, batch in enumerate(data):
        if i == 3:
            start = time.perf_counter()
        loss_fn(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (len(data) - 3) / (time.perf_counter() - start)


def char_lm_setup(steps: int):
    cfg = compose("char_lm", [])
    vocab = {"chars": [chr(32 + i) for i in range(64)]}  # 65 ids with <unk>, as Tiny Shakespeare
    torch.manual_seed(0)
    model = CharLM().build_model(cfg.model, vocab)
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 65, (cfg.data.batch_size, cfg.data.seq_len + 1), generator=g) for _ in range(steps)]

    def loss_fn(m, tokens):
        logits, _ = m(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    def optimizer(m):
        return torch.optim.AdamW(m.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=True)

    return model, data, loss_fn, optimizer


def seq2seq_setup(steps: int):
    torch.manual_seed(0)
    model = Seq2Seq(
        VOCAB, VOCAB, cell="gru", embedding_dim=256, hidden_size=256, num_layers=2, attention="additive", dropout=0.3
    )
    data = batches(steps, 64, torch.Generator().manual_seed(1))

    def loss_fn(m, batch):
        src, src_len, tgt_in, tgt_out = batch
        logits = m(src, src_len, tgt_in)
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0, label_smoothing=0.1)

    def optimizer(m):
        return torch.optim.AdamW(m.parameters(), lr=2e-3, fused=True)

    return model, data, loss_fn, optimizer


def compare(setup, steps: int, rounds: int) -> dict:
    model, data, loss_fn, make_optimizer = setup(steps)
    baseline = with_torch_dropout(model)
    ours_opt, base_opt = make_optimizer(model), make_optimizer(baseline)
    ours, base = [], []
    for _ in range(rounds):
        base.append(steps_per_s(baseline, base_opt, data, loss_fn))
        ours.append(steps_per_s(model, ours_opt, data, loss_fn))
    return {
        "ratio": round(statistics.median(ours) / statistics.median(base), 3),
        "seqtrain_steps_per_s": round(statistics.median(ours), 3),
        "torch_steps_per_s": round(statistics.median(base), 3),
        "each_round": [round(o / b, 3) for o, b in zip(ours, base)],
    }


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    return p


def main() -> None:
    args = parser().parse_args()
    torch_mask = mask_seconds(lambda x: F.dropout(x, 0.35, True))
    our_mask = mask_seconds(lambda x: dropout(x, 0.35))
    print(
        json.dumps(
            {
                "benchmark": "dropout_speed",
                "threads": torch.get_num_threads(),
                "mask": {
                    "ratio": round(torch_mask / our_mask, 3),
                    "seqtrain_ms": round(our_mask * 1e3, 3),
                    "torch_ms": round(torch_mask * 1e3, 3),
                },
                "char_lm": compare(char_lm_setup, args.steps * 4, args.rounds),
                "seq2seq": compare(seq2seq_setup, args.steps // 2, args.rounds),
            }
        )
    )


if __name__ == "__main__":
    main()
