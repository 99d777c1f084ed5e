import pytest
import torch

from seqtrain.data.sampler import BatchingConfig, BucketBatchSampler
from seqtrain.errors import ConfigError

LENGTHS = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0)).tolist()


def padding_efficiency(batches, lengths):
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return real / padded


def test_every_example_once_per_epoch():
    batches = list(BucketBatchSampler(LENGTHS, batch_size=32, seed=1))
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))


def test_bucketing_pads_far_less_than_random_batches():
    bucketed = list(BucketBatchSampler(LENGTHS, batch_size=32, seed=1))
    order = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(1)).tolist()
    random_batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    assert padding_efficiency(bucketed, LENGTHS) > 0.95
    assert padding_efficiency(random_batches, LENGTHS) < 0.7


def test_order_is_deterministic_per_seed_and_epoch_and_changes_across_epochs():
    a, b = BucketBatchSampler(LENGTHS, batch_size=32, seed=1), BucketBatchSampler(LENGTHS, batch_size=32, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


def test_token_budget_bounds_padded_size():
    batches = list(BucketBatchSampler(LENGTHS, max_tokens=1000, seed=0))
    assert all(max(LENGTHS[i] for i in b) * len(b) <= 1000 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))


def test_an_example_longer_than_the_budget_gets_a_batch_of_its_own():
    batches = list(BucketBatchSampler([5, 5, 50, 5], max_tokens=20, shuffle=False))
    assert [2] in batches


def test_ranks_get_equal_disjoint_batches_on_uneven_data():
    lengths = LENGTHS[:997]
    shards = [list(BucketBatchSampler(lengths, batch_size=32, seed=5, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))


def test_resuming_mid_epoch_yields_the_remaining_batches():
    sampler = BucketBatchSampler(LENGTHS, batch_size=32, seed=2)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start_batch=7)
    assert list(sampler) == full[7:]


def test_unshuffled_batches_are_sorted_by_length():
    batches = list(BucketBatchSampler(LENGTHS, batch_size=50, shuffle=False))
    flat = [LENGTHS[i] for b in batches for i in b]
    assert flat == sorted(flat)


def test_batching_needs_a_size_or_budget():
    with pytest.raises(ConfigError):
        BatchingConfig(batch_size=None, max_tokens=None)
    assert BatchingConfig(batch_size=8, max_tokens=100).batch_size is None
