"""Test-split quality of the seq2seq recipe's defaults in a time budget.

    python bench/seq2seq_quality.py --task dates --minutes 10
    python bench/seq2seq_quality.py --task multi30k --root ../shared/data/multi30k --minutes 60

Runs `seqtrain fit recipe=seq2seq data=TASK ... trainer.max_time=SECONDS` with the recipe's defaults (cosine
over the budget), then `seqtrain evaluate RUN split=test data.beam_size=BEAM`. dates: exact match on 2,000
generated held-out dates (days never seen in training), greedy. multi30k: sacrebleu BLEU (detokenised) on
test_2016_flickr, German -> English, beam 5, with the model size Multi30k needs (`model.*` below: the
recipe's default is sized for dates). The options that are about the benchmark: validation decodes
greedily (`data.beam_size=1`, cheap) and the kept checkpoint is the one with the best validation exact
match / BLEU (`trainer.early_stopping.monitor`; no patience, so it never stops the run). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench import common
from seqtrain import runs

MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"

TASKS = {  # per task: the data (and, for Multi30k, the model size it needs), the scored metric, the test beam
    "dates": dict(data=["data=dates"], metric="exact_match", beam=1),
    "multi30k": dict(
        data=[
            "data=multi30k",
            "model.embedding_dim=256",
            "model.hidden_size=256",
            "model.num_layers=2",
            "model.dropout=0.3",
        ],
        metric="bleu",
        beam=5,
    ),
}


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=TASKS, default="dates")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--root", default=str(MULTI30K), help="multi30k: the folder of the task-1 raw files")
    p.add_argument("--run-dir", default=None)
    return p


def main() -> None:
    args = parser().parse_args()

    task = TASKS[args.task]
    run = common.fit(
        "seq2seq",
        [
            *task["data"],
            *([f"data.root={args.root}"] if args.task == "multi30k" else []),
            f"trainer.max_time={args.minutes * 60:g}",
            "data.beam_size=1",
            f"trainer.early_stopping.monitor={task['metric']}",
            "trainer.early_stopping.mode=max",
        ],
        args.run_dir,
    )
    test = runs.evaluate([run.run_dir], ["split=test", f"data.beam_size={task['beam']}"])
    valid = common.records(run.run_dir, "valid")
    print(
        json.dumps(
            {
                "benchmark": "seq2seq_quality",
                "task": args.task,
                **{k: round(v, 4) for k, v in test.items() if isinstance(v, float)},
                "beam": task["beam"],
                f"best_valid_{task['metric']}": round(max(r[task["metric"]] for r in valid), 4),
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
