"""Tiny Shakespeare validation loss (nats/char, contiguous 90/10 split) of char_lm's defaults in a time budget.

    python bench/char_lm_quality.py --data ../shared/data/tinyshakespeare/input.txt --minutes 15
    python bench/char_lm_quality.py --data … --minutes 15 model.num_layers=2   # other settings beside them

Runs `seqtrain fit recipe=char_lm data=text data.path=DATA trainer.max_time=SECONDS` and nothing else,
then scores the run's checkpoint on the whole validation split as `seqtrain evaluate RUN` does, in the
recipe's scoring windows (`data.eval_seq_len`), and again in windows of 64 characters as the figures
before those windows were scored. The LR schedule is the recipe's, cosine over the time budget. Prints
one JSON line with the command, both losses, and the last periodic validation's loss before 99 s and
before 5 minutes.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench import common
from seqtrain import runs


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(common.SHAKESPEARE))
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--run-dir", default=None)
    p.add_argument("overrides", nargs="*", help="more overrides, to run other settings beside the defaults")
    return p


def main() -> None:
    args = parser().parse_args()

    run = common.fit(
        "char_lm",
        [
            "data=text",
            f"data.path={args.data}",
            f"trainer.max_time={args.minutes * 60:g}",
            *args.overrides,
        ],
        args.run_dir,
    )
    scored = runs.evaluate([run.run_dir], [])
    scored_in_64 = runs.evaluate([run.run_dir], ["data.eval_seq_len=64"])
    validations = common.records(run.run_dir, "valid")
    valid = [(r["time"] - run.started, r["loss"]) for r in validations]
    train = common.records(run.run_dir, "train")

    def loss_at(seconds: float) -> float | None:
        before = [loss for t, loss in valid if t <= seconds]
        return round(before[-1], 4) if before else None

    print(
        json.dumps(
            {
                "benchmark": "char_lm_quality",
                "val_loss": round(scored["loss"], 4),
                "bpc": round(scored["bpc"], 4),
                "val_loss_in_64_char_windows": round(scored_in_64["loss"], 4),
                "last_periodic_val_loss": round(run.final["loss"], 4),
                "val_loss_99s": loss_at(99),
                "val_loss_300s": loss_at(300),
                "best_periodic_val_loss": round(min(loss for _, loss in valid), 4),
                "steps": validations[-1]["step"],
                "minutes": args.minutes,
                "wall_minutes": round(run.seconds / 60, 2),
                "tokens_per_s": round(sum(r["tokens_per_s"] for r in train) / max(1, len(train))),
                "command": run.command,
                "run_dir": str(run.run_dir),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
