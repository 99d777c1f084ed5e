"""Every recipe's defaults on its embedded data: how long `seqtrain fit recipe=NAME` takes, and what it prints.

    python bench/embedded_defaults.py                  # every recipe, one after the other
    python bench/embedded_defaults.py --recipes speech

Runs `seqtrain fit recipe=NAME` with nothing else (a temporary run dir), the first thing a new user types.
Per recipe it reports the wall time, the steps, the result the run ends by printing (its last validation:
loss for char_lm, accuracy for sentiment and speech, exact match for seq2seq, OWA for forecast) and how many
seconds the run took to first reach the value it ends with, from metrics.jsonl. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench import common

RESULT = {"char_lm": "loss", "sentiment": "accuracy", "seq2seq": "exact_match", "speech": "accuracy", "forecast": "owa"}
LOWER_IS_BETTER = ("loss", "owa")


def reached(valid: list[dict], metric: str, final: float, started: float) -> float:
    """Seconds from the start of fit to the first validation at least as good as the final one."""
    better = (lambda v: v <= final) if metric in LOWER_IS_BETTER else (lambda v: v >= final)
    return round(next(r["time"] for r in valid if better(r[metric])) - started, 1)


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="+", choices=RESULT, default=list(RESULT))
    return p


def main() -> None:
    args = parser().parse_args()

    figures = {}
    for recipe in args.recipes:
        run = common.fit(recipe, [])
        metric, valid = RESULT[recipe], common.records(run.run_dir, "valid")
        figures[recipe] = {
            metric: round(run.final[metric], 4),
            "steps": valid[-1]["step"],
            "wall_s": round(run.seconds, 1),
            "s_to_final_value": reached(valid, metric, run.final[metric], run.started),
            "command": run.command,
        }
    print(json.dumps({"benchmark": "embedded_defaults", **figures, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
