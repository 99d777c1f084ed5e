"""Spoken-word classifier (many-to-one over audio): a CRDNN on filterbank features; FSDD digits or a folder per class.

What differs from the other recipes: examples are waveforms (lengths, bucketing budgets and throughput
are in samples); the features, their normalisation and the augmentation run inside the model
(seqtrain/models/audio_classifier.py says why); an optional second head predicts the speaker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from seqtrain.data.audio import Fbank, KaldiOptions, feature_extractor
from seqtrain.data.audio_files import (
    AudioCollate,
    AudioFiles,
    Entry,
    Utterances,
    check_skipped,
    folder_entries,
    fsdd_entries,
)
from seqtrain.data.augment import shortest_before_speed_perturb
from seqtrain.data.sampler import BatchingConfig
from seqtrain.data.synthetic_audio import SyntheticAudio, class_names
from seqtrain.data.tables import sort_labels
from seqtrain.errors import ConfigError, DataError, check_choices
from seqtrain.models.audio_classifier import FEATURES, NORMALIZATIONS, AudioClassifier, Augmentation
from seqtrain.recipe import Graph, Prepared
from seqtrain.recipes.classifier import ClassifierRecipe, ExportedClassifier, classifier_stats
from seqtrain.task import Stats, Task

SOURCES = ("synthetic", "fsdd", "folder")
FRONTENDS = ("torch", "torchaudio")
AUX_HEADS = (None, "speaker", "speaker_adversarial")
SYNTHETIC_SEEDS = {"train": 1, "valid": 2, "test": 3}


@dataclass
class ModelConfig:
    features: str = "fbank"  # fbank or mfcc (Kaldi-compatible; settings in data.kaldi)
    frontend: str = "torch"  # torch (seqtrain's own, batched) or torchaudio (its compliance.kaldi functions)
    num_mel_bins: int = 40  # filterbank channels
    num_ceps: int = 13  # mfcc only
    normalize: str = "global"  # global (statistics of one pass over training), utterance, none
    # fbank: values more than this many dB below the utterance's peak are raised to that floor; null = off
    dynamic_range_db: Optional[float] = None
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64])  # output channels of each CNN block
    cnn_kernel: int = 3  # CNN kernel size over time and frequency (odd)
    cnn_pool: int = 2  # max-pooling over frequency in each CNN block
    cnn_dropout: float = 0.15  # after each CNN block
    norm: str = "batch"  # batch, layer, none
    activation: str = "leaky_relu"  # relu, leaky_relu, gelu
    rnn_cell: str = "lstm"  # rnn_tanh, rnn_relu, gru, lstm, ligru
    rnn_hidden: int = 128  # units per recurrent layer and direction
    rnn_layers: int = 2  # stacked recurrent layers
    bidirectional: bool = True  # read each utterance both ways
    rnn_dropout: float = 0.15  # between recurrent layers
    dnn_sizes: list[int] = field(default_factory=lambda: [128])  # units of each dense block after the recurrence
    dnn_dropout: float = 0.15  # after each dense block
    pooling: str = "mean"  # mean, attentive (attentive statistics pooling)
    # speaker: a second head predicts who speaks (multitask); speaker_adversarial: the same head behind a
    # gradient reversal, so the utterance's summary unlearns the voice
    aux_head: Optional[str] = None
    aux_weight: float = 0.3  # weight of the speaker loss in the training objective

    def __post_init__(self):
        check_choices(
            "model",
            {
                "features": (self.features, FEATURES),
                "normalize": (self.normalize, NORMALIZATIONS),
                "frontend": (self.frontend, FRONTENDS),
            },
        )
        if self.aux_head not in AUX_HEADS or self.aux_weight < 0:
            raise ConfigError(
                f"model.aux_head must be null, speaker or speaker_adversarial (got {self.aux_head!r}) and "
                f"model.aux_weight >= 0"
            )


@dataclass
class AugmentConfig:
    """Training-time augmentation switches; validation, test and `sample` never augment."""

    speed_perturb: bool = False  # play each training clip at a speed drawn from speeds
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # speed_perturb: the speeds drawn from
    margin_ms: float = 0.0  # quiet noise of up to this much added before and after each clip; 0 = off
    time_shift_ms: float = 0.0  # random shift of up to this much, either way; 0 = off
    gain_db: float = 0.0  # random level change of up to this many dB, either way; 0 = off
    tilt_db: float = 0.0  # random spectral tilt, 0 Hz to Nyquist, of up to this many dB either way; 0 = off
    equalizer_db: float = 0.0  # random smooth frequency response (broad bands) of up to this many dB; 0 = off
    noise: bool = False  # white noise at an SNR drawn from snr_db
    # noise: the range the signal-to-noise ratio (dB) is drawn from
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])
    spec_augment: bool = False  # mask random time and frequency bands of the features
    time_masks: int = 2  # spec_augment: time bands masked per utterance
    max_time_width: int = 20  # frames (10 ms each)
    freq_masks: int = 2  # spec_augment: frequency bands masked per utterance
    max_freq_width: int = 8  # mel bins
    freq_warp: float = 0.0  # vocal tract length perturbation: largest stretch of the mel axis (fbank only)

    def __post_init__(self):
        if not 0 <= self.freq_warp < 0.5:
            raise ConfigError(f"data.augment.freq_warp must be in [0, 0.5), got {self.freq_warp}")
        if self.margin_ms < 0:
            raise ConfigError(f"data.augment.margin_ms must be >= 0 (0 = off), got {self.margin_ms}")
        for name, decibels in (
            ("gain_db", self.gain_db),
            ("tilt_db", self.tilt_db),
            ("equalizer_db", self.equalizer_db),
        ):
            if decibels < 0:
                raise ConfigError(f"data.augment.{name} must be >= 0 (a range either way), got {decibels}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"data.augment.snr_db must be [low, high] with low <= high, got {list(self.snr_db)}")
        if not self.speeds or min(self.speeds) <= 0:
            raise ConfigError(f"data.augment.speeds must be positive speeds, got {list(self.speeds)}")


@dataclass
class DataConfig(BatchingConfig):
    source: str = "synthetic"  # synthetic, fsdd, folder
    root: Optional[str] = None  # fsdd, folder: the data folder
    sample_rate: int = 16000  # every file is resampled to this rate
    valid_fraction: float = 0.1  # fsdd: of the training indices; folder without validation_list.txt: hashed
    test_fraction: float = 0.1  # folder without testing_list.txt: hashed
    max_skipped_fraction: float = 0.05  # stop when a larger share of the files is unreadable or empty
    cache_audio: bool = False  # decode every file once at start and keep the waveforms in memory
    max_seconds: Optional[float] = None  # batch by padded seconds (longest x count); sets max_tokens in samples
    test_speakers: Optional[list[str]] = None  # fsdd: these speakers' recordings are the test split (unseen voices)
    kaldi: KaldiOptions = field(
        default_factory=KaldiOptions
    )  # framing, window, energy, ...: how audio becomes features
    size: int = 2400  # synthetic: training utterances; validation and test get a quarter as many each
    num_classes: int = 6  # synthetic
    num_speakers: int = 4  # synthetic
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.max_seconds is not None:
            self.max_tokens = round(self.max_seconds * self.sample_rate)  # the sampler's budget is in samples
        super().__post_init__()
        check_choices("data", {"source": (self.source, SOURCES)})
        if self.source != "synthetic" and not self.root:
            raise ConfigError(f"data.source={self.source} needs data.root=DIR")
        if not (0 < self.valid_fraction < 1 and 0 <= self.test_fraction < 1 and 0 <= self.max_skipped_fraction <= 1):
            raise ConfigError(
                "data.valid_fraction must be in (0, 1), data.test_fraction in [0, 1), data.max_skipped_fraction in "
                "[0, 1]"
            )
        if self.test_speakers and self.source != "fsdd":
            raise ConfigError("data.test_speakers holds out FSDD speakers (data=fsdd); other data has no speaker names")


def augmentation(cfg: AugmentConfig, sample_rate: int) -> Augmentation:
    return Augmentation(
        speeds=tuple(cfg.speeds) if cfg.speed_perturb else (),
        max_margin=round(cfg.margin_ms * sample_rate / 1000),
        max_shift=round(cfg.time_shift_ms * sample_rate / 1000),
        max_gain_db=cfg.gain_db,
        max_tilt_db=cfg.tilt_db,
        max_equalizer_db=cfg.equalizer_db,
        snr_db=tuple(cfg.snr_db) if cfg.noise else None,
        time_masks=cfg.time_masks if cfg.spec_augment else 0,
        max_time_width=cfg.max_time_width,
        freq_masks=cfg.freq_masks if cfg.spec_augment else 0,
        max_freq_width=cfg.max_freq_width,
        freq_warp=cfg.freq_warp,
    )


def min_samples(kaldi: dict, rate: int) -> int:
    """The shortest clip that gives one feature frame under these front-end settings."""
    return feature_extractor("fbank", sample_rate=rate, **KaldiOptions(**kaldi).arguments("fbank")).min_samples


def read_files(
    data: DataConfig, vocab: dict | None, splits: tuple[str, ...], rate: int, kaldi: dict
) -> tuple[dict, list[str], list[str]]:
    """The requested splits of data.root as AudioFiles, with the class and speaker names of training.
    Training clips must still give a frame when speed perturbation plays them at the fastest speed."""
    if data.source == "fsdd":
        entries, skipped = fsdd_entries(data.root, data.valid_fraction, data.test_speakers or ())
    else:
        entries, skipped = folder_entries(data.root, data.valid_fraction, data.test_fraction)
    classes = vocab["classes"] if vocab else sort_labels({e.label for e in entries["train"]})
    speakers = vocab["speakers"] if vocab else sorted({e.speaker for e in entries["train"] if e.speaker})
    shortest = min_samples(kaldi, rate)
    train_shortest = (
        shortest_before_speed_perturb(shortest, data.augment.speeds) if data.augment.speed_perturb else shortest
    )
    sets = {
        split: AudioFiles(entries[split], classes, speakers, rate, train_shortest if split == "train" else shortest)
        for split in splits
    }
    considered = len(skipped) + sum(len(entries[split]) for split in splits)
    check_skipped(
        skipped + [s for dataset in sets.values() for s in dataset.skipped], considered, data.max_skipped_fraction
    )
    for split, dataset in sets.items():
        if len(dataset) == 0:
            raise DataError(f"the {split} split of {data.root} holds no usable audio files")
    return sets, classes, speakers


class SpeechLoss:
    """Cross-entropy of the word; with the speaker head, plus `aux_weight` times the speaker's (for the
    adversarial head too: its gradient reaches the encoder reversed)."""

    def __init__(self, aux_weight: float):
        self.aux_weight = aux_weight

    def __call__(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(batch["audio"], batch["lengths"], batch["augment"])  # (B, N) -> (B, C), (B, S)
        logits, labels = out["logits"].float(), batch["labels"]
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        stats = classifier_stats(logits, labels, loss_sum)
        objective = loss_sum
        if "aux_logits" in out:
            speakers, aux = batch["speakers"], out["aux_logits"].float()
            speaker_loss = F.cross_entropy(
                aux, speakers, ignore_index=-1, reduction="sum"
            )  # -1: a voice unseen in training
            objective = objective + self.aux_weight * speaker_loss
            stats["speaker_loss_sum"] = speaker_loss.detach()
            stats["speaker_correct"] = (aux.argmax(dim=-1) == speakers).sum().float()
        return objective / len(labels), stats


class FeaturesGraph(torch.nn.Module):
    """Waveforms (B, N) and lengths (B,) in samples -> features (B, T, F) and frame lengths (B,).

    `Fbank.frames` counts the frames with `int(frame_lengths.max())`, a Python number, which a tracer
    records as a constant: the graph would serve one length only. While tracing, the frames come from
    the padded width instead (`unfold`, a tensor op): the same frames for a batch padded to its longest
    utterance, and only more padding frames, which everything after masks, for a wider one.
    """

    def __init__(self, features: torch.nn.Module):
        super().__init__()
        self.features = features

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fbank = getattr(self.features, "fbank", self.features)  # an Mfcc's own Fbank
        fbank.frames = lambda wave, lengths: (wave.unfold(1, fbank.size, fbank.shift), fbank.frame_lengths(lengths))
        try:
            return self.features(wave, lengths)
        finally:
            del fbank.frames


class ClassifyGraph(torch.nn.Module):
    """Features (B, T, F) and frame lengths (B,) -> class probabilities (B, C): normalisation and the CRDNN."""

    def __init__(self, model: AudioClassifier):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return self.model.crdnn(self.model.normalized(feats, frames), frames)["logits"].softmax(dim=-1)


class ProbabilitiesGraph(torch.nn.Module):
    """Waveforms (B, N) and lengths (B,) -> class probabilities (B, C), features inside."""

    def __init__(self, model: AudioClassifier):
        super().__init__()
        self.features, self.classify = FeaturesGraph(model.features), ClassifyGraph(model)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classify(*self.features(wave, lengths))


class ExportedSpeechClassifier(ExportedClassifier):
    """An export in the place of `AudioClassifier`: {"logits": log-probabilities} from waveforms and lengths."""

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor, augment=None) -> dict[str, torch.Tensor]:
        return {"logits": super().forward(wave, lengths)}


class Speech(ClassifierRecipe):
    """Spoken-word classifier (many-to-one over audio): a CRDNN on filterbanks; FSDD digits or a folder per class."""

    name = "speech"
    ModelConfig = ModelConfig
    DataConfig = DataConfig
    splits = ("train", "valid", "test")

    def loss(self, model: ModelConfig, vocab: dict) -> SpeechLoss:
        return SpeechLoss(model.aux_weight if model.aux_head else 0.0)

    def task(self, model: torch.nn.Module, model_cfg: ModelConfig, prepared: Prepared) -> Task:
        augment = getattr(prepared.collate, "augment", None)
        if augment is not None and augment.freq_warp and model_cfg.features != "fbank":
            raise ConfigError("data.augment.freq_warp stretches filterbank channels: it needs model.features=fbank")
        return super().task(model, model_cfg, prepared)

    def pooled_and_logits(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = model.pooled(batch["audio"], batch["lengths"])
        return vectors, model.head(vectors)

    def logits(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """The word head's (B, C) logits (the speaker head is not scored by `evaluate` or `sample`)."""
        return model(batch["audio"], batch["lengths"])["logits"].float()

    def summarize(self, totals: Stats) -> dict[str, float]:
        """Loss (the word task's), accuracy, macro-F1, per-class precision/recall; with the second head, the
        speaker's accuracy and loss."""
        metrics = super().summarize(totals)
        if "speaker_correct" in totals:
            metrics["speaker_accuracy"] = float(totals["speaker_correct"] / totals["examples"])
            metrics["speaker_loss"] = float(totals["speaker_loss_sum"] / totals["examples"])
        return metrics

    def from_export(self, graphs: dict, state: dict) -> torch.nn.Module:
        return ExportedSpeechClassifier(graphs["model"])

    def prepare(self, data: DataConfig, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        self.check_splits(splits)
        rate = vocab["sample_rate"] if vocab else data.sample_rate  # a trained model's front end fixes the rate ...
        kaldi = (
            vocab.get("kaldi", {}) if vocab else asdict(data.kaldi)
        )  # ... and its settings (runs before them: defaults)
        if data.source == "synthetic":
            sizes = {
                "train": data.size,
                "valid": max(data.size // 4, data.num_classes),
                "test": max(data.size // 4, data.num_classes),
            }
            sets = {
                s: SyntheticAudio(sizes[s], SYNTHETIC_SEEDS[s], data.num_classes, data.num_speakers, rate)
                for s in splits
            }
            classes, speakers = class_names(data.num_classes), [f"speaker{i}" for i in range(data.num_speakers)]
        else:
            sets, classes, speakers = read_files(data, vocab, splits, rate, kaldi)
        sets = {split: Utterances(dataset, data.cache_audio) for split, dataset in sets.items()}
        vocab = vocab or {
            "classes": classes,
            "speakers": speakers,
            "sample_rate": rate,
            "kaldi": kaldi,
            "train_size": len(sets["train"]),
        }
        return Prepared(vocab, sets, AudioCollate(augmentation(data.augment, rate)))

    def prepare_inputs(self, vocab: dict, paths: list[str]) -> Prepared:
        """Audio files to classify (`seqtrain sample --audio` / `--input-file`), as one unlabelled split "inputs"."""
        rate = vocab["sample_rate"]
        files = AudioFiles(
            [Entry(Path(p), None) for p in paths],
            vocab["classes"],
            vocab["speakers"],
            rate,
            min_samples(vocab.get("kaldi", {}), rate),
        )
        if files.skipped:
            raise DataError(f"{files.skipped[0][0]}: {files.skipped[0][1]}")
        return Prepared(vocab, {"inputs": Utterances(files)}, AudioCollate())

    def build_model(self, model: ModelConfig, vocab: dict) -> AudioClassifier:
        aux_classes = len(vocab["speakers"]) if model.aux_head else 0
        if model.aux_head and aux_classes < 2:
            raise ConfigError(
                f"model.aux_head={model.aux_head} needs speaker labels: data=fsdd and data=synthetic_audio have "
                f"them, folders do not"
            )
        return AudioClassifier(
            vocab["sample_rate"],
            len(vocab["classes"]),
            model.features,
            model.num_mel_bins,
            model.num_ceps,
            model.normalize,
            model.dynamic_range_db,
            frontend=model.frontend,
            feature_options=KaldiOptions(**vocab.get("kaldi", {})).arguments(model.features),
            freeze_after=vocab["train_size"],
            cnn_channels=tuple(model.cnn_channels),
            cnn_kernel=model.cnn_kernel,
            cnn_pool=model.cnn_pool,
            cnn_dropout=model.cnn_dropout,
            norm=model.norm,
            activation=model.activation,
            rnn_cell=model.rnn_cell,
            rnn_hidden=model.rnn_hidden,
            rnn_layers=model.rnn_layers,
            bidirectional=model.bidirectional,
            rnn_dropout=model.rnn_dropout,
            dnn_sizes=tuple(model.dnn_sizes),
            dnn_dropout=model.dnn_dropout,
            pooling=model.pooling,
            aux_classes=aux_classes,
            aux_adversarial=model.aux_head == "speaker_adversarial",
        )

    def export_graphs(self, model: AudioClassifier, vocab: dict, format: str) -> list[Graph]:
        """Waveform to probabilities, traced on three padded rows of 1, 0.5 and 0.75 seconds. For ONNX the
        features are a graph of their own, exported with torch.export (the TorchScript exporter has no FFT),
        chained in front of the rest (torch.export cannot trace the packed recurrent stack)."""
        fbank = getattr(model.features, "fbank", model.features)
        if not isinstance(fbank, Fbank):
            raise ConfigError(
                "only runs with model.frontend=torch can be exported: torchaudio's Kaldi functions take one "
                "utterance at a time; seqtrain's own front end computes the same features, batched"
            )
        if not fbank.snip_edges or getattr(fbank, "subtract_mean", False) or fbank.dither:
            raise ConfigError(
                "an export computes features with snip_edges=true, no subtract_mean and no dither; this run's front "
                "end differs"
            )
        rate = vocab["sample_rate"]
        lengths = torch.tensor([rate, rate // 2, 3 * rate // 4])
        wave = torch.randn(3, rate) * 0.1 * (torch.arange(rate)[None] < lengths[:, None])  # (B, N)
        axes = {"wave": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, "probabilities": {0: "batch"}}
        if format != "onnx":
            return [
                Graph("model", ProbabilitiesGraph(model), {"wave": wave, "lengths": lengths}, ["probabilities"], axes)
            ]
        features = FeaturesGraph(model.features)
        feats, frames = features(wave, lengths)
        axes |= {"features": {0: "batch", 1: "frames"}, "frames": {0: "batch"}}
        return [
            Graph("model", features, {"wave": wave, "lengths": lengths}, ["features", "frames"], axes, dynamo=True),
            Graph("model", ClassifyGraph(model), {"features": feats, "frames": frames}, ["probabilities"], axes),
        ]
