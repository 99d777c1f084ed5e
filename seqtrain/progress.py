"""Where a run stands: its position and best validation (saved in every checkpoint), the rule that says
whether a validation improves, the budgets, and the throughput meter. The trainer (seqtrain/trainer.py)
reads these; they know nothing of models or data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch

from seqtrain import distributed
from seqtrain.trainer_config import EarlyStoppingConfig, LoopConfig


@dataclass
class TrainState:
    """The trainer's position, saved in every checkpoint so that resume continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    elapsed: float = 0.0  # training seconds, over all resumes
    best: Optional[float] = None  # the best value of the monitored metric so far
    best_loss: Optional[float] = None  # the validation loss of the checkpoint kept as best.pt
    bad_validations: int = 0  # validations in a row that did not improve
    world_size: int = 1  # ranks that consumed `batch_in_epoch` batches each


class Selection:
    """Which validation is best, and whether the run still improves: one rule for best.pt, NewBob and
    early stopping's patience.

    A validation improves when the monitored metric beats the best so far by more than `min_delta` and
    by more than the metric's resolution on the scored split (one example of an accuracy). Within that
    tolerance of the best the metrics are tied, and a lower validation loss breaks the tie: a small or
    easy validation split saturates an accuracy long before the model stops getting better, and the
    loss still sees that. Without it, best.pt froze at the first 100% and NewBob halved the LR at every
    validation after it. Ties are measured against the best value ever reached, so a run of one-example
    drops cannot walk the kept checkpoint downhill.
    """

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg

    def judge(self, metrics: dict[str, float], resolution: dict[str, float], state: TrainState) -> bool:
        """Whether this validation improves on the best so far; updates the best and the patience count."""
        monitor, value, loss = self.cfg.monitor, metrics[self.cfg.monitor], metrics.get("loss")
        sign = 1.0 if self.cfg.mode == "min" else -1.0
        tolerance = max(self.cfg.min_delta, resolution.get(monitor, 0.0))
        if state.best is None:
            improved = True
        else:
            gain = sign * (state.best - value)  # > 0: better than the best so far
            tie_broken = (
                monitor != "loss" and loss is not None and state.best_loss is not None and loss < state.best_loss
            )
            improved = gain > tolerance or (gain >= -tolerance and tie_broken)
        if improved:
            state.best = value if state.best is None else (min if sign > 0 else max)(state.best, value)
            state.best_loss = loss
            state.bad_validations = 0
        else:
            state.bad_validations += 1
        return improved

    def patience_spent(self, state: TrainState) -> str | None:
        patience = self.cfg.patience
        if patience is not None and state.bad_validations >= patience:
            return f"early stopping ({self.cfg.monitor} did not improve in {patience} validations)"
        return None


class Meter:
    """Throughput: real and padded elements of the current logging window and epoch, and the training
    clock, which leaves validation out of the window's seconds (tokens/s counts training only) but not
    out of the run's elapsed time (trainer.max_time counts it)."""

    def __init__(self, elapsed_before: float):
        self.elapsed_before, self.start = elapsed_before, time.perf_counter()
        self.window_start = self.start
        self.tokens = self.padded = self.epoch_tokens = self.epoch_padded = 0

    def count(self, tokens: int, padded: int) -> None:
        self.tokens += tokens
        self.padded += padded
        self.epoch_tokens += tokens
        self.epoch_padded += padded

    def elapsed(self) -> float:
        """Training seconds of the run, over all resumes."""
        return self.elapsed_before + time.perf_counter() - self.start

    @contextmanager
    def left_out(self) -> Iterator[None]:
        """Time spent in the block (validation) does not count in the window's seconds."""
        started = time.perf_counter()
        yield
        self.window_start += time.perf_counter() - started

    def window(self) -> tuple[int, int, float]:
        """(tokens, padded, seconds) of the window since the last call, summed over ranks; starts the next."""
        counts = distributed.sum_stats({"tokens": torch.tensor(self.tokens), "padded": torch.tensor(self.padded)})
        now = time.perf_counter()
        seconds, self.window_start, self.tokens, self.padded = now - self.window_start, now, 0, 0
        return int(counts["tokens"]), int(counts["padded"]), seconds

    def epoch(self) -> tuple[int, int]:
        """(tokens, padded) of this rank's epoch; starts the next."""
        counts = self.epoch_tokens, self.epoch_padded
        self.epoch_tokens = self.epoch_padded = 0
        return counts


def just_validated(cfg: LoopConfig, state: TrainState) -> bool:
    if cfg.val_every_steps:
        return state.step % cfg.val_every_steps == 0
    return state.batch_in_epoch == 0


def budget_spent(cfg: LoopConfig, state: TrainState) -> str | None:
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        return f"trainer.max_steps={cfg.max_steps} reached"
    if cfg.max_epochs is not None and state.epoch >= cfg.max_epochs:
        return f"trainer.max_epochs={cfg.max_epochs} reached"
    if cfg.max_time is not None and state.elapsed >= cfg.max_time:
        return f"trainer.max_time={cfg.max_time:g}s reached"
    return None
