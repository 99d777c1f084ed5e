"""Memory stays flat over a long run: the peak resident memory of a small char_lm run that stops at
step 1k, and of the same run going on to step 20k. Runs are deterministic, so the longer one is the
shorter one continued; a leak (statistics kept with their graphs, growing logs) shows as a gap.

    python bench/memory_flat.py                     # steps 1000 and 20000
    python bench/memory_flat.py --steps 20 200      # smoke test

Each run is its own process, measured with os.wait4 (that child's peak RSS only). Ends by printing
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.fault_trials import corpus_file


def peak_rss_mb(corpus: Path, run_dir: Path, steps: int) -> float:
    args = [
        "fit",
        "recipe=char_lm",
        "data=text",
        f"data.path={corpus}",
        "data.seq_len=64",
        "data.batch_size=32",
        "model.hidden_size=128",
        "model.num_layers=1",
        "trainer.max_time=null",
        "trainer.max_epochs=null",
        f"trainer.max_steps={steps}",
        "trainer.val_every_steps=500",
        "trainer.val_max_batches=10",
        "trainer.log_every_steps=50",
        "trainer.checkpoint_every_steps=1000",
        f"run_dir={run_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqtrain", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the {steps}-step run failed")
    return usage.ru_maxrss / 1024  # Linux reports KiB


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=[1000, 20000], metavar=("SHORT", "LONG"))
    return parser


def main() -> None:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = corpus_file(Path(tmp))
        short, long = (peak_rss_mb(corpus, Path(tmp) / f"run{steps}", steps) for steps in args.steps)
    print(
        json.dumps(
            {
                "benchmark": "memory_flat",
                f"peak_rss_mb_step_{args.steps[0]}": round(short, 1),
                f"peak_rss_mb_step_{args.steps[1]}": round(long, 1),
                "growth_mb": round(long - short, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
