"""SST-2 dev accuracy of the sentiment recipe as `seqtrain tune` tunes it vs its default settings, in the same time.

    python bench/tune_quality.py --root ../shared/data/sst2 --minutes 40

The budget is split in two halves. One half goes to a study (TPE and median pruning, the defaults of
`seqtrain tune`, with `--prune-after 3` so that pruning starts within the few trials a half holds) over
the learning rate, dropout, hidden size and word dropout (model.embedding_dropout): each trial trains
for at most an eighth of that half (trainer.max_time), and no trial starts once the last one would
overrun it (--timeout). The other half trains the recipe as it
ships (`seqtrain fit recipe=sentiment data=sst2`, its early stopping included) with trainer.max_time set
to the whole half. Both validate every `--val-every` steps (250, about a quarter of an epoch; the
recipe's own cadence is once an epoch, too rare for the pruner to act before a trial is nearly spent,
as a first run showed), with early stopping's patience scaled to match (12 validations: the recipe's 3
epochs). Both are scored the same way, as the study's objective: the dev accuracy of the best
checkpoint (the recipe validates on dev after every epoch and keeps its best), so both read high by the
same selection on dev. Setting up each run (reading and tokenizing the data) comes on top of the budget.

Prints one JSON line: the tuned and the default accuracy, trials run and pruned, and the trial-minutes
pruning saved: for each pruned trial, the mean training time of the trials that completed minus its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from optuna.trial import TrialState

from bench import common
from seqtrain import checkpoint, runs
from seqtrain.config import compose
from seqtrain.rundir import RunDir
from seqtrain.study_report import load, report
from seqtrain.tune import TuneOptions, places, quiet_optuna, tune

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
SPACE = [
    "optim.lr=tag(log, interval(3e-4, 1e-2))",
    "model.dropout=interval(0.1, 0.6)",
    "model.hidden_size=choice(128, 256, 512)",
    "model.embedding_dropout=interval(0.0, 0.3)",
]


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(SST2), help="folder with SST-2's train.tsv and dev.tsv")
    p.add_argument(
        "--minutes", type=float, default=40, help="the whole budget: half for the study, half for the default run"
    )
    p.add_argument("--max-rows", type=int, default=None, help="smoke tests: read only this many rows of each split")
    p.add_argument(
        "--val-every", type=int, default=250, help="trainer.val_every_steps of every run: the pruner's cadence"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=12,
        help="validations without improvement before early stopping: "
        "the recipe's 3 epochs at about 4 validations an epoch",
    )
    p.add_argument("--run-dir", default=None)
    return p


def main() -> None:
    args = parser().parse_args()

    half = args.minutes * 60 / 2
    per_trial = half / 8
    data = [
        "data=sst2",
        f"data.root={args.root}",
        f"data.max_rows={'null' if args.max_rows is None else args.max_rows}",
        f"trainer.val_every_steps={args.val_every}",
        f"trainer.early_stopping.patience={args.patience}",
    ]
    base = Path(args.run_dir or tempfile.mkdtemp(prefix="tune_quality-"))

    study_dir = tune(
        "sentiment",
        [*data, f"trainer.max_time={per_trial}", f"run_dir={base / 'study'}", *SPACE],
        TuneOptions(trials=1000, study="tune_quality", timeout=half - per_trial, prune_after=3),
        common.quiet(),
    )
    found = report(study_dir)
    with quiet_optuna():
        trials = places(load(study_dir).get_trials())
    seconds = {
        t.number: (t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete
    }
    completed = [seconds[t.number] for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    saved = sum(max(0.0, statistics.mean(completed) - seconds[t.number]) for t in pruned) if completed else 0.0

    default_dir, _ = runs.fit(
        compose("sentiment", [*data, f"trainer.max_time={half}", f"run_dir={base / 'default'}"]), common.quiet()
    )
    default = checkpoint.load(RunDir(default_dir).find_checkpoint())["metrics"]["accuracy"]
    print(
        json.dumps(
            {
                "benchmark": "tune_quality",
                "minutes": args.minutes,
                "tuned_accuracy": round(found.best["value"], 4) if found.best else None,
                "default_accuracy": round(default, 4),
                "trials": len(trials),
                "pruned": len(pruned),
                "failed": sum(t.state == TrialState.FAIL for t in trials),
                "trial_minutes_saved_by_pruning": round(saved / 60, 1),
                "trial_minutes": round(sum(seconds.values()) / 60, 1),
                "best_overrides": found.best
                and [o for o in found.best["overrides"] if o.split("=")[0] in {s.split("=")[0] for s in SPACE}],
                "study_dir": str(study_dir),
                "default_run_dir": str(default_dir),
            }
        )
    )


if __name__ == "__main__":
    main()
