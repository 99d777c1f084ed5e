"""Scoring a model on a data set with a recipe's step: the sums of its additive statistics, across
ranks in a distributed run; the recipe's `summarize` turns them into metrics."""

from __future__ import annotations

import itertools
from typing import cast

import torch
from torch.utils.data import Dataset

from seqtrain import distributed
from seqtrain.data.collate import to_device
from seqtrain.data.sampler import BatchingConfig, BucketBatchSampler
from seqtrain.task import SizedDataset, Stats, Task, evaluating


@torch.no_grad()
def score(
    task: Task,
    model: torch.nn.Module,
    dataset: SizedDataset,
    batching: BatchingConfig,
    device: torch.device,
    autocast: torch.autocast | None = None,
    max_batches: int | None = None,
) -> Stats:
    """Sum the step's statistics over a data set (sorted by length, so little padding).

    In a distributed run rank r scores batches r, r + world, ... of the first `max_batches`: none is
    dropped, shards may be uneven (no collective runs per batch, so nothing waits), and the sums meet
    once at the end. `model` is the bare model, not its DDP wrapper."""
    world = distributed.current()
    ordered = BucketBatchSampler(dataset.lengths, batching.batch_size, batching.max_tokens, shuffle=False)
    batches = list(itertools.islice(ordered, max_batches))[world.rank :: world.size]
    loader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
        cast(Dataset, dataset), batch_sampler=batches, collate_fn=task.collate, generator=torch.Generator()
    )
    totals: Stats = {}
    with evaluating(model):
        for batch in loader:
            with autocast or torch.autocast(device.type, enabled=False):
                _, stats = task.step(model, to_device(batch, device))
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + (v.double() if v.is_floating_point() else v)
    return distributed.sum_stats(totals)
