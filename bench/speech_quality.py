"""FSDD test accuracy of the speech recipe's defaults in a time budget: on the official split, or on speakers
the model never heard (leave-one-speaker-out).

    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15
    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15 --leave-out jackson,nicolas,theo,george,lucas

Each run is `seqtrain fit recipe=speech data=fsdd data.root=ROOT trainer.max_time=SECONDS` (with
`data.test_speakers=[SPEAKER]` for a fold), then `seqtrain evaluate RUN split=test`: the checkpoint the
selection rule kept, scored once on the test split. The official split tests recordings 0-4 of every
speaker; a fold tests all 500 recordings of one speaker and trains and validates on the others'. Extra
overrides after the flags apply to every run (for screens: `trainer.max_time=null trainer.max_steps=3000`).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from bench import common
from seqtrain import runs

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def mistakes(report: dict) -> dict[str, int]:
    """The confusions of a test report, "true->predicted": count, most frequent first."""
    names, matrix = report["classes"], report["confusion_matrix"]
    found = {f"{names[t]}->{names[p]}": n for t, row in enumerate(matrix) for p, n in enumerate(row) if t != p and n}
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def run_one(args: argparse.Namespace, speaker: str | None) -> dict:
    overrides = ["data=fsdd", f"data.root={args.root}", f"trainer.max_time={args.minutes * 60:g}"]
    overrides += [f"data.test_speakers=[{speaker}]"] if speaker else []
    run_dir = f"{args.run_dir}/{speaker or 'official'}" if args.run_dir else None
    run = common.fit("speech", [*overrides, *args.overrides], run_dir)
    test = runs.evaluate([run.run_dir], ["split=test"])
    valid = common.records(run.run_dir, "valid")
    return {
        "accuracy": round(test["accuracy"], 4),
        "macro_f1": round(test["macro_f1"], 4),
        "test_examples": test["examples"],
        "mistakes": mistakes(test),
        "best_valid_accuracy": round(max(r["accuracy"] for r in valid), 4),
        "epochs": valid[-1]["epoch"],
        "steps": valid[-1]["step"],
        "wall_minutes": round(run.seconds / 60, 2),
        "command": run.command,
        "run_dir": str(run.run_dir),
    }


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(FSDD))
    p.add_argument("--minutes", type=float, default=15, help="training budget of each run")
    p.add_argument(
        "--leave-out", default=None, help="comma-separated speakers, one fold each (default: the official split)"
    )
    p.add_argument("--run-dir", default=None, help="a folder for the runs (default: temporary folders)")
    p.add_argument("overrides", nargs="*", help="extra overrides for every run")
    return p


def main() -> None:
    args = parser().parse_args()

    if args.leave_out is None:
        result = {"split": "official", **run_one(args, None)}
    else:
        folds = {speaker: run_one(args, speaker) for speaker in args.leave_out.split(",")}
        result = {
            "split": "leave-one-speaker-out",
            "mean_accuracy": round(statistics.mean(f["accuracy"] for f in folds.values()), 4),
            "folds": folds,
        }
    print(
        json.dumps(
            {"benchmark": "speech_quality", **result, "minutes": args.minutes, "torch_threads": torch.get_num_threads()}
        )
    )


if __name__ == "__main__":
    main()
