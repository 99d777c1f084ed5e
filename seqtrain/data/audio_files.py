"""Labelled audio files for the speech recipe: the FSDD and folder-per-class readers, a dataset of
files that knows every utterance's length before decoding it, the skipped-file report, an in-memory
cache, and collation into padded waveform batches.

Files are vetted by their headers only (soundfile.info: cheap even for 100k files): an unreadable or
empty file is skipped with its reason, and the run stops when the skipped share exceeds what the
config allows, since a folder of mostly broken files is a mistake to report, not to train on.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import soundfile
import torch

from seqtrain.data.audio import load_audio
from seqtrain.data.collate import batch_stats, pad
from seqtrain.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac")
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")  # {digit}_{speaker}_{index}.wav
FSDD_TEST_INDICES = range(0, 5)  # the official split: recordings 0-4 of each digit and speaker are test
FSDD_TRAIN_COUNT = 45  # training indices per digit and speaker: 5-49


@dataclass
class Entry:
    path: Path
    label: Optional[str]  # None: unlabelled (files to classify)
    speaker: Optional[str] = None


Skipped = list[tuple[Path, str]]  # (file, reason)


def fsdd_entries(
    root: str | Path, valid_fraction: float, test_speakers: Sequence[str] = ()
) -> tuple[dict[str, list[Entry]], Skipped]:
    """FSDD's recordings by split. Test is the official index 0-4; validation is the first
    ceil(valid_fraction x 45) training indices (5-9 at 0.1), so it holds every digit and speaker.

    With `test_speakers`, those speakers' recordings are the test split instead (voices the model never
    hears in training), and validation is the first ceil(valid_fraction x 50) indices (0-4 at 0.1) of
    every other speaker."""
    root = Path(root)
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise DataError(f"no FSDD recordings in {folder} (expected {{digit}}_{{speaker}}_{{index}}.wav files)")
    if test_speakers:
        valid_end = math.ceil(valid_fraction * (FSDD_TRAIN_COUNT + len(FSDD_TEST_INDICES)))
    else:
        valid_end = FSDD_TEST_INDICES.stop + math.ceil(valid_fraction * FSDD_TRAIN_COUNT)
    splits: dict[str, list[Entry]] = {"train": [], "valid": [], "test": []}
    skipped: Skipped = []
    for file in files:
        match = FSDD_NAME.match(file.stem)
        if not match:
            skipped.append((file, "the name is not {digit}_{speaker}_{index}.wav"))
            continue
        digit, speaker, index = match[1], match[2], int(match[3])
        if test_speakers:
            split = "test" if speaker in test_speakers else "valid" if index < valid_end else "train"
        else:
            split = "test" if index in FSDD_TEST_INDICES else "valid" if index < valid_end else "train"
        splits[split].append(Entry(file, digit, speaker))
    found = {e.speaker for entries in splits.values() for e in entries}
    unknown = sorted(set(test_speakers) - found)
    if unknown:
        raise DataError(
            f"data.test_speakers: {', '.join(unknown)} not among the speakers of {folder}: {', '.join(sorted(found))}"
        )
    return splits, skipped


def folder_entries(
    root: str | Path, valid_fraction: float, test_fraction: float
) -> tuple[dict[str, list[Entry]], Skipped]:
    """root/<class>/*.wav|*.flac, the Speech Commands layout. Files named in root/validation_list.txt or
    root/testing_list.txt (paths relative to root) go to that split; without a list, a hash of the
    speaker part of the name (before `_nohash_`, else the whole name) decides, as Speech Commands'
    own recipe does, so one speaker's recordings stay in one split on every machine. Folders starting
    with `_` (Speech Commands' `_background_noise_`) or `.` are not classes."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    lists = {split: root / name for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt"))}
    listed = {
        line.strip(): split
        for split, path in lists.items()
        if path.is_file()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    fractions = {
        split: 0.0 if lists[split].is_file() else share
        for split, share in (("valid", valid_fraction), ("test", test_fraction))
    }
    splits: dict[str, list[Entry]] = {"train": [], "valid": [], "test": []}
    for folder in classes:
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES):
            relative = f"{folder.name}/{file.name}"
            split = listed.get(relative) or hashed_split(file.stem, fractions["valid"], fractions["test"])
            splits[split].append(Entry(file, folder.name))
    if not any(splits.values()):
        raise DataError(f"{root} has no class folders holding .wav or .flac files (expected {root}/<class>/*.wav)")
    return splits, []


def hashed_split(stem: str, valid_fraction: float, test_fraction: float) -> str:
    key = stem.split("_nohash_")[0]
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10_000 / 10_000  # in [0, 1)
    return "valid" if bucket < valid_fraction else "test" if bucket < valid_fraction + test_fraction else "train"


def vet(path: Path) -> tuple[int, int] | str:
    """(frames, sample rate) from the header, or why the file cannot be used."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        return f"not a readable audio file ({str(error).split(': ', 1)[-1]})"
    if info.frames <= 0:
        return "the file holds no audio samples"
    return info.frames, info.samplerate


class AudioFiles(torch.utils.data.Dataset):
    """Items {"audio": (N,) float32 at `sample_rate`, "label": int, "speaker": int} (-1 = unknown);
    `lengths` (in samples at `sample_rate`) come from the headers, so bucketing needs no decoding.
    Files whose header is unreadable or empty, or that are shorter than `min_samples` (one feature
    frame), are left out and listed in `skipped`."""

    def __init__(
        self,
        entries: Sequence[Entry],
        classes: Sequence[str],
        speakers: Sequence[str],
        sample_rate: int,
        min_samples: int = 1,
    ):
        self.sample_rate = sample_rate
        class_id, speaker_id = {c: i for i, c in enumerate(classes)}, {s: i for i, s in enumerate(speakers)}
        self.paths, self.labels, self.speakers, self.lengths = [], [], [], []
        self.skipped: Skipped = []
        for entry in entries:
            header = vet(entry.path)
            if isinstance(header, str):
                self.skipped.append((entry.path, header))
                continue
            if entry.label is not None and entry.label not in class_id:
                raise DataError(
                    f"{entry.path}: class {entry.label!r} is not one the model knows ({', '.join(classes)})"
                )
            frames, rate = header
            length = math.ceil(frames * sample_rate / rate)
            if length < min_samples:
                self.skipped.append(
                    (
                        entry.path,
                        f"shorter than one feature frame ({length} samples at {sample_rate} Hz < {min_samples})",
                    )
                )
                continue
            self.paths.append(entry.path)
            self.labels.append(class_id.get(entry.label, -1))
            self.speakers.append(speaker_id.get(entry.speaker, -1))
            self.lengths.append(length)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        wave = load_audio(self.paths[index], self.sample_rate)
        return {"audio": wave, "label": self.labels[index], "speaker": self.speakers[index]}


def check_skipped(skipped: Skipped, total: int, max_fraction: float) -> None:
    """Print each skipped file and why; stop with one line when more than `max_fraction` of them failed."""
    if not skipped:
        return
    share = len(skipped) / max(total, 1)
    tally = ", ".join(f"{n} {reason.split(' (')[0]}" for reason, n in Counter(r for _, r in skipped).most_common())
    first_path, first_reason = skipped[0]
    if share > max_fraction:
        raise DataError(
            f"{len(skipped)} of {total} audio files cannot be used ({share:.1%} > "
            f"data.max_skipped_fraction={max_fraction:g}): "
            f"{tally}; first: {first_path}: {first_reason}"
        )
    for path, reason in skipped[:20]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    more = f" ({len(skipped) - 20} more not listed)" if len(skipped) > 20 else ""
    print(f"skipped {len(skipped)} of {total} audio files{more}: {tally}", file=sys.stderr)


class Utterances(torch.utils.data.Dataset):
    """An audio dataset as the trainer and the classifier tools use it: `lengths` in samples, `labels`
    a (N,) tensor of class ids (-1 = unlabelled). With `cache`, every item is decoded once, up front
    and in this process (so DataLoader workers share it), and later epochs never decode audio again;
    that costs 4 bytes per sample, 64 KB per second of audio at 16 kHz."""

    def __init__(self, dataset: Any, cache: bool = False):
        self.dataset = dataset
        self.lengths = list(dataset.lengths)
        self.labels = torch.as_tensor(dataset.labels, dtype=torch.long)
        self.items = [dataset[i] for i in range(len(dataset))] if cache else None

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict:
        return self.items[index] if self.items is not None else self.dataset[index]


class AudioCollate:
    """Items -> {"audio": (B, N_max), "lengths": (B,) in samples, "labels": (B,), "speakers": (B,),
    "augment": the training-time augmentation the model applies in train mode, or None}."""

    def __init__(self, augment: Any = None):
        self.augment = augment

    def __call__(self, items: list[dict]) -> dict:
        audio, lengths = pad([item["audio"] for item in items])
        return {
            "audio": audio,
            "lengths": lengths,
            **batch_stats(lengths),
            "augment": self.augment,
            "labels": torch.tensor([item["label"] for item in items]),
            "speakers": torch.tensor([item["speaker"] for item in items]),
        }
