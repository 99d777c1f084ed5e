"""Tiny Shakespeare validation loss (nats/char, contiguous 90/10 split) after a fixed training time.

    python bench/char_lm_quality.py --data ../shared/data/tinyshakespeare/input.txt --minutes 15

Trains through seqtrain itself (the same code as `seqtrain fit`). The cosine schedule needs a length:
a short calibration measures steps/s for this model on this machine and sizes max_steps to the
budget; trainer.max_time stays as a hard stop. Prints one JSON line, including the validation loss at
99 s and at 5 minutes (the last validation before each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from seqtrain import runs
from seqtrain.config import compose


def steps_per_second(hidden: int, layers: int, batch: int, seq_len: int, vocab: int = 66) -> float:
    model = torch.nn.LSTM(64, hidden, layers, batch_first=True)
    head = torch.nn.Linear(hidden, vocab)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()])
    x = torch.randn(batch, seq_len, 64)
    y = torch.randint(vocab, (batch, seq_len))
    for i in range(8):
        if i == 3:
            start = time.perf_counter()
        out, _ = model(x)
        loss = torch.nn.functional.cross_entropy(head(out).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return 5 / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--validations", type=int, default=30)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()

    budget = args.minutes * 60
    rate = steps_per_second(args.hidden, args.layers, args.batch, args.seq_len)
    max_steps = max(10, int(rate * budget * 0.93))  # validation and logging take a few percent
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="char_lm_quality-") + "/run"
    cfg = compose("char_lm", [
        "data=text", f"data.path={args.data}", f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch}",
        f"model.hidden_size={args.hidden}", f"model.num_layers={args.layers}", f"model.dropout={args.dropout}",
        "optim=adamw", f"optim.lr={args.lr}", "sched=cosine", "sched.warmup_steps=100", "sched.min_lr_ratio=0.05",
        f"trainer.max_steps={max_steps}", f"trainer.max_time={budget}",
        f"trainer.val_every_steps={max(1, max_steps // args.validations)}", "trainer.val_max_batches=null",
        "trainer.log_every_steps=50", f"run_dir={run_dir}",
    ])
    start = time.time()
    run_dir, final = runs.fit(cfg, Console(stderr=True))
    records = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    valid = [(r["time"] - start, r["loss"]) for r in records if r["split"] == "valid"]
    train = [r for r in records if r["split"] == "train"]

    def loss_at(seconds: float) -> float | None:
        before = [loss for t, loss in valid if t <= seconds]
        return round(before[-1], 4) if before else None

    print(json.dumps({
        "benchmark": "char_lm_quality", "val_loss": round(final["loss"], 4), "bpc": round(final["bpc"], 4),
        "val_loss_99s": loss_at(99), "val_loss_300s": loss_at(300), "best_val_loss": round(min(l for _, l in valid), 4),
        "steps": train[-1]["step"] if train else 0, "minutes": args.minutes,
        "tokens_per_s": round(sum(r["tokens_per_s"] for r in train) / max(1, len(train))),
        "model": f"{args.layers}x{args.hidden} lstm, dropout {args.dropout}, seq_len {args.seq_len}, batch {args.batch}",
        "schedule": f"adamw lr {args.lr}, warmup 100, cosine to 5% over {cfg.trainer.max_steps} steps",
        "run_dir": str(run_dir), "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
