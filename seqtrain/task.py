"""What the trainer trains: a `Task` (a model and the math around it) on datasets that know their lengths.

This module is the whole interface between the trainer and the recipes. A recipe builds a `Task`
(`seqtrain.recipe.Recipe.task`); the trainer and `seqtrain.evaluation` use nothing else of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import torch

Stats = dict[str, torch.Tensor]  # additive statistics of a batch: summed over batches and ranks, never averaged
Step = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, Stats]]  # (model, batch) -> (loss to minimise, stats)


class SizedDataset(Protocol):
    """A map-style dataset that knows each example's length, for bucketing."""

    lengths: Sequence[int]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def no_sizes(batch: dict) -> tuple[int, int]:
    return 0, 0


def exact_only(totals: Stats) -> dict[str, float]:
    return {}


@dataclass
class Task:
    """A model and the math around it.

    `step` runs every forward that trains through the model it is given (the DDP wrapper in a
    distributed run), so DDP prepares its gradient reduction; its loss settings (label smoothing, class
    weights, mixup, ...) live in the step itself, never on the model. `summarize` turns summed
    statistics into metrics. `sizes` counts a batch's real and padded elements (tokens, samples), for
    throughput and padding efficiency. `resolution` gives, for the metrics that move in steps (an
    accuracy over N examples moves by 1/N), the smallest change the scored split can show: differences
    below it count as ties, which validation loss breaks (seqtrain.trainer.Selection).
    """

    model: torch.nn.Module
    step: Step
    summarize: Callable[[Stats], dict[str, float]]
    collate: Callable[[list], dict]
    sizes: Callable[[dict], tuple[int, int]] = no_sizes
    resolution: Callable[[Stats], dict[str, float]] = exact_only
    # (model, tensorboard writer, step, summed validation stats): pictures and text beyond the scalars
    log_samples: Optional[Callable[[torch.nn.Module, Any, int, Stats], None]] = None
    # (model, tensorboard writer, step): learnt vectors and their labels for TensorBoard's projector
    log_embeddings: Optional[Callable[[torch.nn.Module, Any, int], None]] = None


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (no dropout, frozen statistics) for the block, in its earlier mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
