"""Padding efficiency (real tokens / padded tokens) of length bucketing vs. random batching on SST-2,
and the wall time of one training epoch with each, at the same batch size.

    python bench/padding_efficiency.py --root ../shared/data/sst2

Both modes use seqtrain's BucketBatchSampler: random batching is the same sampler with a pool of one
batch (a batch sorted within itself pads exactly as much as unsorted). Each epoch trains a fresh copy
of the same model (seeded alike) with the recipe's own collate and step, so the only difference is
which examples share a batch. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqtrain.config import compose
from seqtrain.data.sampler import BucketBatchSampler
from seqtrain.recipes.sentiment import Sentiment

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def epoch(prepared, model_cfg, batch_size: int, pool_batches: int) -> tuple[float, float]:
    """(padding efficiency, seconds) of one training epoch."""
    dataset = prepared.splits["train"]
    sampler = BucketBatchSampler(dataset.lengths, batch_size, shuffle=True, seed=0, pool_batches=pool_batches)
    torch.manual_seed(0)
    model = Sentiment().build_model(model_cfg, prepared.vocab).train()
    step = Sentiment().loss(model_cfg, prepared.vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    real = padded = 0
    start = time.perf_counter()
    for indices in sampler:
        batch = prepared.collate([dataset[i] for i in indices])
        real, padded = real + batch["num_tokens"], padded + batch["padded_tokens"]
        loss, _ = step(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return real / padded, time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(SST2), help="folder with SST-2's train.tsv and dev.tsv")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pool-batches", type=int, default=100, help="bucketing pool, in batches (data.pool_batches)")
    p.add_argument("--max-rows", type=int, default=None, help="smoke tests: use only this many training rows")
    p.add_argument("overrides", nargs="*", help="model overrides, e.g. model.hidden_size=128")
    return p


def main() -> None:
    args = parser().parse_args()

    rows = "null" if args.max_rows is None else args.max_rows
    cfg = compose("sentiment", ["data=sst2", f"data.root={args.root}", f"data.max_rows={rows}", *args.overrides])
    prepared = Sentiment().prepare(cfg.data, None, ("train",))
    bucketed, bucketed_s = epoch(prepared, cfg.model, args.batch, args.pool_batches)
    shuffled, shuffled_s = epoch(prepared, cfg.model, args.batch, 1)
    m = cfg.model
    print(
        json.dumps(
            {
                "benchmark": "padding_efficiency",
                "bucketing": round(bucketed, 4),
                "random": round(shuffled, 4),
                "epoch_time_ratio": round(bucketed_s / shuffled_s, 3),
                "epoch_seconds_bucketing": round(bucketed_s, 1),
                "epoch_seconds_random": round(shuffled_s, 1),
                "examples": len(prepared.splits["train"]),
                "batch_size": args.batch,
                "pool_batches": args.pool_batches,
                "model": f"emb {m.embedding_dim}, {m.num_layers}x{m.hidden_size} "
                "{'bi' if m.bidirectional else ''}{m.cell}, {m.pooling} pooling",
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
