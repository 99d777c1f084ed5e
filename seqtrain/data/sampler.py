"""Length-bucketing batch sampler.

Examples of similar length go together so that little compute is spent on padding; which examples,
and the order of batches, are shuffled each epoch, deterministically from (seed, epoch). Batches are
sharded across ranks so that every rank gets the same number of disjoint batches (ranks with
different batch counts hang DDP), and an epoch can be resumed from any batch. `bootstrap` draws the
resample that each member of a bagged run (trainer.bagging) trains on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from seqtrain.errors import ConfigError


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields lists of example indices.

    Each epoch the indices are shuffled, cut into pools of `pool_batches` batches' worth of examples,
    each pool is sorted by length and cut into batches, and the batches are shuffled. A batch holds
    `batch_size` examples, or as many as fit in `max_tokens` padded tokens (longest length times
    count). With `shuffle=False` the whole data set is sorted by length (for evaluation).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pool_batches: int = 100,
    ):
        if (batch_size is None) == (max_tokens is None):
            raise ConfigError("set exactly one of data.batch_size and data.max_tokens")
        if batch_size is not None and batch_size < 1 or max_tokens is not None and max_tokens < 1:
            raise ConfigError("data.batch_size and data.max_tokens must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pool_batches = pool_batches
        self.epoch = 0
        self.start_batch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch's order; `start_batch` skips batches this rank already consumed."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (cached: `len()` and iteration agree)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._shard(self._all_batches()))
        return self._cache[1]

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = torch.sort(self.lengths, stable=True).indices
            return self._cut(order)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g)
        per_batch = self.batch_size or max(1, (self.max_tokens or 0) // max(1, int(self.lengths.float().mean())))
        pool = self.pool_batches * per_batch
        batches = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches.extend(self._cut(chunk))
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def _cut(self, ordered: torch.Tensor) -> list[list[int]]:
        """Cut length-sorted indices into batches by count or by padded-token budget."""
        indices = ordered.tolist()
        if self.batch_size is not None:
            return [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index, length in zip(indices, self.lengths[ordered].tolist()):
            longest_if_added = max(longest, length)
            if current and longest_if_added * (len(current) + 1) > self.max_tokens:
                batches.append(current)
                current, longest_if_added = [], length
            current.append(index)
            longest = longest_if_added
        if current:
            batches.append(current)
        return batches

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        """Every rank gets the same number of disjoint batches; the few left over are dropped."""
        if self.world_size == 1:
            return batches
        per_rank = len(batches) // self.world_size
        return batches[self.rank : per_rank * self.world_size : self.world_size]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()[self.start_batch :]


class Resampled(torch.utils.data.Dataset):
    """The examples of `dataset` at `indices` (repeats allowed), with their `lengths` for bucketing."""

    def __init__(self, dataset: Any, indices: list[int]):
        self.dataset = dataset
        self.indices = indices
        self.lengths = [dataset.lengths[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


def bootstrap(dataset: Any, seed: int, member: int) -> Resampled:
    """Member `member`'s bootstrap resample of `dataset` (trainer.bagging): as many examples as it has,
    drawn uniformly with replacement, so each member sees about 63% of the distinct examples, some
    several times. The draw depends on the seed, the member and the split's size alone, so every rank
    and every machine draws the same: a text seed does not go through Python's salted `hash`, and
    `random()`'s stream is the one Python promises to keep across versions."""
    rng = random.Random(f"bootstrap {seed} {member}")
    n = len(dataset)
    return Resampled(dataset, [math.floor(rng.random() * n) for _ in range(n)])


@dataclass
class BatchingConfig:
    """How batches are formed; every recipe's data config extends this."""

    batch_size: Optional[int] = 32  # examples per batch
    max_tokens: Optional[int] = None  # batch by padded-token budget instead of example count
    num_workers: int = 0  # DataLoader worker processes (0: in the training process)
    pool_batches: int = 100  # bucketing pool, in batches: larger pads less, shuffles less

    def __post_init__(self):
        if self.max_tokens is not None:
            self.batch_size = None  # a token budget replaces the count
        if self.batch_size is None and self.max_tokens is None:
            raise ConfigError("set data.batch_size or data.max_tokens")
