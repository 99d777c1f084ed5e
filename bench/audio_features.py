"""Audio front-end figures: feature extraction throughput and the padding that batching costs.

    python bench/audio_features.py [--root ../shared/data/fsdd] [--utterances 600]

Throughput is seconds of audio turned into 40-bin log-mel filterbanks per second of compute: seqtrain's
`Fbank` on padded, duration-bucketed batches of 32, the same one utterance at a time, and torchaudio's Kaldi
`fbank` (one utterance at a time, its only mode) where torchaudio imports. Padding efficiency is real samples over
padded samples for one epoch of the training set's batches: seqtrain's duration bucketing against
random batches of the same size, and against a budget of padded seconds per batch. Uses FSDD's
training recordings when the shared copy is there, else the embedded synthetic set. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqtrain.data.audio import Fbank
from seqtrain.data.audio_files import AudioFiles, fsdd_entries
from seqtrain.data.collate import pad
from seqtrain.data.sampler import BucketBatchSampler
from seqtrain.data.synthetic_audio import SyntheticAudio

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def corpus(root: str | None, count: int) -> tuple[str, int, list[int], list[torch.Tensor]]:
    """(name, sample rate, every training length, the first `count` waveforms)."""
    if root and Path(root).is_dir():
        train = fsdd_entries(root, 0.1)[0]["train"]
        files = AudioFiles(train, sorted({e.label for e in train}), [], 8000)
        return "fsdd", 8000, files.lengths, [files[i]["audio"] for i in range(min(count, len(files)))]
    data = SyntheticAudio(2400, seed=1)
    return "synthetic", 16000, data.lengths, [data[i]["audio"] for i in range(min(count, len(data)))]


def seconds_per_second(
    extract, waves: list[torch.Tensor], rate: int, trials: int = 5, min_seconds: float = 0.5
) -> float:
    """The best of `trials` rates, each over repeated passes lasting at least `min_seconds`: the best
    trial is the one least disturbed by other work on a shared CPU."""
    extract()  # warm up
    audio = sum(len(w) for w in waves) / rate
    best = 0.0
    for _ in range(trials):
        passes, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds or passes == 0:
            extract()
            passes += 1
        best = max(best, passes * audio / elapsed)
    return best


def padding_efficiency(sampler: BucketBatchSampler, lengths: torch.Tensor) -> float:
    real = padded = 0
    for batch in sampler:
        real += int(lengths[batch].sum())
        padded += int(lengths[batch].max()) * len(batch)
    return real / padded


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(FSDD))
    p.add_argument("--utterances", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    return p


def main() -> None:
    args = parser().parse_args()

    name, rate, lengths, waves = corpus(args.root, args.utterances)
    fbank = Fbank(sample_rate=rate, num_mel_bins=40)
    ordered = sorted(waves, key=len)  # batched as training batches them: by duration
    batches = [pad(ordered[i : i + args.batch]) for i in range(0, len(ordered), args.batch)]
    figures = {
        "batched": seconds_per_second(lambda: [fbank(w, n) for w, n in batches], waves, rate),
        "one_at_a_time": seconds_per_second(lambda: [fbank(w[None]) for w in waves], waves, rate),
    }
    try:
        from torchaudio.compliance.kaldi import fbank as kaldi_fbank

        options = dict(num_mel_bins=40, sample_frequency=rate, dither=0.0, energy_floor=0.0)
        figures["torchaudio_kaldi"] = seconds_per_second(
            lambda: [kaldi_fbank(w[None], **options) for w in waves], waves, rate
        )
    except ImportError:
        figures["torchaudio_kaldi"] = None
    all_lengths = torch.tensor(lengths)
    random_batches = BucketBatchSampler(
        lengths, args.batch, shuffle=True, seed=0, pool_batches=1
    )  # sorting inside a batch changes nothing
    bucketed = BucketBatchSampler(lengths, args.batch, shuffle=True, seed=0)
    budget = BucketBatchSampler(
        lengths, max_tokens=round(args.batch * all_lengths.float().mean().item()), shuffle=True, seed=0
    )
    print(
        json.dumps(
            {
                "benchmark": "audio_features",
                "data": name,
                "sample_rate": rate,
                "utterances": len(waves),
                "audio_seconds": round(sum(len(w) for w in waves) / rate, 1),
                "fbank_audio_s_per_s": {k: None if v is None else round(v, 1) for k, v in figures.items()},
                "padding_efficiency": {
                    "random": round(padding_efficiency(random_batches, all_lengths), 4),
                    "bucketed": round(padding_efficiency(bucketed, all_lengths), 4),
                    "bucketed_seconds_budget": round(padding_efficiency(budget, all_lengths), 4),
                },
                "batch": args.batch,
                "device": "cpu",
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
