"""FSDD test accuracy of the speech recipe's defaults in a time budget: on the official split, or on speakers
the model never heard (leave-one-speaker-out).

    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15
    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15 --leave-out jackson,nicolas,theo,george,lucas

Each run is `seqtrain fit recipe=speech data=fsdd data.root=ROOT trainer.max_time=SECONDS` (with
`data.test_speakers=[SPEAKER]` for a fold), then `seqtrain evaluate RUN split=test`: the checkpoint the
selection rule kept, scored once on the test split. The official split tests recordings 0-4 of every
speaker; a fold tests all 500 recordings of one speaker and trains and validates on the others'. Extra
overrides after the flags apply to every run (for screens: `trainer.max_time=null trainer.max_steps=3000`).
`--test-margin-ms MS` scores each run a second time on copies of the test clips with MS of quiet noise
(TEST_MARGIN_BELOW_DB below the clip's mean power) before and after each: the same words cut with room to
spare, as a user's own recordings are. Prints one JSON line.

    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15 --leave-out nicolas --test-margin-ms 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

from bench import common
from seqtrain import runs

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
TEST_MARGIN_BELOW_DB = 40.0  # the margins' noise against the clip's mean power: a quiet room


def with_margins(root: str, margin_ms: float, copy: Path) -> Path:
    """A copy of FSDD's recordings under `copy`, each clip with `margin_ms` of white noise before and after it,
    TEST_MARGIN_BELOW_DB below the clip's mean power (one seeded draw, so every run reads the same copy)."""
    rng = np.random.default_rng(0)
    (copy / "recordings").mkdir(parents=True)
    for path in sorted((Path(root) / "recordings").glob("*.wav")):
        clip, rate = soundfile.read(path, dtype="float32")
        margin = round(margin_ms * rate / 1000)
        level = np.sqrt(np.mean(clip**2) / 10 ** (TEST_MARGIN_BELOW_DB / 10))
        noise = rng.standard_normal(2 * margin).astype(np.float32) * level
        soundfile.write(copy / "recordings" / path.name, np.concatenate([noise[:margin], clip, noise[margin:]]), rate)
    return copy


def mistakes(report: dict) -> dict[str, int]:
    """The confusions of a test report, "true->predicted": count, most frequent first."""
    names, matrix = report["classes"], report["confusion_matrix"]
    found = {f"{names[t]}->{names[p]}": n for t, row in enumerate(matrix) for p, n in enumerate(row) if t != p and n}
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def run_one(args: argparse.Namespace, speaker: str | None, margin_root: str | None) -> dict:
    """Train one run (the official split, or `speaker` left out) and score it on the test split (and on
    `margin_root`'s copy of it, when given)."""
    overrides = ["data=fsdd", f"data.root={args.root}", f"trainer.max_time={args.minutes * 60:g}"]
    overrides += [f"data.test_speakers=[{speaker}]"] if speaker else []
    run_dir = f"{args.run_dir}/{speaker or 'official'}" if args.run_dir else None
    run = common.fit("speech", [*overrides, *args.overrides], run_dir)
    test = runs.evaluate([run.run_dir], ["split=test"])
    valid = common.records(run.run_dir, "valid")
    margins = {}
    if margin_root:
        padded = runs.evaluate([run.run_dir], ["split=test", f"data.root={margin_root}"])
        margins = {"accuracy_with_margins": round(padded["accuracy"], 4)}
    return {
        "accuracy": round(test["accuracy"], 4),
        **margins,
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
    p.add_argument(
        "--test-margin-ms", type=float, default=0, help="also score the test clips with this much quiet noise around"
    )
    p.add_argument("overrides", nargs="*", help="extra overrides for every run")
    return p


def main() -> None:
    args = parser().parse_args()
    margin_root = None
    if args.test_margin_ms:
        margin_root = str(with_margins(args.root, args.test_margin_ms, Path(tempfile.mkdtemp()) / "fsdd"))

    if args.leave_out is None:
        result = {"split": "official", **run_one(args, None, margin_root)}
    else:
        folds = {speaker: run_one(args, speaker, margin_root) for speaker in args.leave_out.split(",")}
        scored = [key for key in ("accuracy", "accuracy_with_margins") if key in next(iter(folds.values()))]
        result = {
            "split": "leave-one-speaker-out",
            **{f"mean_{key}": round(statistics.mean(f[key] for f in folds.values()), 4) for key in scored},
            "folds": folds,
        }
    print(
        json.dumps(
            {"benchmark": "speech_quality", **result, "minutes": args.minutes, "torch_threads": torch.get_num_threads()}
        )
    )


if __name__ == "__main__":
    main()
