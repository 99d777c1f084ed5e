"""A waveform classifier: augmentation (train mode only) -> Fbank/MFCC -> normalisation -> CRDNN.

The feature front end lives in the model, not in collation, for three reasons: features are computed
batched on the model's device (the GPU when there is one) instead of per utterance in loader workers;
the wave-level augmentations (speed, shift, noise) must come before the features and SpecAugment after
them, which is one place only when both are here; and the global normalisation statistics are buffers
saved with the weights, so a checkpoint alone classifies a raw audio file (`seqtrain sample --audio`).
Augmentation follows the module's train/eval mode, exactly as dropout does, and draws its randomness
from a generator seeded from torch's global RNG, which checkpoints save: a resumed run augments the
same way as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from seqtrain.data.audio import GlobalNormalizer, feature_extractor, limit_dynamic_range, normalize_utterances
from seqtrain.data.augment import (
    add_noise,
    frequency_warp,
    random_equalizer,
    random_gain,
    random_tilt,
    silence_margins,
    spec_augment,
    speed_perturb,
    time_shift,
)
from seqtrain.errors import ConfigError, DataError
from seqtrain.models.crdnn import CRDNN

FEATURES = ("fbank", "mfcc")
NORMALIZATIONS = ("global", "utterance", "none")


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, in the order applied: speed -> margins -> time shift -> gain -> tilt -> equaliser ->
    noise on the wave, frequency warp and SpecAugment on the normalised features. Each is off at its empty or
    zero value."""

    speeds: tuple[float, ...] = ()  # speed-perturbation factors, one drawn per batch
    max_margin: int = 0  # samples of quiet noise added, at most, before and after each utterance
    max_shift: int = 0  # samples
    max_gain_db: float = 0.0  # level change of up to this many dB, either way
    max_tilt_db: float = 0.0  # spectral tilt (0 Hz to Nyquist) of up to this many dB, either way
    max_equalizer_db: float = 0.0  # a smooth random frequency response of up to this many dB, either way
    snr_db: Optional[tuple[float, float]] = None  # white noise at an SNR drawn from this range
    time_masks: int = 0
    max_time_width: int = 20  # frames
    freq_masks: int = 0
    max_freq_width: int = 8  # feature bins
    freq_warp: float = 0.0  # the largest relative stretch of each utterance's frequency axis (filterbanks only)

    def wave(self, wave: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N), (B,) -> (B, N'), (B,)"""
        if self.speeds:
            wave, lengths = speed_perturb(wave, lengths, g, self.speeds)
        if self.max_margin:
            wave, lengths = silence_margins(wave, lengths, g, self.max_margin)
        if self.max_shift:
            wave = time_shift(wave, lengths, g, self.max_shift)
        if self.max_gain_db:
            wave = random_gain(wave, g, self.max_gain_db)
        if self.max_tilt_db:
            wave = random_tilt(wave, lengths, g, self.max_tilt_db)
        if self.max_equalizer_db:
            wave = random_equalizer(wave, lengths, g, self.max_equalizer_db)
        if self.snr_db:
            wave = add_noise(wave, lengths, g, self.snr_db)
        return wave, lengths

    def features(self, feats: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B, T, F) -> (B, T, F)"""
        if self.freq_warp:
            feats = frequency_warp(feats, g, self.freq_warp)
        if not (self.time_masks or self.freq_masks):
            return feats
        return spec_augment(
            feats,
            lengths,
            g,
            self.time_masks,
            self.max_time_width,
            freq_masks=self.freq_masks,
            max_freq_width=self.max_freq_width,
        )


class AudioClassifier(nn.Module):
    """(B, N) waveforms + lengths in samples -> {"logits": (B, C)} (+ "aux_logits": (B, S)).

    With global normalisation the statistics accumulate over the first `freeze_after` training
    utterances (one pass over the training set) and are frozen from then on.
    """

    def __init__(
        self,
        sample_rate: int,
        num_classes: int,
        features: str = "fbank",
        num_mel_bins: int = 40,
        num_ceps: int = 13,
        normalize: str = "global",
        dynamic_range_db: Optional[float] = None,
        frontend: str = "torch",
        feature_options: dict | None = None,
        freeze_after: int = 0,
        **crdnn: Any,
    ):
        super().__init__()
        if features not in FEATURES or normalize not in NORMALIZATIONS:
            raise ConfigError(f"model.features must be one of {FEATURES} and model.normalize one of {NORMALIZATIONS}")
        if dynamic_range_db is not None and (features != "fbank" or dynamic_range_db <= 0):
            raise ConfigError(
                f"model.dynamic_range_db limits log filterbanks: it needs model.features=fbank and a positive value, "
                f"got {dynamic_range_db} with {features}"
            )
        sizes = {"num_ceps": num_ceps} if features == "mfcc" else {}
        self.features = feature_extractor(
            features, frontend, sample_rate=sample_rate, num_mel_bins=num_mel_bins, **sizes, **(feature_options or {})
        )
        size = self.features.num_features
        self.normalize, self.freeze_after, self.dynamic_range_db = normalize, freeze_after, dynamic_range_db
        self.normalizer = GlobalNormalizer(size) if normalize == "global" else None
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # training utterances the statistics saw
        self.crdnn = CRDNN(size, num_classes, **crdnn)

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor, augment: Augmentation | None = None
    ) -> dict[str, torch.Tensor]:
        augment = augment if self.training else None
        g = None
        if augment is not None:
            g = torch.Generator(device=wave.device).manual_seed(int(torch.randint(2**62, ())))
            wave, lengths = augment.wave(wave, lengths, g)
        feats, frames = self.features(wave, lengths)  # (B, N) -> (B, T, F), (B,)
        if (frames < 1).any():
            raise DataError(f"an utterance of {int(lengths.min())} samples is shorter than one feature frame")
        feats = self.limited(feats, frames)
        if self.normalizer is not None and self.training and not self.normalizer.frozen:
            self.seen += self.normalizer.update(feats, frames)
            if self.seen >= self.freeze_after:
                self.normalizer.freeze()
        feats = self.standardized(feats, frames)
        if augment is not None:
            feats = augment.features(feats, frames, g)
        return self.crdnn(feats, frames)

    @property
    def head(self) -> nn.Linear:
        """The word classifier that reads `pooled` (the CRDNN's)."""
        return self.crdnn.head

    def pooled(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N) waveforms -> (B, P) the utterance vectors the heads read (no augmentation, no statistics kept)."""
        feats, frames = self.features(wave, lengths)
        return self.crdnn.pooled(self.normalized(feats, frames), frames)

    def limited(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, F): the dynamic range limited when configured."""
        return feats if self.dynamic_range_db is None else limit_dynamic_range(feats, frames, self.dynamic_range_db)

    def normalized(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features -> (B, T, F) range-limited and normalised as configured. Its own step because
        an ONNX export joins the features and the rest as two graphs (seqtrain/export.py says why)."""
        return self.standardized(self.limited(feats, frames), frames)

    def standardized(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, F) range-limited features -> (B, T, F) by the global statistics, per utterance, or as they are."""
        if self.normalizer is not None:
            # no statistics before the first training batch: features pass as they are
            return self.normalizer(feats, frames) if self.normalizer.count > 0 else feats
        return normalize_utterances(feats, frames) if self.normalize == "utterance" else feats
