"""seqtrain's plain-torch Kaldi front end against live torchaudio: differences and speed, in one process.

    make parity        # builds .venv-parity (torch 2.11 + torchaudio 2.11) when missing, runs this and the tests there
    .venv-parity/bin/python bench/torchaudio_parity.py [--root ../shared/data/fsdd] [--synthetic 300]

For every option set below, each utterance's features from `seqtrain.data.audio` (computed as the model
computes them: padded, duration-sorted batches of 32) are compared with
`torchaudio.compliance.kaldi.fbank`/`.mfcc` on that utterance alone (dither 0): all of FSDD's 3,000
recordings at 8 kHz when the shared copy is there, and generated 16 kHz utterances. Then features per
second of both front ends, one thread, one utterance at a time and (seqtrain only; torchaudio takes
one utterance per call) batched. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqtrain.data import audio
from seqtrain.data.audio_files import AudioFiles, fsdd_entries
from seqtrain.data.collate import pad
from seqtrain.data.synthetic_audio import SyntheticAudio

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"

# Option sets in torchaudio's (Kaldi's) argument names; sample_frequency is added per corpus.
OPTION_SETS = {
    "fbank40": ("fbank", dict(num_mel_bins=40)),
    "fbank23_no_snip": ("fbank", dict(num_mel_bins=23, snip_edges=False)),
    "fbank_hamming_plain": (
        "fbank",
        dict(
            num_mel_bins=23,
            window_type="hamming",
            preemphasis_coefficient=0.0,
            remove_dc_offset=False,
            round_to_power_of_two=False,
            low_freq=100.0,
            high_freq=-400.0,
        ),
    ),
    "fbank_hanning_linear_magnitude": (
        "fbank",
        dict(num_mel_bins=30, window_type="hanning", use_log_fbank=False, use_power=False),
    ),
    "fbank_blackman_energy": (
        "fbank",
        dict(
            num_mel_bins=40,
            window_type="blackman",
            blackman_coeff=0.4,
            use_energy=True,
            raw_energy=False,
            energy_floor=0.0,
        ),
    ),
    "fbank_rectangular_energy_htk_mean": (
        "fbank",
        dict(num_mel_bins=40, window_type="rectangular", use_energy=True, htk_compat=True, subtract_mean=True),
    ),
    "mfcc13": ("mfcc", dict(num_mel_bins=23, num_ceps=13)),
    "mfcc_energy_mean_no_snip": (
        "mfcc",
        dict(num_mel_bins=40, num_ceps=20, use_energy=True, subtract_mean=True, snip_edges=False),
    ),
    "mfcc_htk_no_lifter": (
        "mfcc",
        dict(num_mel_bins=23, num_ceps=13, htk_compat=True, cepstral_lifter=0.0, window_type="blackman"),
    ),
}


def ours(function: str, kaldi_args: dict) -> torch.nn.Module:
    return audio.feature_extractor(function, **audio.from_kaldi_names(kaldi_args))


def corpora(root: str, synthetic: int) -> dict[str, tuple[int, list[torch.Tensor]]]:
    """{name: (sample rate, waveforms)}: FSDD at 8 kHz (when present) and generated 16 kHz utterances."""
    out = {}
    if Path(root).is_dir():
        entries = fsdd_entries(root, 0.1)[0]
        every = [e for split in entries.values() for e in split]
        files = AudioFiles(every, sorted({e.label for e in every}), [], 8000)
        out["fsdd_8k"] = (8000, [files[i]["audio"] for i in range(len(files))])
    data = SyntheticAudio(synthetic, seed=7, sample_rate=16000)
    out["synthetic_16k"] = (16000, [data[i]["audio"] for i in range(len(data))])
    return out


def batched(extractor: torch.nn.Module, waves: list[torch.Tensor], batch: int = 32) -> list[torch.Tensor]:
    """Features of each wave, computed in padded duration-sorted batches, returned in the input order."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(waves)
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        wave, lengths = pad([waves[i] for i in chunk])
        feats, frames = extractor(wave, lengths)
        for i, f, n in zip(chunk, feats, frames.tolist()):
            out[i] = f[:n]
    return out


def compare(function: str, kaldi_args: dict, rate: int, waves: list[torch.Tensor]) -> dict:
    from torchaudio.compliance import kaldi

    args = {**kaldi_args, "sample_frequency": float(rate)}
    got = batched(ours(function, args), waves)
    max_abs = max_rel = 0.0
    exact = 0
    for wave, mine in zip(waves, got):
        want = getattr(kaldi, function)(wave[None], dither=0.0, **args)
        if mine.shape != want.shape:
            raise AssertionError(
                f"{function} {kaldi_args}: shape {tuple(mine.shape)} != torchaudio's {tuple(want.shape)}"
            )
        diff = (mine - want).abs()
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / want.abs().clamp(min=1e-6)).max()))
        exact += bool(torch.equal(mine, want))
    return {"max_abs": max_abs, "max_rel": max_rel, "identical_files": exact, "files": len(waves)}


def frames_per_second(extract, frames: int, min_seconds: float = 1.0) -> float:
    extract()  # warm up
    passes, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or passes == 0:
        extract()
        passes += 1
    return passes * frames / elapsed


def speed(rate: int, waves: list[torch.Tensor]) -> dict:
    from torchaudio.compliance import kaldi

    fbank = audio.Fbank(sample_rate=rate, num_mel_bins=40)
    frames = int(fbank.frame_lengths(torch.tensor([len(w) for w in waves])).sum())
    ordered = sorted(waves, key=len)
    batches = [pad(ordered[i : i + 32]) for i in range(0, len(ordered), 32)]
    return {
        "frames": frames,
        "seqtrain_batched": round(frames_per_second(lambda: [fbank(w, n) for w, n in batches], frames)),
        "seqtrain_one_at_a_time": round(frames_per_second(lambda: [fbank(w[None]) for w in waves], frames)),
        "torchaudio_one_at_a_time": round(
            frames_per_second(
                lambda: [
                    kaldi.fbank(w[None], num_mel_bins=40, sample_frequency=float(rate), dither=0.0) for w in waves
                ],
                frames,
            )
        ),
    }


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(FSDD))
    p.add_argument("--synthetic", type=int, default=300, help="generated 16 kHz utterances")
    p.add_argument("--speed-utterances", type=int, default=300)
    return p


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    import torchaudio

    data = corpora(args.root, args.synthetic)
    differences = {
        f"{corpus}/{name}": compare(function, kaldi_args, rate, waves)
        for corpus, (rate, waves) in data.items()
        for name, (function, kaldi_args) in OPTION_SETS.items()
    }
    corpus = "fsdd_8k" if "fsdd_8k" in data else "synthetic_16k"
    rate, waves = data[corpus]
    print(
        json.dumps(
            {
                "benchmark": "torchaudio_parity",
                "torch": torch.__version__,
                "torchaudio": torchaudio.__version__,
                "max_abs": max(d["max_abs"] for d in differences.values()),
                "max_rel": max(d["max_rel"] for d in differences.values()),
                "files_compared": {c: len(w) for c, (_, w) in data.items()},
                "differences": differences,
                "fbank40_frames_per_s": {"data": corpus, "threads": 1, **speed(rate, waves[: args.speed_utterances])},
            }
        )
    )


if __name__ == "__main__":
    main()
