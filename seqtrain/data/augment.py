"""Training-time augmentation of padded audio batches, one function per config switch.

Every function takes a batch with its lengths, touches only real samples or frames (padding stays
zero, lengths are honoured), and draws its randomness from the `torch.Generator` it is given, so that
a run is reproducible and resumable. Apply them to training batches only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import torch

from seqtrain.data.audio import resample, resampled_lengths
from seqtrain.data.collate import lengths_to_mask
from seqtrain.errors import ConfigError


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """U[0, 1) drawn on the generator's device, returned on `device`."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def either_way(
    size: int, generator: torch.Generator, device: torch.device, bound: float | torch.Tensor
) -> torch.Tensor:
    """(size,) values drawn uniformly from [-bound, bound]."""
    return (uniform((size,), generator, device) * 2 - 1) * bound


def band_mask(
    sizes: torch.Tensor, max_widths: torch.Tensor, length: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """`count` random bands per row b, each at most max_widths[b] wide and inside [0, sizes[b]): -> (B, length) bool."""
    positions = torch.arange(length, device=sizes.device)
    mask = torch.zeros(len(sizes), length, dtype=torch.bool, device=sizes.device)
    for _ in range(count):
        width = (uniform((len(sizes),), generator, sizes.device) * (max_widths + 1)).long().minimum(sizes)
        start = (uniform((len(sizes),), generator, sizes.device) * (sizes - width + 1)).long()
        mask |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return mask


def spec_augment(
    feats: torch.Tensor,
    lengths: torch.Tensor,
    generator: torch.Generator,
    time_masks: int = 2,
    max_time_width: int = 20,
    max_time_fraction: float = 0.2,
    freq_masks: int = 2,
    max_freq_width: int = 8,
) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) without time warping: zero random time and frequency bands.

    (B, T, F) -> (B, T, F). A time band lies inside its utterance and covers at most
    `max_time_fraction` of it, so a short utterance is never wiped out. Apply after normalisation,
    where zero is the mean.
    """
    time_widths = (lengths * max_time_fraction).long().clamp(max=max_time_width)
    time = band_mask(lengths, time_widths, feats.size(1), time_masks, generator)  # (B, T)
    bins = torch.full_like(lengths, feats.size(2))
    freq = band_mask(bins, torch.full_like(lengths, max_freq_width), feats.size(2), freq_masks, generator)  # (B, F)
    return feats.masked_fill(time[:, :, None] | freq[:, None, :], 0.0)


def frequency_warp(feats: torch.Tensor, generator: torch.Generator, max_warp: float) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly and Hinton 2013) on filterbank features: each utterance's
    frequency axis stretched or squeezed by a factor drawn from [1 - max_warp, 1 + max_warp], by linear
    interpolation between neighbouring bins. A shorter vocal tract moves every formant up by about one
    factor, so the warp shows the model the same word said by voices it has not heard.

    (B, T, F) -> (B, T, F): output bin f reads input position f / factor (the top bin where that passes it)."""
    batch, frames, bins = feats.shape
    factor = 1 + either_way(batch, generator, feats.device, max_warp)  # (B,)
    source = (torch.arange(bins, device=feats.device)[None] / factor[:, None]).clamp(max=bins - 1)  # (B, F)
    low = source.floor().long()
    high = (low + 1).clamp(max=bins - 1)
    weight = (source - low).to(feats.dtype)[:, None, :]  # (B, 1, F)
    below = feats.gather(2, low[:, None, :].expand(batch, frames, bins))
    above = feats.gather(2, high[:, None, :].expand(batch, frames, bins))
    return below + weight * (above - below)


def mean_power(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each utterance's mean squared sample over its real samples: (B, N) -> (B,)."""
    real = lengths_to_mask(lengths, wave.size(1)).to(wave.dtype)
    return (wave * real).pow(2).sum(1) / lengths.clamp(min=1).to(wave.dtype)


def add_noise(
    wave: torch.Tensor,
    lengths: torch.Tensor,
    generator: torch.Generator,
    snr_db: tuple[float, float] = (5.0, 20.0),
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Add noise at a signal-to-noise ratio drawn uniformly from `snr_db` per utterance: (B, N) -> (B, N).

    `noise` (B, N) is any noise batch (recorded, babble); without it, white Gaussian noise. Powers are
    measured over real samples only.
    """
    low, high = snr_db
    mask = lengths_to_mask(lengths, wave.size(1)).to(wave.dtype)  # (B, N)
    if noise is None:
        noise = torch.randn(wave.shape, generator=generator, device=generator.device).to(wave)
    noise = noise * mask
    signal_power, noise_power = mean_power(wave, lengths), mean_power(noise, lengths)  # (B,) each
    snr = low + (high - low) * uniform((wave.size(0),), generator, wave.device)
    scale = (signal_power / (noise_power.clamp(min=1e-12) * 10 ** (snr / 10))).sqrt()
    return wave + scale[:, None] * noise


def speed_perturb(
    wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, factors: Sequence[float] = (0.9, 1.0, 1.1)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Play the batch faster or slower by a factor drawn from `factors` (Ko et al. 2015): pitch and
    tempo change together, by resampling. (B, N) -> (B, N / factor), with new lengths."""
    if not factors or min(factors) <= 0:
        raise ConfigError(f"speed perturbation factors must be positive, got {list(factors)}")
    factor = factors[int(uniform((1,), generator, torch.device("cpu")) * len(factors))]
    ratio = Fraction(factor).limit_denominator(100)
    if ratio == 1:
        return wave, lengths
    out = resample(wave, ratio.numerator, ratio.denominator)
    new_lengths = resampled_lengths(lengths, ratio.numerator, ratio.denominator)
    return out.masked_fill(~lengths_to_mask(new_lengths, out.size(1)), 0.0), new_lengths


def shortest_before_speed_perturb(min_samples: int, factors: Sequence[float]) -> int:
    """The shortest utterance that still has `min_samples` after `speed_perturb` at its fastest factor."""
    fastest = max(Fraction(f).limit_denominator(100) for f in factors)
    return max(min_samples, math.floor((min_samples - 1) * fastest) + 1)  # ceil(n / fastest) >= min_samples


def random_gain(wave: torch.Tensor, generator: torch.Generator, max_db: float) -> torch.Tensor:
    """Scale each utterance by a level drawn uniformly from [-max_db, max_db] dB: (B, N) -> (B, N).

    Recording level differs between speakers and microphones far more than between words (the FSDD
    speakers' mean levels span 18 dB); on log filterbanks it is one offset on every bin, which global
    normalisation keeps. Padding stays zero."""
    gain_db = either_way(wave.size(0), generator, wave.device, max_db)  # (B,)
    return wave * (10 ** (gain_db / 20))[:, None].to(wave)


def random_tilt(wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, max_db: float) -> torch.Tensor:
    """Tilt each utterance's spectrum by a first-order filter y[n] = x[n] - a x[n-1], whose response rises
    (a > 0) or falls (a < 0) steadily from 0 Hz to Nyquist by up to `max_db`, drawn uniformly either way:
    (B, N) -> (B, N). Microphones and rooms differ mostly in such broad tilts (the FSDD speakers' share
    of energy above 2 kHz spans 10 dB), which the words do not; padding stays zero."""
    tilt_db = either_way(wave.size(0), generator, wave.device, max_db)  # (B,)
    a = torch.tanh(tilt_db * math.log(10) / 40).to(wave)  # |H(Nyquist) / H(0)| = (1 + a) / (1 - a)
    previous = torch.nn.functional.pad(wave, (1, 0))[:, :-1]
    out = wave - a[:, None] * previous
    return out.masked_fill(~lengths_to_mask(lengths, wave.size(1)), 0.0)


EQUALIZER_TERMS = 4  # cosines in a random equaliser's curve: bumps down to a quarter of the band wide
EQUALIZER_GUARD = 64  # samples of silence the filter may ring into, cut off again


def random_equalizer(
    wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, max_db: float
) -> torch.Tensor:
    """Filter each utterance by a random smooth frequency response: a gain in dB over 0 Hz to Nyquist that is
    a sum of EQUALIZER_TERMS cosines (cos(pi k f / Nyquist), k = 1..4) with weights drawn uniformly, at most
    `max_db` either way at any frequency and 0 dB on average: (B, N) -> (B, N). Where the tilt is one slope,
    this bends the spectrum in broad bands, as microphones, rooms and voices do, and leaves the level to
    random_gain. Zero-phase, applied by FFT over the padded batch plus a guard of silence, so no utterance's
    end rings into its start; padding stays zero."""
    batch, samples = wave.shape
    spectrum = torch.fft.rfft(torch.nn.functional.pad(wave.float(), (0, EQUALIZER_GUARD)), dim=1)  # (B, S)
    position = torch.linspace(0, math.pi, spectrum.size(1), device=wave.device)  # 0 Hz .. Nyquist
    terms = torch.arange(1, EQUALIZER_TERMS + 1, device=wave.device, dtype=position.dtype)
    weights = either_way(batch * EQUALIZER_TERMS, generator, wave.device, max_db / EQUALIZER_TERMS)
    curve_db = weights.view(batch, EQUALIZER_TERMS) @ torch.cos(terms[:, None] * position[None])  # (B, S)
    filtered = torch.fft.irfft(spectrum * 10 ** (curve_db / 20), n=samples + EQUALIZER_GUARD, dim=1)
    return filtered[:, :samples].to(wave).masked_fill(~lengths_to_mask(lengths, samples), 0.0)


# A margin's noise level, dB below its utterance's mean power: a noisy room to a quiet one
MARGIN_BELOW_DB = (20.0, 60.0)


def silence_margins(
    wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, max_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a quiet stretch before and after each utterance: (B, N) -> (B, N'), with new lengths. Each end
    of each utterance has none half the time (a clip cut tight stays familiar) and otherwise up to
    `max_samples`, drawn uniformly. A recording starts and stops around its word with its room's
    background noise, and how long those margins are depends on who cut the clips: FSDD's speakers range
    from none to about a tenth of a second either side. A model that never saw margins reads most clips
    with 300 ms of quiet noise at either end as another word. The margins hold white noise at a level
    drawn from MARGIN_BELOW_DB below the utterance's mean power (the filters applied after colour it);
    padding stays zero."""
    batch = wave.size(0)
    lead, trail = either_way(2 * batch, generator, wave.device, max_samples + 1).clamp(min=0).long().view(2, batch)
    new_lengths = lengths + lead + trail
    total = int(new_lengths.max())
    source = torch.arange(total, device=wave.device)[None] - lead[:, None]  # (B, N')
    speech = (source >= 0) & (source < lengths[:, None])
    out = wave.gather(1, source.clamp(0, wave.size(1) - 1)).masked_fill(~speech, 0.0)
    low, high = MARGIN_BELOW_DB
    below_db = low + (high - low) * uniform((batch,), generator, wave.device)
    noise = torch.randn((batch, total), generator=generator, device=generator.device).to(wave)
    noise = noise * (mean_power(wave, lengths) / 10 ** (below_db / 10)).sqrt()[:, None]
    margins = ~speech & lengths_to_mask(new_lengths, total)
    return out + noise.masked_fill(~margins, 0.0), new_lengths


def time_shift(wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Delay or advance each utterance by up to `max_shift` samples inside its own length, filling with
    silence: (B, N) -> (B, N). Lengths do not change; what is pushed past either end is dropped."""
    shifts = (uniform((wave.size(0),), generator, wave.device) * (2 * max_shift + 1)).long() - max_shift  # (B,)
    source = torch.arange(wave.size(1), device=wave.device)[None] - shifts[:, None]  # (B, N)
    inside = (source >= 0) & (source < lengths[:, None]) & lengths_to_mask(lengths, wave.size(1))
    return wave.gather(1, source.clamp(0, wave.size(1) - 1)).masked_fill(~inside, 0.0)
