"""The embedded default audio classification set: generated utterances in which the order of sounds decides the class.

Why generated: the speech recipe must run with no download, and a toy set that an average over frames
solves would teach nothing about convolutional-recurrent models. Here every class is made of the same
sounds, so time-averaged features carry (almost) no class information by construction; only their
order does.

How an utterance is made. There are four sound events:
- "rise": a pure tone gliding up, 400 -> 1200 Hz (exponentially, like an intonation rise);
- "fall": a pure tone gliding down, 2400 -> 1000 Hz;
- "ah":   a voiced, vowel-like burst: the harmonics of a 100-160 Hz pitch, weighted by two Gaussian
          formant peaks at 700 and 1100 Hz;
- "ee":   the same with formants at 300 and 2300 Hz.
A class is one order of all four events ("rise-ah-fall-ee", ...); the `num_classes` orders (at most 24)
are a fixed pick that does not depend on the seed. Each utterance plays its class's four events with
random durations (60-180 ms), gaps (20-80 ms), leading and trailing silence (0-150 ms) and levels
(+-6 dB each), raised-cosine on- and offsets of 10 ms, spoken by one of `num_speakers` "speakers" who
scale every frequency by a factor from 0.85 to 1.15 (the second task for multitask training), plus
white noise at an SNR drawn from `snr_db`. Utterances last 0.3 to 1.26 s.

Generation is deterministic: the plan of every utterance (class, speaker, timings, levels, SNR) is
drawn from `seed` when the set is made, and the samples of utterance i are synthesised on access
from (seed, i), so that the set costs no memory and any item can be read in any order. Classes are
balanced exactly; use different seeds for different splits.
"""

from __future__ import annotations

import math
import random
from itertools import permutations

import torch

from seqtrain.errors import ConfigError

EVENTS = ("rise", "fall", "ah", "ee")
GLIDES = {"rise": (400.0, 1200.0), "fall": (2400.0, 1000.0)}  # start and end frequency, Hz
FORMANTS = {"ah": (700.0, 1100.0), "ee": (300.0, 2300.0)}  # Hz; each peak 150 Hz wide (one sigma)
ORDERS = random.Random(0).sample(list(permutations(range(len(EVENTS)))), 24)  # fixed, seed-independent


def class_names(num_classes: int) -> list[str]:
    return ["-".join(EVENTS[e] for e in order) for order in ORDERS[:num_classes]]


def speaker_scales(num_speakers: int) -> torch.Tensor:
    return torch.linspace(0.85, 1.15, num_speakers) if num_speakers > 1 else torch.ones(1)


def envelope(n: int, sample_rate: int) -> torch.Tensor:
    """Raised-cosine 10 ms on- and offsets: no clicks, so each event's edges carry no broadband energy."""
    ramp = min(n // 2, int(0.01 * sample_rate))
    env = torch.ones(n, dtype=torch.float64)
    rise = 0.5 - 0.5 * torch.cos(math.pi * torch.arange(ramp, dtype=torch.float64) / max(ramp, 1))
    env[:ramp], env[n - ramp :] = rise, rise.flip(0)
    return env


def event(name: str, n: int, sample_rate: int, scale: float, pitch: float, generator: torch.Generator) -> torch.Tensor:
    """One sound event of n samples, unit RMS before its envelope."""
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    if name in GLIDES:
        f0, f1 = (f * scale for f in GLIDES[name])
        rate = math.log(f1 / f0) / (n / sample_rate)  # f(t) = f0 exp(rate t)
        wave = torch.sin(2 * math.pi * f0 * torch.expm1(rate * t) / rate) * math.sqrt(2)
    else:
        harmonics = torch.arange(1, int(0.45 * sample_rate / pitch) + 1, dtype=torch.float64)  # below Nyquist
        freqs = harmonics * pitch  # (K,)
        weights = sum(torch.exp(-0.5 * ((freqs - f * scale) / 150.0) ** 2) for f in FORMANTS[name])  # (K,)
        phases = 2 * math.pi * torch.rand(len(harmonics), generator=generator, dtype=torch.float64)
        wave = (weights[:, None] * torch.sin(2 * math.pi * freqs[:, None] * t + phases[:, None])).sum(
            0
        )  # (K, n) -> (n,)
        wave = wave / wave.pow(2).mean().sqrt()
    return wave * envelope(n, sample_rate)


class SyntheticAudio(torch.utils.data.Dataset):
    """`size` utterances; item i is {"audio": (N_i,) float32, "label": int, "speaker": int}; `lengths` in samples."""

    def __init__(
        self,
        size: int,
        seed: int = 0,
        num_classes: int = 6,
        num_speakers: int = 4,
        sample_rate: int = 16000,
        snr_db: tuple[float, float] = (5.0, 20.0),
    ):
        if not 2 <= num_classes <= len(ORDERS) or num_speakers < 1 or size < 1 or sample_rate < 8000:
            raise ConfigError(
                f"synthetic audio needs 2 <= num_classes <= {len(ORDERS)}, num_speakers >= 1, size >= 1 "
                f"and sample_rate >= 8000 (got {num_classes}, {num_speakers}, {size}, {sample_rate})"
            )
        self.seed, self.sample_rate, self.classes = seed, sample_rate, class_names(num_classes)
        g = torch.Generator().manual_seed(seed)

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

        self.labels = (torch.arange(size) % num_classes)[torch.randperm(size, generator=g)].tolist()
        self.speakers = torch.randint(num_speakers, (size,), generator=g).tolist()
        self.pitch = uniform(100, 160, size)
        self.levels_db = uniform(-6, 6, size, len(EVENTS))
        self.snr_db = uniform(*snr_db, size)
        seconds = torch.cat(
            [
                uniform(0, 0.15, size, 1),
                uniform(0.06, 0.18, size, 4),
                uniform(0.02, 0.08, size, 3),
                uniform(0, 0.15, size, 1),
            ],
            dim=1,
        )  # lead, 4 events, 3 gaps, trail
        self.samples = (seconds * sample_rate).long()  # (size, 9)
        self.scales = speaker_scales(num_speakers)
        self.lengths = self.samples.sum(1).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def segments(self, index: int) -> list[tuple[int, int, str]]:
        """(start sample, length, event name) of each event of utterance `index`, in playing order."""
        lead, e0, e1, e2, e3, g0, g1, g2, _ = self.samples[index].tolist()
        starts = [lead, lead + e0 + g0, lead + e0 + g0 + e1 + g1, lead + e0 + g0 + e1 + g1 + e2 + g2]
        order = ORDERS[self.labels[index]]
        return [(s, n, EVENTS[e]) for s, n, e in zip(starts, (e0, e1, e2, e3), order)]

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        scale = float(self.scales[self.speakers[index]])
        wave = torch.zeros(self.lengths[index], dtype=torch.float64)
        for (start, n, name), level in zip(self.segments(index), self.levels_db[index].tolist()):
            amplitude = 0.1 * 10 ** (level / 20)
            wave[start : start + n] = amplitude * event(
                name, n, self.sample_rate, scale, float(self.pitch[index]) * scale, g
            )
        noise = torch.randn(len(wave), generator=g, dtype=torch.float64)
        signal_power = wave.pow(2).mean()
        wave += noise * (signal_power / 10 ** (float(self.snr_db[index]) / 10)).sqrt()
        return {"audio": wave.float(), "label": self.labels[index], "speaker": self.speakers[index]}
