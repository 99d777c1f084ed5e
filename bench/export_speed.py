"""Inference speed of `seqtrain export` (onnxruntime and TorchScript) against the run's own PyTorch
model, per recipe, in the same process, with 1 and 2 threads.

    python bench/export_speed.py [--sst2 ../shared/data/sst2] [--fsdd ../shared/data/fsdd] [--quick]

Each recipe's run is trained here for a few steps at its default model size (speed does not depend on
the weights), then exported in both formats. Measured: char_lm characters/s generating 2,000
characters (oneDNN off around the steps, as `seqtrain sample`); sentiment sentences/s classifying SST-2
dev; speech utterances/s classifying the FSDD test split; seq2seq sentences/s translating held-out
dates with beam 5. Each figure is the best of `--rounds` after a warm-up run. `--quick` is a smoke
run: tiny models, embedded data, small counts, one round (about a minute). Prints a line per figure, then one JSON line
with the figures and each export's speed as a ratio to PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from seqtrain import ensembles, exported
from seqtrain.cli import app
from seqtrain.config import load_run_config
from seqtrain.data.sampler import BatchingConfig
from seqtrain.data.text import CharVocab
from seqtrain.models.decoding import SearchOptions
from seqtrain.recipes import char_lm, seq2seq
from seqtrain.rundir import load_model

QUICK = ["model.hidden_size=32", "model.embedding_dim=16"]


def fit_and_export(root: Path, recipe: str, overrides: list[str]) -> Path:
    runner = CliRunner()
    run_dir = root / recipe
    result = runner.invoke(
        app,
        [
            "fit",
            f"recipe={recipe}",
            f"run_dir={run_dir}",
            "trainer.max_time=null",
            "trainer.max_epochs=null",
            *overrides,
        ],
    )
    assert result.exit_code == 0, result.output
    for format in ("onnx", "torchscript"):
        result = runner.invoke(app, ["export", str(run_dir), "--format", format, "--out", str(run_dir / format)])
        assert result.exit_code == 0, result.output
    return run_dir


def workload(recipe: str, run_dir: Path, args: argparse.Namespace):
    """(unit, count, function of a model that does the work once)."""
    _, _, state = load_model(run_dir)
    if recipe == "char_lm":
        vocab, n = CharVocab.from_dict(state["vocab"]), args.chars
        return "chars/s", n, lambda m: "".join(char_lm.generate(m, vocab, "\n", n, temperature=0.8, top_k=40, seed=1))
    if recipe == "seq2seq":
        cfg = load_run_config(run_dir, ["split=test"])
        texts = seq2seq.read_pairs(cfg.data, "test")[0][: args.sentences]
        source, _ = seq2seq.tokenizers(state["vocab"])
        return "sentences/s", len(texts), lambda m: seq2seq.translate(m, source, texts, SearchOptions(beam_size=5))
    split = "valid" if recipe == "sentiment" else "test"
    cfg = load_run_config(run_dir, [f"split={split}"])
    module = load_model(run_dir)[0]
    prepared = module.prepare(cfg.data, state["vocab"], (split,))
    dataset = prepared.splits[split]
    return (
        ("sentences/s" if recipe == "sentiment" else "utterances/s"),
        len(dataset),
        lambda m: ensembles.class_probabilities(module, m, dataset, prepared.collate, BatchingConfig(batch_size=64)),
    )


def best_rate(work, model, count: int, rounds: int) -> float:
    """count / the fastest of `rounds` timed runs, after one untimed run (TorchScript optimises a graph
    on its first calls, onnxruntime allocates its arenas)."""
    times = []
    with torch.no_grad():
        work(model)
    for _ in range(rounds):
        start = time.perf_counter()
        with torch.no_grad():
            work(model)
        times.append(time.perf_counter() - start)
    return count / min(times)


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--sst2", default="../shared/data/sst2")
    p.add_argument("--fsdd", default="../shared/data/fsdd")
    p.add_argument("--chars", type=int, default=2000)
    p.add_argument("--sentences", type=int, default=500, help="seq2seq: held-out dates to translate")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, embedded data, small counts")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.quick:
        args.chars, args.sentences, args.rounds = 200, 40, 1
    steps = ["trainer.max_steps=3", "trainer.val_every_steps=3", "trainer.val_max_batches=1"]
    setups = {
        "char_lm": [*steps, *(QUICK + ["data.max_chars=200000"] if args.quick else [])],
        "sentiment": [
            *steps,
            *(
                QUICK + ["data.n_train=500", "data.n_valid=200"]
                if args.quick
                else ["data=sst2", f"data.root={args.sst2}"]
            ),
        ],
        "speech": [
            *steps,
            *(
                ["data.size=64", "model.rnn_hidden=32", "model.rnn_layers=1"]
                if args.quick
                else ["data=fsdd", f"data.root={args.fsdd}"]
            ),
        ],
        "seq2seq": [
            *steps,
            *(QUICK + ["data.n_train=500", "data.n_valid=50", "data.n_test=50"] if args.quick else ["data.n_valid=50"]),
        ],
    }
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="export_speed-") as tmp:
        run_dirs = {recipe: fit_and_export(Path(tmp), recipe, overrides) for recipe, overrides in setups.items()}
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)  # onnxruntime sessions take the same count when they are made
            for recipe, run_dir in run_dirs.items():
                unit, count, work = workload(recipe, run_dir, args)
                figures = {"pytorch": best_rate(work, load_model(run_dir)[1], count, args.rounds)}
                for format in ("onnx", "torchscript"):
                    figures[format] = best_rate(work, exported.load_model(run_dir / format)[1], count, args.rounds)
                figures |= {f"{f}_ratio": figures[f] / figures["pytorch"] for f in ("onnx", "torchscript")}
                print(
                    f"{threads} thread(s) {recipe:9s} {unit:13s} "
                    + "  ".join(f"{k} {v:,.2f}" for k, v in figures.items()),
                    flush=True,
                )
                results.setdefault(f"threads_{threads}", {})[recipe] = {
                    "unit": unit,
                    **{k: round(v, 3) for k, v in figures.items()},
                }
    print(json.dumps({"benchmark": "export_speed", "quick": args.quick, "chars": args.chars, "beam": 5, **results}))


if __name__ == "__main__":
    main()
