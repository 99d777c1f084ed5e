"""Training steps/s of the seq2seq model at Multi30k's size (2-layer biGRU 256 encoder, decoder 512,
embeddings 256, 8,000-token vocabularies, batch 64): `Seq2Seq.forward` as the recipe trains with it, which
applies the output layer once to the real target positions only (`positions=`), against a loop of
`Seq2Seq.step` that applies it position by position to every position, padding included (what the
training step did before, and what decoding has to do).

    python bench/seq2seq_step_speed.py [--rounds 3] [--steps 30] [--cell gru]

Forward, label-smoothed cross-entropy, backward and a fused AdamW step on the same random batches (source
and target lengths drawn like Multi30k's sentencepiece lengths, 8-30 tokens); the two alternate in one
process so background load affects both alike. `ratio` = forward's steps/s / the loop's (median over
rounds); `max_abs_logit_diff` compares their logits on one batch in eval mode. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.nn import functional as F

from seqtrain.models.seq2seq import Seq2Seq

VOCAB = 8000


def batches(n: int, batch: int, generator: torch.Generator) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for _ in range(n):
        src_len, tgt_len = (
            torch.randint(8, 31, (batch,), generator=generator),
            torch.randint(8, 31, (batch,), generator=generator),
        )
        src = torch.randint(4, VOCAB, (batch, int(src_len.max())), generator=generator)
        src *= torch.arange(src.size(1))[None] < src_len[:, None]
        tgt = torch.randint(4, VOCAB, (batch, int(tgt_len.max()) + 1), generator=generator)
        tgt *= torch.arange(tgt.size(1))[None] < tgt_len[:, None] + 1
        out.append((src, src_len, tgt[:, :-1], tgt[:, 1:]))
    return out


def stepwise(model: Seq2Seq, src, src_len, tgt_in) -> torch.Tensor:
    state, logits = model.encode(src, src_len), []
    for t in range(tgt_in.size(1)):
        step_logits, state, _ = model.step(state, tgt_in[:, t])
        logits.append(step_logits)
    return torch.stack(logits, 1)


def rate(model, optimizer, data, forward) -> float:
    model.train()
    start = None
    for i, (src, src_len, tgt_in, tgt_out) in enumerate(data):
        if i == 3:
            start = time.perf_counter()
        real = tgt_out != 0  # (B, T)
        logits = forward(model, src, src_len, tgt_in, real)  # (N, V)
        loss = F.cross_entropy(logits, tgt_out[real], label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (len(data) - 3) / (time.perf_counter() - start)


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cell", default="gru")
    return p


def main() -> None:
    args = parser().parse_args()
    torch.manual_seed(0)
    model = Seq2Seq(
        VOCAB,
        VOCAB,
        cell=args.cell,
        embedding_dim=256,
        hidden_size=256,
        num_layers=2,
        attention="additive",
        dropout=0.3,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    data = batches(args.steps, 64, torch.Generator().manual_seed(1))
    batched, looped = [], []
    for _ in range(args.rounds):
        batched.append(rate(model, optimizer, data, lambda m, s, sl, t, real: m(s, sl, t, positions=real)))
        looped.append(rate(model, optimizer, data, lambda m, s, sl, t, real: stepwise(m, s, sl, t)[real]))
    model.eval()
    with torch.no_grad():
        src, src_len, tgt_in, _ = data[0]
        diff = (model(src, src_len, tgt_in) - stepwise(model, src, src_len, tgt_in)).abs().max().item()
    ratios = [a / b for a, b in zip(batched, looped)]
    print(
        json.dumps(
            {
                "benchmark": "seq2seq_step_speed",
                "ratio": round(statistics.median(ratios), 4),
                "forward_steps_per_s": round(statistics.median(batched), 3),
                "stepwise_steps_per_s": round(statistics.median(looped), 3),
                "each_round": [round(r, 4) for r in ratios],
                "max_abs_logit_diff": diff,
                "cell": args.cell,
                "steps": args.steps,
                "torch_threads": torch.get_num_threads(),
                "real_target_fraction": round(
                    sum(int((b[3] != 0).sum()) for b in data) / sum(b[3].numel() for b in data), 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
