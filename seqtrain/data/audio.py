"""The audio front end in plain torch: read, mix to mono, resample, log-mel filterbanks, MFCC, normalise.

torchaudio is not a dependency (its wheels pin their own torch), so the features are re-implemented
here to match `torchaudio.compliance.kaldi.fbank` / `.mfcc` numerically on the same settings
(tests/test_audio.py checks this against stored reference values). Unlike the Kaldi functions, which
take one utterance, everything here is batched: a padded (B, samples) batch with its lengths gives
(B, frames, bins) with frame lengths, on whichever device the batch lives, and padding never changes
a real frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import nn

from seqtrain import distributed
from seqtrain.data.collate import lengths_to_mask
from seqtrain.errors import ConfigError, DataError

WINDOWS = ("povey", "hanning", "hamming", "rectangular", "blackman")
EPSILON = torch.finfo(torch.float32).eps  # Kaldi's floor before taking a log


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Read a wav/flac file as a mono float32 waveform (N,) at `sample_rate`."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (N, channels)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise DataError(f"{path}: not a readable audio file ({error})") from None
    if data.size == 0:
        raise DataError(f"{path}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: the audio holds NaN or infinite samples")
    wave = torch.from_numpy(data.mean(axis=1))  # mono mix-down: (N, channels) -> (N,)
    return resample(wave[None], rate, sample_rate)[0]


def resample(
    wave: torch.Tensor, orig_rate: int, new_rate: int, zero_crossings: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Band-limited (windowed-sinc, polyphase) resampling of (B, N) -> (B, ceil(N * new / orig)).

    The rate ratio is reduced to lowest terms orig:new; each of the `new` output phases is one FIR filter
    (a Hann-windowed sinc with `zero_crossings` lobes each side, cut off at `rolloff` of the lower Nyquist),
    applied to the input with stride `orig`. Samples past the end count as zeros, so a right-padded batch
    gives the same real output samples as each utterance alone.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ConfigError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    gcd = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // gcd, int(new_rate) // gcd
    cutoff = min(orig, new) * rolloff  # in units where the input rate is `orig`
    width = math.ceil(zero_crossings * orig / cutoff)  # filter half-width in input samples
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # (K,) input positions
    phases = -torch.arange(new, dtype=torch.float64)[:, None] / new  # (new, 1) output phase offsets
    t = ((taps[None] + phases) * cutoff).clamp(-zero_crossings, zero_crossings)  # (new, K)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    kernels = torch.sinc(t) * window * cutoff / orig  # (new, K)
    n = wave.size(-1)
    padded = nn.functional.pad(wave[:, None], (width, width + orig))  # (B, 1, N + 2 width + orig)
    out = nn.functional.conv1d(padded, kernels.to(wave)[:, None], stride=orig)  # (B, new, N / orig + 1)
    return out.transpose(1, 2).reshape(wave.size(0), -1)[:, : math.ceil(new * n / orig)]


def resampled_lengths(lengths: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    return torch.div(lengths * new_rate + orig_rate - 1, orig_rate, rounding_mode="floor")


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale, written as torchaudio writes it (`log(1 + f / 700)`, not `log1p`): in float32 the
    two differ in the last bit, and a filter edge one bit off moves a log-fbank value near the floor by 1e-4."""
    return 1127.0 * ((1.0 + freq / 700.0).log() if torch.is_tensor(freq) else math.log(1.0 + freq / 700.0))


def mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Kaldi's triangular mel filters, (num_bins, fft_size // 2 + 1), equally spaced on the mel scale.

    Every edge is `mel_low + k * delta` in float32, in torchaudio's order of operations, so the filters
    are bit-identical to `torchaudio.compliance.kaldi.get_mel_banks` (the features then are too)."""
    nyquist = sample_rate / 2
    high_freq = high_freq + nyquist if high_freq <= 0 else high_freq
    if not (num_bins > 3 and 0 <= low_freq < high_freq <= nyquist):
        raise ConfigError(f"mel bins need num_mel_bins > 3 and 0 <= low_freq < high_freq <= {nyquist:g} Hz")
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    k = torch.arange(num_bins)[:, None]  # (num_bins, 1)
    left, center, right = mel_low + k * delta, mel_low + (k + 1.0) * delta, mel_low + (k + 2.0) * delta
    mel = mel_scale(sample_rate / fft_size * torch.arange(float(fft_size // 2)))[None]  # (1, fft_size // 2)
    banks = torch.max(torch.zeros(1), torch.min((mel - left) / (center - left), (right - mel) / (right - center)))
    return nn.functional.pad(banks, (0, 1))  # Kaldi gives the Nyquist bin no weight


def feature_window(kind: str, size: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    if kind not in WINDOWS:
        raise ConfigError(f"unknown window {kind!r}; valid: {', '.join(WINDOWS)}")
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "rectangular":
        return torch.ones(size)
    if kind == "blackman":  # Kaldi's generalised Blackman; torch.blackman_window fixes the coefficient at 0.42
        n = torch.arange(size, dtype=torch.float32)
        a = 2 * math.pi / (size - 1)
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    hann = torch.hann_window(size, periodic=False)
    return hann.pow(0.85) if kind == "povey" else hann


def log_energy(frames: torch.Tensor, floor: float) -> torch.Tensor:
    """(B, T, S) -> (B, T): log of each frame's energy, floored at float32 epsilon and at log(floor) when floor > 0."""
    energy = frames.pow(2).sum(-1).clamp(min=EPSILON).log()
    return energy.clamp(min=math.log(floor)) if floor else energy


def subtract_utterance_means(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Kaldi's `subtract_mean`: each utterance's mean over its own real frames, taken one utterance at a
    time so the sum runs in the same order as torchaudio's (a masked batch sum would round differently)."""
    out = feats.clone()
    for row, n in enumerate(lengths.tolist()):
        out[row, :n] = feats[row, :n] - feats[row, :n].mean(dim=0, keepdim=True)
    return out


class Fbank(nn.Module):
    """Log-mel filterbank features, Kaldi-compatible (`compute-fbank-feats`), equal to torchaudio's
    `compliance.kaldi.fbank` on the same options.

    Per frame: optional dither, DC removal, pre-emphasis, window, zero-pad to the FFT size, power
    spectrum, triangular mel filters, log floored at float32 epsilon. With `snip_edges` only frames that
    fit wholly inside an utterance are kept; without it an utterance of n samples gives
    round(n / shift) frames and is mirrored at both ends, each utterance at its own end. `use_energy`
    adds the frame's log energy as the first feature (last with `htk_compat`), taken before
    pre-emphasis and window with `raw_energy`; `subtract_mean` removes each utterance's mean.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 40,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 0.0,  # <= 0: offset from Nyquist
        preemphasis: float = 0.97,
        remove_dc_offset: bool = True,
        window: str = "povey",
        blackman_coeff: float = 0.42,
        round_to_power_of_two: bool = True,
        snip_edges: bool = True,
        dither: float = 0.0,
        use_log_fbank: bool = True,
        use_power: bool = True,
        use_energy: bool = False,
        raw_energy: bool = True,
        energy_floor: float = 1.0,  # torchaudio's default (Kaldi's is 0: no floor beyond epsilon)
        htk_compat: bool = False,
        subtract_mean: bool = False,
    ):
        super().__init__()
        self.shift = int(sample_rate * frame_shift_ms * 0.001)
        self.size = int(sample_rate * frame_length_ms * 0.001)
        self.fft_size = 2 ** (self.size - 1).bit_length() if round_to_power_of_two else self.size
        if self.shift < 1 or self.size < 2 or self.fft_size % 2 or not 0 <= preemphasis <= 1 or energy_floor < 0:
            raise ConfigError(
                "frame length/shift give no even FFT size, preemphasis is outside [0, 1], or energy_floor < 0"
            )
        self.preemphasis, self.remove_dc_offset, self.snip_edges = preemphasis, remove_dc_offset, snip_edges
        self.dither, self.use_log_fbank, self.use_power = dither, use_log_fbank, use_power
        self.use_energy, self.raw_energy, self.energy_floor = use_energy, raw_energy, energy_floor
        self.htk_compat, self.subtract_mean = htk_compat, subtract_mean
        self.num_mel_bins = num_mel_bins
        self.num_features = num_mel_bins + use_energy
        self.register_buffer("window", feature_window(window, self.size, blackman_coeff), persistent=False)
        self.register_buffer(
            "banks", mel_banks(num_mel_bins, self.fft_size, sample_rate, low_freq, high_freq), persistent=False
        )

    @property
    def min_samples(self) -> int:
        """The shortest utterance that gives one frame."""
        return self.size if self.snip_edges else self.shift - self.shift // 2

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.snip_edges:
            return torch.where(
                lengths >= self.size, 1 + (lengths - self.size).div(self.shift, rounding_mode="floor"), 0
            )
        return (lengths + self.shift // 2).div(self.shift, rounding_mode="floor")

    def frames(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) -> frames (B, T, size) and frame lengths (B,). Frames past a length are garbage."""
        frame_lengths = self.frame_lengths(lengths)
        num_frames = max(int(frame_lengths.max()), 1)
        if not self.snip_edges:  # mirror each utterance at its own ends: [2 1 0 | 0 1 2 .. n-1 | n-1 n-2 ..]
            offset = self.size // 2 - self.shift // 2
            span = (num_frames - 1) * self.shift + self.size
            n = lengths.clamp(min=1)[:, None]
            position = (torch.arange(span, device=wave.device) - offset)[None] % (2 * n)  # (B, span)
            index = torch.where(position < n, position, 2 * n - 1 - position).clamp(max=wave.size(1) - 1)
            wave = wave.gather(1, index)
        needed = (num_frames - 1) * self.shift + self.size
        wave = nn.functional.pad(wave, (0, max(0, needed - wave.size(1))))
        return wave.unfold(1, self.size, self.shift)[:, :num_frames], frame_lengths  # (B, T, size)

    def mel_and_energy(
        self, wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(B, N), (B,) -> mel energies (B, T, num_mel_bins), log frame energy (B, T) or None, frame lengths (B,).
        Padded frames hold garbage here; `forward` zeroes them."""
        frames, frame_lengths = self.frames(wave, lengths)  # (B, T, size)
        if self.dither:
            noise = torch.randn(
                frames.shape, generator=generator, device=generator.device if generator is not None else "cpu"
            )
            frames = frames + self.dither * noise.to(frames)
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        energy = log_energy(frames, self.energy_floor) if self.use_energy and self.raw_energy else None
        if self.preemphasis:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[-1] := x[0], as Kaldi
            frames = frames - self.preemphasis * previous
        frames = nn.functional.pad(frames * self.window, (0, self.fft_size - self.size))  # (B, T, fft_size)
        if self.use_energy and not self.raw_energy:
            energy = log_energy(frames, self.energy_floor)
        spectrum = torch.fft.rfft(frames).abs()  # (B, T, fft_size // 2 + 1)
        if self.use_power:
            spectrum = spectrum.pow(2)
        mel = spectrum @ self.banks.T.to(spectrum)  # (B, T, num_mel_bins)
        if self.use_log_fbank:
            mel = mel.clamp(min=EPSILON).log()
        return mel, energy, frame_lengths

    def finish(self, feats: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Per-utterance mean removal when asked, and zeros past each frame length."""
        if self.subtract_mean:
            feats = subtract_utterance_means(feats, frame_lengths)
        mask = lengths_to_mask(frame_lengths, feats.size(1))
        return feats.masked_fill(~mask[..., None], 0.0)

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) waveforms and lengths (B,) -> (B, T, num_features) features, zero past each frame length,
        and (B,) frame lengths."""
        if lengths is None:
            lengths = torch.full((wave.size(0),), wave.size(1), device=wave.device)
        feats, energy, frame_lengths = self.mel_and_energy(wave, lengths, generator)
        if energy is not None:
            parts = [feats, energy[..., None]] if self.htk_compat else [energy[..., None], feats]
            feats = torch.cat(parts, dim=-1)
        return self.finish(feats, frame_lengths), frame_lengths


class Mfcc(nn.Module):
    """Kaldi-compatible MFCC (`compute-mfcc-feats`), equal to torchaudio's `compliance.kaldi.mfcc`: the
    orthonormal DCT-II of the log filterbank with C0 scaled by sqrt(1/M) as Kaldi does, then the
    sinusoidal cepstral lifter, in that order (folding the lifter into the DCT matrix rounds differently).
    `use_energy` puts the log frame energy in place of C0; `htk_compat` moves C0 (or the energy) last."""

    def __init__(
        self,
        num_ceps: int = 13,
        cepstral_lifter: float = 22.0,
        num_mel_bins: int = 23,
        use_energy: bool = False,
        htk_compat: bool = False,
        subtract_mean: bool = False,
        **fbank_options,
    ):
        super().__init__()
        if not 0 < num_ceps <= num_mel_bins:
            raise ConfigError(f"num_ceps must be in [1, num_mel_bins={num_mel_bins}], got {num_ceps}")
        self.fbank = Fbank(
            num_mel_bins=num_mel_bins,
            use_log_fbank=True,
            use_power=True,
            use_energy=use_energy,
            subtract_mean=subtract_mean,
            **fbank_options,
        )
        self.use_energy, self.htk_compat, self.num_features = use_energy, htk_compat, num_ceps
        # torchaudio's create_dct(M, M, "ortho")[:, :num_ceps] in float32, with Kaldi's C0 column
        n, k = torch.arange(float(num_mel_bins)), torch.arange(float(num_ceps))[:, None]
        dct = torch.cos(math.pi / float(num_mel_bins) * (n + 0.5) * k)  # (num_ceps, M)
        dct[0] *= 1.0 / math.sqrt(2.0)
        dct = (dct * math.sqrt(2.0 / float(num_mel_bins))).t()  # (M, num_ceps), column-major as torchaudio's
        dct[:, 0] = math.sqrt(1 / float(num_mel_bins))
        self.register_buffer("dct", dct, persistent=False)
        lifter = (
            1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * torch.arange(num_ceps) / cepstral_lifter)
            if cepstral_lifter
            else None
        )
        self.register_buffer("lifter", lifter, persistent=False)

    @property
    def min_samples(self) -> int:
        return self.fbank.min_samples

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.fbank.frame_lengths(lengths)

    def forward(self, wave, lengths=None, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N), (B,) -> (B, T, num_ceps), (B,)"""
        if lengths is None:
            lengths = torch.full((wave.size(0),), wave.size(1), device=wave.device)
        mel, energy, frame_lengths = self.fbank.mel_and_energy(wave, lengths, generator)  # (B, T, M), (B, T)
        feats = mel @ self.dct.to(mel)  # (B, T, num_ceps)
        if self.lifter is not None:
            feats = feats * self.lifter.to(feats)
        if energy is not None:
            feats = torch.cat([energy[..., None], feats[..., 1:]], dim=-1)
        if self.htk_compat:
            c0 = feats[..., :1] if self.use_energy else feats[..., :1] * math.sqrt(2)
            feats = torch.cat([feats[..., 1:], c0], dim=-1)
        return self.fbank.finish(feats, frame_lengths), frame_lengths


def masked_moments(
    feats: torch.Tensor, lengths: torch.Tensor, dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, sum and sum of squares of the real frames of (B, T, F) over `dims`, in float64."""
    mask = lengths_to_mask(lengths, feats.size(1))[..., None].to(torch.float64)  # (B, T, 1)
    x = feats.to(torch.float64) * mask
    return mask.expand_as(x).sum(dims), x.sum(dims), (x * x).sum(dims)


def normalize_utterances(
    feats: torch.Tensor, lengths: torch.Tensor, std: bool = True, eps: float = 1e-5
) -> torch.Tensor:
    """Per-utterance mean (and variance) normalisation over each utterance's real frames; padding stays 0."""
    count, total, squares = masked_moments(feats, lengths, dims=(1,))  # (B, F) each
    mean = total / count.clamp(min=1)
    out = feats - mean[:, None].to(feats)
    if std:
        var = (squares / count.clamp(min=1) - mean**2).clamp(min=0)
        out = out / (var + eps).sqrt()[:, None].to(feats)
    return out.masked_fill(~lengths_to_mask(lengths, feats.size(1))[..., None], 0.0)


def limit_dynamic_range(feats: torch.Tensor, lengths: torch.Tensor, range_db: float) -> torch.Tensor:
    """Raise log filterbank values (natural log of power) that lie more than `range_db` below their
    utterance's peak to that level: (B, T, F) -> (B, T, F), padding stays 0. What lies that far down is
    each recording's noise floor (or digital silence, or the log's epsilon), which tells the speaker and
    microphone, not the word; the peak moves with the level, so the floor does too (librosa's top_db)."""
    real = lengths_to_mask(lengths, feats.size(1))[..., None]  # (B, T, 1)
    peak = feats.masked_fill(~real, float("-inf")).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    floor = peak - range_db * math.log(10) / 10
    return torch.maximum(feats, floor).masked_fill(~real, 0.0)


class GlobalNormalizer(nn.Module):
    """Mean/variance normalisation with statistics over a whole training set (real frames only).

    Call `update` on training batches (it accumulates until `freeze`), then normalise with the module.
    The statistics are buffers, so they are saved in checkpoints with the model.
    """

    def __init__(self, num_features: int, std: bool = True, eps: float = 1e-5):
        super().__init__()
        self.std, self.eps = std, eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("squares", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, feats: torch.Tensor, lengths: torch.Tensor) -> int:
        """Add a batch's frames; returns how many utterances that was. Under DDP every rank calls this on
        its own batch and adds every rank's sums, so all ranks hold statistics of the global batch."""
        if self.frozen:
            return 0
        count, total, squares = masked_moments(feats, lengths, dims=(0, 1))
        utterances = torch.tensor([len(lengths)], dtype=torch.float64, device=total.device)
        count, total, squares, utterances = distributed.all_sum(count[0], total, squares, utterances)
        self.count += count
        self.total += total
        self.squares += squares
        return int(utterances.item())

    def freeze(self) -> None:
        self.frozen.fill_(True)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, F) normalised, padding 0."""
        if self.count == 0:
            raise DataError(
                "global feature normalisation has no statistics yet: call update() on training batches first"
            )
        mean = self.total / self.count
        out = feats - mean.to(feats)
        if self.std:
            var = (self.squares / self.count - mean**2).clamp(min=0)
            out = out / (var + self.eps).sqrt().to(feats)
        return out.masked_fill(~lengths_to_mask(lengths, feats.size(1))[..., None], 0.0)


# Our argument names -> torchaudio's (Kaldi's); the other options share their names.
KALDI_NAMES = {
    "sample_rate": "sample_frequency",
    "preemphasis": "preemphasis_coefficient",
    "window": "window_type",
    "frame_length_ms": "frame_length",
    "frame_shift_ms": "frame_shift",
}
FROM_KALDI = {kaldi: ours for ours, kaldi in KALDI_NAMES.items()}


def from_kaldi_names(options: dict) -> dict:
    return {FROM_KALDI.get(k, k): v for k, v in options.items()}


@dataclass
class KaldiOptions:
    """The Kaldi front-end settings a user may change (`data.kaldi.*`), in seqtrain's names; torchaudio's
    are in KALDI_NAMES. Left out: dither (augmentation adds noise where wanted, so features stay
    deterministic), and VTLN, which needs a warp factor estimated per speaker."""

    frame_length_ms: float = 25.0  # analysis window
    frame_shift_ms: float = 10.0  # hop between frames
    low_freq: float = 20.0  # lowest filterbank frequency (Hz)
    high_freq: float = 0.0  # <= 0: offset from Nyquist
    preemphasis: float = 0.97  # pre-emphasis coefficient
    remove_dc_offset: bool = True  # subtract each frame's mean
    window: str = "povey"  # povey, hanning, hamming, rectangular, blackman
    blackman_coeff: float = 0.42  # window=blackman: its coefficient
    round_to_power_of_two: bool = True  # FFT size rounded up to a power of two
    snip_edges: bool = True  # only frames that fit wholly in the signal
    use_energy: bool = False  # log frame energy as an extra feature (fbank) or in place of C0 (mfcc)
    raw_energy: bool = True  # use_energy: the energy before pre-emphasis and windowing
    energy_floor: float = 1.0  # use_energy: its floor
    htk_compat: bool = False  # HTK's layout of the energy feature
    subtract_mean: bool = False  # per-utterance mean removal (Kaldi's CMS)
    cepstral_lifter: float = 22.0  # mfcc only

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ConfigError(f"data.kaldi.window={self.window!r} is unknown; valid: {', '.join(WINDOWS)}")

    def arguments(self, kind: str) -> dict:
        """Keyword arguments of Fbank (kind "fbank") or Mfcc ("mfcc")."""
        options = asdict(self)
        if kind != "mfcc":
            del options["cepstral_lifter"]
        return options


def feature_extractor(kind: str, frontend: str = "torch", **options) -> nn.Module:
    """The fbank or mfcc front end, (B, N), (B,) -> (B, T, F), (B,): seqtrain's own (`frontend="torch"`)
    or torchaudio's Kaldi functions called one utterance at a time (`"torchaudio"`)."""
    if kind not in ("fbank", "mfcc"):
        raise ConfigError(f"unknown features {kind!r}; valid: fbank, mfcc")
    if frontend == "torchaudio":
        return TorchaudioFeatures(kind, **options)
    if frontend != "torch":
        raise ConfigError(f"model.frontend={frontend!r} is unknown; valid: torch, torchaudio")
    return Mfcc(**options) if kind == "mfcc" else Fbank(**options)


class TorchaudioFeatures(nn.Module):
    """torchaudio's `compliance.kaldi.fbank`/`.mfcc` behind seqtrain's batched interface: each utterance
    alone (the only way those functions take input), zero-padded to (B, T, F). Frame counts, the
    too-short check and padding follow seqtrain's own front end, which gives the same values."""

    def __init__(self, kind: str, **options):
        super().__init__()
        try:
            from torchaudio.compliance import kaldi
        except (ImportError, OSError) as error:  # OSError: a torchaudio built for another torch
            raise ConfigError(
                f"model.frontend=torchaudio needs torchaudio ({error}); install it with pip install "
                "'seqtrain[torchaudio]'"
            ) from None
        self.function = getattr(kaldi, kind)
        self.reference = feature_extractor(kind, **options)  # same frames and sizes; never computes features here
        self.options = {KALDI_NAMES.get(k, k): v for k, v in options.items()}
        self.options["sample_frequency"] = float(self.options.get("sample_frequency", 16000))
        self.num_features = self.reference.num_features

    @property
    def min_samples(self) -> int:
        return self.reference.min_samples

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.reference.frame_lengths(lengths)

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N), (B,) -> (B, T, F), (B,)"""
        if lengths is None:
            lengths = torch.full((wave.size(0),), wave.size(1), device=wave.device)
        frame_lengths = self.frame_lengths(lengths)
        feats = wave.new_zeros(wave.size(0), max(int(frame_lengths.max()), 1), self.num_features)
        for row, (n, frames) in enumerate(zip(lengths.tolist(), frame_lengths.tolist())):
            if frames:
                feats[row, :frames] = self.function(wave[row, :n][None], **self.options)
        return feats, frame_lengths
