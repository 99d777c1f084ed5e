"""FSDD test accuracy (official split: recordings with index 0-4) after at most a fixed training time.

    python bench/speech_quality.py --root ../shared/data/fsdd --minutes 15

Trains through seqtrain itself (the same code as `seqtrain fit recipe=speech data=fsdd`): a CRDNN on
40 log-mel bins at 8 kHz (two CNN blocks, a 2-layer bidirectional LSTM, one DNN block, mean pooling),
with speed perturbation, time shift and SpecAugment at training time. The length of training is
unknown in steps, so the schedule is NewBob (halve the LR when validation accuracy stalls); the best
checkpoint by validation accuracy (indices 5-9) is scored once on the test split. Prints one JSON line.
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

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(FSDD))
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--channels", default="32,64")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()

    budget = args.minutes * 60
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="speech_quality-") + "/run"
    cfg = compose("speech", [
        "data=fsdd", f"data.root={args.root}", f"data.batch_size={args.batch}", "data.cache_audio=true",
        "data.augment.speed_perturb=true", "data.augment.time_shift_ms=50", "data.augment.spec_augment=true",
        f"model.cnn_channels=[{args.channels}]", f"model.rnn_cell={args.cell}", f"model.rnn_hidden={args.hidden}",
        "optim=adamw", f"optim.lr={args.lr}", "optim.weight_decay=0.01",
        "sched=newbob", "sched.warmup_steps=100", "sched.factor=0.5", "sched.patience=2",
        "trainer.max_epochs=null", f"trainer.max_time={budget}", "trainer.early_stopping.patience=null",
        "trainer.log_every_steps=50", f"run_dir={run_dir}",
    ])
    start = time.perf_counter()
    run_dir, last = runs.fit(cfg, Console(stderr=True))
    seconds = time.perf_counter() - start
    test = runs.evaluate([Path(run_dir)], ["split=test"])
    records = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    valid = [r for r in records if r["split"] == "valid"]
    print(json.dumps({
        "benchmark": "speech_quality", "accuracy": round(test["accuracy"], 4), "macro_f1": round(test["macro_f1"], 4),
        "test_examples": test["examples"], "best_valid_accuracy": round(max(r["accuracy"] for r in valid), 4),
        "last_valid_accuracy": round(last["accuracy"], 4), "epochs": valid[-1]["epoch"], "steps": valid[-1]["step"],
        "minutes": args.minutes, "wall_minutes": round(seconds / 60, 2),
        "model": f"CRDNN fbank40 cnn[{args.channels}] 2x{args.hidden} bi-{args.cell} dnn128 mean-pool",
        "training": f"adamw lr {args.lr} wd 0.01, newbob x0.5, batch {args.batch}, speed+shift+specaugment",
        "run_dir": str(run_dir), "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
