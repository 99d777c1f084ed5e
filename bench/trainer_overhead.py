"""seqtrain's training steps/s against a plain hand-written PyTorch loop: same model, batch, data and
optimiser (Adam with PyTorch's fused update, seqtrain's default).

    python bench/trainer_overhead.py [--data PATH] [--rounds 3] [--steps 110]

The two alternate in one process, so background load affects both alike. Both are timed from step 10
to the last step (setup, the final validation and the final checkpoint are not part of a step).
`ratio` = seqtrain steps/s / plain steps/s (median over rounds). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from bench.common import char_lm_data, quiet
from seqtrain import runs
from seqtrain.config import compose
from seqtrain.data.windows import IGNORE, collate_windows
from seqtrain.recipes.char_lm import CharLM


def overrides(args, run_dir: str) -> list[str]:
    return [
        *char_lm_data(args.data),
        "data.seq_len=128",
        f"data.batch_size={args.batch}",
        f"model.hidden_size={args.hidden}",
        "model.num_layers=2",
        "model.dropout=0.0",
        "optim=adam",
        "sched=constant",
        f"trainer.max_steps={args.steps}",
        "trainer.max_time=null",
        "trainer.val_every_steps=null",
        "trainer.val_max_batches=1",
        "trainer.log_every_steps=10",
        "trainer.clip_grad_norm=1.0",
        f"run_dir={run_dir}",
    ]


def seqtrain_rate(args, run_dir: str) -> float:
    run_dir, _ = runs.fit(compose("char_lm", overrides(args, run_dir)), quiet())
    train = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    train = [r for r in train if r["split"] == "train"]
    return (train[-1]["step"] - train[0]["step"]) / (train[-1]["time"] - train[0]["time"])


def plain_rate(args, run_dir: str) -> float:
    """What a person writes by hand: DataLoader, forward, cross-entropy, backward, clip, step."""
    cfg = compose("char_lm", overrides(args, run_dir))
    data = CharLM().prepare(cfg.data, None, ("train",))
    torch.manual_seed(cfg.trainer.seed)
    model = CharLM().build_model(cfg.model, data.vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, fused=True)
    loader = torch.utils.data.DataLoader(
        data.splits["train"], batch_size=args.batch, shuffle=True, collate_fn=collate_windows
    )
    model.train()
    for step, batch in enumerate(loader, start=1):
        logits, _ = model(batch["tokens"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=IGNORE)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        if step == 10:
            start = time.time()
        if step == args.steps:
            return (args.steps - 10) / (time.time() - start)
    raise ValueError("not enough data for the requested steps")


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=110)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    return p


def main() -> None:
    args = parser().parse_args()
    work = tempfile.mkdtemp(prefix="trainer_overhead-")
    ours, plain = [], []
    for i in range(args.rounds):
        plain.append(plain_rate(args, f"{work}/plain{i}"))
        ours.append(seqtrain_rate(args, f"{work}/seqtrain{i}"))
    print(
        json.dumps(
            {
                "benchmark": "trainer_overhead",
                "ratio": round(statistics.median(ours) / statistics.median(plain), 4),
                "seqtrain_steps_per_s": round(statistics.median(ours), 3),
                "plain_steps_per_s": round(statistics.median(plain), 3),
                "rounds": args.rounds,
                "steps": args.steps,
                "model": f"2x{args.hidden} lstm, batch {args.batch}x128",
                "each_round": [round(o / p, 4) for o, p in zip(ours, plain)],
            }
        )
    )


if __name__ == "__main__":
    main()
