"""FSDD test accuracy (official split: recordings with index 0-4) of the speech recipe's defaults in a time budget.

    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15

Runs `seqtrain fit recipe=speech data=fsdd data.root=ROOT trainer.max_time=SECONDS` and nothing else,
then `seqtrain evaluate RUN split=test`: the checkpoint with the best validation accuracy (indices 5-9),
scored once on the test split. The defaults are the recipe's: CRDNN on 40 log-mel bins, speed
perturbation, time shift and SpecAugment, AdamW with weight decay, NewBob. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench import common
from seqtrain import runs

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(FSDD))
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()

    run = common.fit(
        "speech", ["data=fsdd", f"data.root={args.root}", f"trainer.max_time={args.minutes * 60:g}"], args.run_dir
    )
    test = runs.evaluate([run.run_dir], ["split=test"])
    valid = common.records(run.run_dir, "valid")
    print(
        json.dumps(
            {
                "benchmark": "speech_quality",
                "accuracy": round(test["accuracy"], 4),
                "macro_f1": round(test["macro_f1"], 4),
                "test_examples": test["examples"],
                "best_valid_accuracy": round(max(r["accuracy"] for r in valid), 4),
                "last_valid_accuracy": round(run.final["accuracy"], 4),
                "epochs": valid[-1]["epoch"],
                "steps": valid[-1]["step"],
                "minutes": args.minutes,
                "wall_minutes": round(run.seconds / 60, 2),
                "command": run.command,
                "run_dir": str(run.run_dir),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
