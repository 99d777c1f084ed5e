"""The embedded audio set: deterministic, well-formed, and solvable only by listening in order."""

from __future__ import annotations

import pytest
import torch

from seqtrain.data.audio import Fbank
from seqtrain.data.synthetic_audio import SyntheticAudio
from seqtrain.errors import ConfigError


def test_deterministic_from_the_seed_in_any_access_order():
    a, b = SyntheticAudio(12, seed=3), SyntheticAudio(12, seed=3)
    backwards = [b[i]["audio"] for i in reversed(range(12))][::-1]
    for i in range(12):
        assert torch.equal(a[i]["audio"], backwards[i])
        assert a[i]["label"] == b[i]["label"] and a[i]["speaker"] == b[i]["speaker"]
    other = SyntheticAudio(12, seed=4)
    assert other.lengths != a.lengths


def test_items_are_well_formed_and_balanced():
    data = SyntheticAudio(60, seed=0, num_classes=6, num_speakers=3, sample_rate=8000)
    assert sorted(data.labels) == sorted(list(range(6)) * 10)
    assert set(data.speakers) == {0, 1, 2}
    for i in range(0, 60, 7):
        item = data[i]
        assert item["audio"].dtype == torch.float32 and torch.isfinite(item["audio"]).all()
        assert len(item["audio"]) == data.lengths[i]
        assert 0.3 <= data.lengths[i] / 8000 <= 1.26
        assert [name for _, _, name in data.segments(i)] == data.classes[item["label"]].split("-")


def test_segments_say_where_the_sound_is():
    data = SyntheticAudio(4, seed=1, snr_db=(120.0, 120.0))  # practically no noise
    for i in range(4):
        audio = data[i]["audio"]
        inside = torch.zeros(len(audio), dtype=torch.bool)
        for start, n, _ in data.segments(i):
            inside[start : start + n] = True
            assert audio[start + n // 4 : start + 3 * n // 4].abs().max() > 0.01
        assert audio[~inside].abs().max() < 1e-4


def features(data: SyntheticAudio) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    wave = torch.nn.utils.rnn.pad_sequence([data[i]["audio"] for i in range(len(data))], batch_first=True)
    feats, frames = Fbank(sample_rate=data.sample_rate, num_mel_bins=40)(wave, torch.tensor(data.lengths))
    return feats, frames, torch.tensor(data.labels)


def nearest_centroid_accuracy(
    train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor
) -> float:
    mean, std = train.mean(0), train.std(0) + 1e-5
    train, test = (train - mean) / std, (test - mean) / std
    centroids = torch.stack([train[train_labels == c].mean(0) for c in range(int(train_labels.max()) + 1)])
    return float((torch.cdist(test, centroids).argmin(1) == test_labels).float().mean())


def test_averaged_frames_are_at_chance_but_order_solves_it():
    """Every class has the same four sounds: the mean frame says nothing, the means of successive quarters do."""
    train, test = features(SyntheticAudio(240, seed=0)), features(SyntheticAudio(120, seed=1))

    def bag(feats, frames):  # (B, T, 40) -> (B, 40)
        return feats.sum(1) / frames[:, None]

    def quarters(feats, frames):  # (B, T, 40) -> (B, 160): the mean of each quarter, in order
        return torch.stack(
            [torch.cat([q.mean(0) for q in row[:n].tensor_split(4)]) for row, n in zip(feats, frames.tolist())]
        )

    chance = 1 / 6
    bag_accuracy = nearest_centroid_accuracy(bag(*train[:2]), train[2], bag(*test[:2]), test[2])
    order_accuracy = nearest_centroid_accuracy(quarters(*train[:2]), train[2], quarters(*test[:2]), test[2])
    assert bag_accuracy < chance + 0.15
    assert order_accuracy > 0.6


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        SyntheticAudio(10, num_classes=30)
