"""SST-2 dev accuracy of the sentiment recipe's defaults, from scratch (no pretrained embeddings), in a time budget.

    python bench/sentiment_quality.py --root ../shared/data/sst2 --minutes 20
    python bench/sentiment_quality.py --root ../shared/data/sst2 --minutes 20 --bagging auto

Runs `seqtrain fit recipe=sentiment data=sst2 data.root=ROOT trainer.max_time=SECONDS [trainer.bagging=K|auto]`
and nothing else (no --bagging: the recipe's own setting), then `seqtrain evaluate RUN`: every member's
best checkpoint (by its validation accuracy, once an epoch) and their ensemble on the dev set. SST-2
has no public test labels, so dev is both the validation and the scored split: the checkpoint choice
reads it, which is why the JSON also gives each member's last validation. The defaults are the
recipe's: words plus hashed character 3-5-gram vectors, a 2-layer biLSTM with attention pooling, word
dropout, Xavier/orthogonal init, AdamW, label smoothing, cosine over the budget, a moving average of the
weights. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench import common
from seqtrain import runs
from seqtrain.rundir import RunDir

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(SST2), help="folder with SST-2's train.tsv and dev.tsv")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--bagging", default=None, help="trainer.bagging: K members in the one budget, auto, or null")
    p.add_argument("--max-rows", type=int, default=None, help="smoke tests: read only this many rows of each split")
    p.add_argument("--run-dir", default=None)
    p.add_argument("overrides", nargs="*", help="more overrides, to run other settings beside the defaults")
    return p


def main() -> None:
    args = parser().parse_args()

    overrides = ["data=sst2", f"data.root={args.root}", f"trainer.max_time={args.minutes * 60:g}"]
    overrides += [f"trainer.bagging={args.bagging}"] if args.bagging else []
    overrides += [f"data.max_rows={args.max_rows}"] if args.max_rows else []
    overrides += args.overrides
    run = common.fit("sentiment", overrides, args.run_dir)
    report = runs.evaluate([run.run_dir], [])
    members = report.get("members", [report])
    ensemble = report.get("ensemble", report)
    dirs = [member.path for member in RunDir(run.run_dir).members()]
    last_valid = [common.records(d, "valid")[-1] for d in dirs]
    print(
        json.dumps(
            {
                "benchmark": "sentiment_quality",
                "accuracy": round(ensemble["accuracy"], 4),
                "macro_f1": round(ensemble["macro_f1"], 4),
                "members": len(members),
                "member_accuracy": [round(m["accuracy"], 4) for m in members],
                "member_last_valid_accuracy": [round(r["accuracy"], 4) for r in last_valid],
                "member_epochs": [r["epoch"] for r in last_valid],
                "member_steps": [r["step"] for r in last_valid],
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
