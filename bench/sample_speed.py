"""Characters/s generating text with a 2x512 LSTM, and peak memory of training that model.

    python bench/sample_speed.py [--run RUN_DIR] [--chars 2000]

With --run, the trained model of that run is used (e.g. the one char_lm_quality picked); otherwise an
untrained model of the same shape (speed does not depend on the weights). Generation is timed with
oneDNN switched off around the one-step calls (what `seqtrain sample` does) and, for comparison, on.
Peak training memory is the max RSS of a separate `seqtrain fit` process training that model for 30
steps. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import char_lm_data
from seqtrain.data.text import CharVocab
from seqtrain.models.language_model import RecurrentLM
from seqtrain.recipes import char_lm
from seqtrain.rundir import load_model

TRAINING_BATCH = (32, 64)  # windows x characters of the short training run whose peak memory is reported


def chars_per_second(model, vocab: CharVocab, n: int) -> float:
    start = time.perf_counter()
    text = "".join(char_lm.generate(model, vocab, "\n", n, temperature=0.8, top_k=40, seed=1))
    assert len(text) == n
    return n / (time.perf_counter() - start)


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--run", default=None)
    p.add_argument("--chars", type=int, default=2000)
    p.add_argument("--data", default=None)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.run:
        _, model, state = load_model(Path(args.run))
        vocab = CharVocab.from_dict(state["vocab"])
    else:
        vocab = CharVocab([chr(c) for c in range(32, 97)] + ["\n"])
        model = RecurrentLM(len(vocab), "lstm", 512, 2, 64).eval()
    with torch.no_grad():
        off = chars_per_second(model, vocab, args.chars)
        char_lm.onednn_off, original = contextlib.nullcontext, char_lm.onednn_off
        on = chars_per_second(model, vocab, args.chars)
        char_lm.onednn_off = original

    run_dir = tempfile.mkdtemp(prefix="sample_speed-") + "/run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "seqtrain",
            "fit",
            "recipe=char_lm",
            *char_lm_data(args.data),
            "model.hidden_size=512",
            "model.num_layers=2",
            f"data.batch_size={TRAINING_BATCH[0]}",
            f"data.seq_len={TRAINING_BATCH[1]}",
            "trainer.max_steps=30",
            "trainer.max_time=null",
            "trainer.val_max_batches=2",
            f"run_dir={run_dir}",
        ],
        check=True,
        capture_output=True,
    )
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "benchmark": "sample_speed",
                "chars_per_s": round(off),
                "chars_per_s_onednn_on": round(on),
                "chars": args.chars,
                "model": "2x512 lstm" if not args.run else args.run,
                "peak_training_rss_mb": round(peak_mb),
                "training_batch": "x".join(map(str, TRAINING_BATCH)),
            }
        )
    )


if __name__ == "__main__":
    main()
