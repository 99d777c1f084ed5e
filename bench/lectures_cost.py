"""What watching the lectures' pictures costs: gradients through time (`trainer.log_gradient_flow_every`) and
the embedding projector (`trainer.log_embeddings`), against the training they watch.

    python bench/lectures_cost.py --sst2 ../shared/data/sst2

For each recipe with its defaults (its embedded data; sentiment also on SST-2 when --sst2 is given, the largest
vocabulary: 10,000 projected word vectors of 300 dimensions): the median time of a training step (forward,
backward, update), of one gradient-flow measurement on a training batch, and of writing the projector's files at
the end of a run. Reports the measurement's cost as a share of training at one measurement every --every steps,
and the projector's as a share of the recipe's default budget (trainer.max_time; SST-2: --budget). Goal: under
1% each. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from seqtrain import recipes
from seqtrain.config import compose
from seqtrain.models.gradient_flow import gradient_flow
from seqtrain.optim import build_optimizer

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def timed(work, rounds: int) -> float:
    """The median seconds of `rounds` calls."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(name: str, overrides: list[str], args: argparse.Namespace, budget: float | None = None) -> dict:
    recipe = recipes.get(name)
    cfg = compose(name, overrides)
    prepared = recipe.prepare(cfg.data, None, ("train", "valid"))
    torch.manual_seed(0)
    model = recipe.build_model(cfg.model, prepared.vocab)
    task = recipe.task(model, cfg.model, prepared)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    train = prepared.splits["train"]
    size = cfg.data.batch_size or 32
    batch = prepared.collate([train[i] for i in range(min(size, len(train)))])
    model.train()

    def step() -> None:
        loss, _ = task.step(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm up kernels and the optimiser's state
    step_s = timed(step, args.rounds)
    flow_s = timed(lambda: gradient_flow(model, lambda m: task.step(m, batch)[0]), 3)
    with tempfile.TemporaryDirectory() as folder, SummaryWriter(folder) as writer:
        embeddings_s = timed(lambda: task.log_embeddings(model, writer, 0), 1)
    budget = budget or cfg.trainer.max_time
    return {
        "step_s": round(step_s, 4),
        "flow_s": round(flow_s, 4),
        "embeddings_s": round(embeddings_s, 3),
        "flow_share": round(flow_s / (args.every * step_s), 5),
        "embeddings_share": round(embeddings_s / budget, 5),
        "budget_s": budget,
    }


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--every", type=int, default=500, help="steps between gradient-flow measurements")
    p.add_argument("--rounds", type=int, default=10, help="training steps timed per recipe")
    p.add_argument("--sst2", default=str(SST2), help="SST-2's folder, for the largest projected vocabulary")
    p.add_argument("--budget", type=float, default=1200, help="seconds of training the SST-2 projector is set against")
    return p


def main() -> None:
    args = parser().parse_args()
    results = {name: measure(name, [], args) for name in ("char_lm", "sentiment", "seq2seq", "speech")}
    if Path(args.sst2, "dev.tsv").is_file():
        results["sentiment_sst2"] = measure("sentiment", ["data=sst2", f"data.root={args.sst2}"], args, args.budget)
    worst = {key: max(r[key] for r in results.values()) for key in ("flow_share", "embeddings_share")}
    print(
        json.dumps(
            {
                "benchmark": "lectures_cost",
                "every": args.every,
                **results,
                "worst": worst,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
