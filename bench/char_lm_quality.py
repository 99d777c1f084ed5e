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

from bench.common import steps_per_second
from seqtrain import runs
from seqtrain.config import compose
from seqtrain.data.windows import collate_windows
from seqtrain.recipes import char_lm


def calibration_rate(cfg) -> float:
    """Steps/s of this run's model and step on one batch of full-length windows."""
    vocab = {"chars": [chr(c) for c in range(32, 97)]}
    batch = collate_windows([{"tokens": torch.randint(1, 66, (cfg.data.seq_len,)), "targets": torch.randint(1, 66, (cfg.data.seq_len,))}
                             for _ in range(cfg.data.batch_size)])
    return steps_per_second(char_lm.step, char_lm.build_model(cfg.model, vocab), batch)


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
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="char_lm_quality-") + "/run"
    overrides = [
        "data=text", f"data.path={args.data}", f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch}",
        f"model.hidden_size={args.hidden}", f"model.num_layers={args.layers}", f"model.dropout={args.dropout}",
        "optim=adamw", f"optim.lr={args.lr}", "sched=cosine", "sched.warmup_steps=100", "sched.min_lr_ratio=0.05",
        f"trainer.max_time={budget}", "trainer.val_max_batches=null", "trainer.log_every_steps=50", f"run_dir={run_dir}",
    ]
    max_steps = max(10, int(calibration_rate(compose("char_lm", overrides)) * budget * 0.93))  # validation takes a few %
    cfg = compose("char_lm", [*overrides, f"trainer.max_steps={max_steps}",
                              f"trainer.val_every_steps={max(1, max_steps // args.validations)}"])
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
