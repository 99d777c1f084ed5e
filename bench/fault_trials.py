"""Kill a training run at random moments with SIGKILL and SIGTERM, resume it after every kill, and check
that nothing is lost: every resume succeeds, every checkpoint on disk loads at every moment, SIGTERM
exits 130 saying how to resume, and the final weights equal (bit for bit, CPU) those of a run that was
never interrupted, as do the steps and validation losses in metrics.jsonl. Checkpoints are written
every step, so some kills land in the middle of a write (seen as a temporary file left beside the
checkpoints).

    python bench/fault_trials.py --kills 12 --steps 400

Ends by printing one JSON line of figures. tests/test_faults.py runs the same harness with few kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from seqtrain import checkpoint

TIMEOUT = 300


def fit_args(corpus: Path, run_dir: Path, steps: int, hidden: int) -> list[str]:
    """A small LSTM with dropout (so RNG state matters) that checkpoints every step."""
    return [
        "fit",
        "recipe=char_lm",
        "data=text",
        f"data.path={corpus}",
        "data.seq_len=32",
        "data.batch_size=16",
        f"model.hidden_size={hidden}",
        "model.num_layers=1",
        "model.embedding_dim=16",
        "model.dropout=0.1",
        "trainer.max_time=null",
        f"trainer.max_steps={steps}",
        "trainer.val_every_steps=25",
        "trainer.val_max_batches=4",
        "trainer.log_every_steps=10",
        "trainer.checkpoint_every_steps=1",
        f"run_dir={run_dir}",
    ]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "seqtrain", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(f"a run hung for {TIMEOUT}s") from None
    return proc.returncode, err


def wait_for_progress(proc: subprocess.Popen, last: Path, since: float) -> bool:
    """Wait until `last` is newer than `since` (this process has trained and saved); False if it ended first."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if last.is_file() and last.stat().st_mtime_ns > since:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise RuntimeError("no checkpoint appeared")


def check_checkpoints(ckpt_dir: Path) -> int:
    """Every checkpoint loads; returns how many temporary files a killed write left behind."""
    for path in ckpt_dir.glob("*.pt"):
        checkpoint.load(path, recipe="char_lm")
    return len(list(ckpt_dir.glob(".*.tmp-*")))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model's tensors (its state dict may also hold plain data, such as a stateful LM's `_extra_state`)."""
    return {
        k: v
        for k, v in checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"].items()
        if isinstance(v, torch.Tensor)
    }


def logged(run_dir: Path) -> tuple[list[tuple[str, int]], list[float]]:
    """What metrics.jsonl holds: every record's (split, step) in order, and the validation losses."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["split"], r["step"]) for r in records], [r["loss"] for r in records if r["split"] == "valid"]


def interrupted_run(corpus: Path, run_dir: Path, steps: int, hidden: int, kills: list[tuple[int, float]]) -> list[dict]:
    """Start a run; for each (signal, delay) wait until it has saved, sleep `delay`, send the signal,
    check the checkpoints, and resume. Then let the last resume finish. Returns one record per kill."""
    last = run_dir / "checkpoints" / "last.pt"
    proc, since, events = start(fit_args(corpus, run_dir, steps, hidden)), 0, []
    for sig, delay in kills:
        if not wait_for_progress(proc, last, since):
            break
        time.sleep(delay)
        proc.send_signal(sig)
        code, err = finish(proc)
        lines = err.strip().splitlines()
        event = {
            "signal": signal.Signals(sig).name,
            "exit": code,
            "message": lines[-1] if lines else "",
            "step": checkpoint.load(last)["trainer"]["step"],
            "mid_write": check_checkpoints(last.parent) > 0,
        }
        events.append(event)
        since = last.stat().st_mtime_ns
        proc = start(["fit", "recipe=char_lm", f"trainer.resume={run_dir}"])
    code, err = finish(proc)
    if code != 0:
        raise RuntimeError(f"the final resume failed ({code}): {err.strip().splitlines()[-1:]}")
    return events


def trials(workdir: Path, corpus: Path, steps: int, kills: int, seed: int, max_delay: float, hidden: int = 256) -> dict:
    rng = random.Random(seed)
    plan = [(signal.SIGKILL if i % 3 else signal.SIGTERM, rng.uniform(0, max_delay)) for i in range(kills)]
    reference = workdir / "reference"
    code, err = finish(start(fit_args(corpus, reference, steps, hidden)))
    assert code == 0, err
    run_dir = workdir / "interrupted"
    events = interrupted_run(corpus, run_dir, steps, hidden, plan)
    expected, got = weights(reference), weights(run_dir)
    return {
        "kills": len(events),
        "sigkill": sum(e["signal"] == "SIGKILL" for e in events),
        "sigterm": sum(e["signal"] == "SIGTERM" for e in events),
        "mid_write": sum(e["mid_write"] for e in events),
        "steps": steps,
        "events": events,
        "weights_equal": expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected),
        "temp_files_left": check_checkpoints(run_dir / "checkpoints"),
        "log_equal": logged(reference) == logged(run_dir),  # no step logged twice, none missing
    }


def corpus_file(directory: Path) -> Path:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red", "ball"]
    path = directory / "corpus.txt"
    path.write_text(
        "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + "." for _ in range(1000)) + "\n"
    )
    return path


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=256, help="LSTM size: larger checkpoints take longer to write")
    parser.add_argument(
        "--max-delay", type=float, default=0.5, help="seconds after a fresh checkpoint before the kill, at most"
    )
    return parser


def main() -> None:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = trials(
            Path(tmp), corpus_file(Path(tmp)), args.steps, args.kills, args.seed, args.max_delay, args.hidden
        )
    for event in result.pop("events"):
        print(json.dumps(event), file=sys.stderr)
    print(json.dumps({"benchmark": "fault_trials", **result}))


if __name__ == "__main__":
    main()
