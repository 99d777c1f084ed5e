"""The audio front end: reading, resampling, Kaldi-compatible features, normalisation, augmentation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from seqtrain.data import audio, augment
from seqtrain.errors import ConfigError, DataError

FIXTURE = Path(__file__).parent / "fixtures" / "kaldi_fbank_reference.pt"
EPS32 = torch.finfo(torch.float32).eps

# Each case: (function, utterances, Kaldi keyword arguments). The stored reference is live torchaudio
# 2.11's compliance/kaldi.py run in float64 on `reference_signals()` (fixtures/make_kaldi_reference.py).
CASES = {
    "fbank40": ("fbank", (0, 1), dict(num_mel_bins=40)),
    "fbank23_8k_no_snip": ("fbank", (1,), dict(num_mel_bins=23, sample_frequency=8000.0, snip_edges=False)),
    "fbank_hamming_plain": (
        "fbank",
        (0, 1),
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
    "fbank_blackman_energy": (
        "fbank",
        (0, 1),
        dict(num_mel_bins=40, window_type="blackman", use_energy=True, energy_floor=0.0),
    ),
    "fbank_energy_htk_windowed": (
        "fbank",
        (0,),
        dict(num_mel_bins=23, use_energy=True, raw_energy=False, htk_compat=True),
    ),
    "mfcc13": ("mfcc", (0, 1), dict(num_mel_bins=23, num_ceps=13, cepstral_lifter=22.0)),
    "mfcc_energy_blackman": (
        "mfcc",
        (0, 1),
        dict(num_mel_bins=23, num_ceps=13, use_energy=True, window_type="blackman"),
    ),
    "mfcc_htk_no_lifter": ("mfcc", (1,), dict(num_mel_bins=30, num_ceps=20, htk_compat=True, cepstral_lifter=0.0)),
}
# Options that the stored cases leave out and the live comparison covers.
LIVE_ONLY = {
    "fbank_subtract_mean": ("fbank", (0, 1), dict(num_mel_bins=40, subtract_mean=True, use_energy=True)),
    "fbank_linear_magnitude": (
        "fbank",
        (0, 1),
        dict(num_mel_bins=30, window_type="hanning", use_log_fbank=False, use_power=False),
    ),
    "mfcc_subtract_mean_no_snip": (
        "mfcc",
        (0, 1),
        dict(num_mel_bins=23, num_ceps=13, subtract_mean=True, snip_edges=False),
    ),
}


def reference_signals() -> list[torch.Tensor]:
    """Two deterministic utterances (3200 and 2300 samples): two tones, a chirp and integer LCG noise."""
    n = torch.arange(3200, dtype=torch.float64)
    t = n / 16000
    lcg = ((n.long() * 1103515245 + 12345) % 2**31).double() / 2**31 - 0.5  # exact in integer arithmetic
    first = 0.4 * torch.sin(2 * math.pi * 440 * t) + 0.25 * torch.sin(2 * math.pi * 1250 * t + 0.5) + 0.05 * lcg
    second = 0.3 * torch.sin(2 * math.pi * (300 * t + 6000 * t**2)) + 0.1 * lcg.flip(0)
    return [first.float(), second[:2300].float()]


def ours(function: str, kaldi_args: dict) -> torch.nn.Module:
    return audio.feature_extractor(function, **audio.from_kaldi_names(kaldi_args))


def batched(function: str, utterances: tuple[int, ...], kaldi_args: dict, dtype=torch.float32) -> list[torch.Tensor]:
    """Our features for the case's utterances, computed as one padded batch, split per utterance."""
    signals = [reference_signals()[i].to(dtype) for i in utterances]
    wave = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True)
    lengths = torch.tensor([len(s) for s in signals])
    feats, frame_lengths = ours(function, kaldi_args)(wave, lengths)
    assert (feats[0, frame_lengths[0] :] == 0).all() and (feats[-1, frame_lengths[-1] :] == 0).all()
    return [f[:n] for f, n in zip(feats, frame_lengths.tolist())]


def log_tolerance(log_energies: torch.Tensor) -> torch.Tensor:
    """How far float32 may move each log filter energy (T, F): the rounding of an FFT and a sum is a few
    ulps of the frame's largest energy, not of the bin's own, so a bin 1e6 below its frame's peak may
    move by ~1e-6 x 1e6 ulps in the log. 2**9 ulps covers any FFT/BLAS build's order of summation."""
    energies = log_energies.double().exp()
    absolute = 2**9 * EPS32 * energies.amax(-1, keepdim=True)  # (T, 1)
    return torch.log1p(absolute / energies) + 2**4 * EPS32 * log_energies.double().abs()


@pytest.mark.parametrize("case", CASES)
def test_float32_features_match_torchaudio_float64_within_float32_precision(case):
    reference = torch.load(FIXTURE, weights_only=True)
    function, utterances, kaldi_args = CASES[case]
    for index, (got, expected) in enumerate(
        zip(batched(function, utterances, kaldi_args), reference[case], strict=True)
    ):
        assert got.shape == expected.shape
        if function == "fbank":
            bound = log_tolerance(expected)
        else:  # the cepstra are a lifted DCT of the log filterbank: its tolerance carries through
            log_mel = reference[f"{case}/log_mel"][index]
            mfcc = ours(function, kaldi_args)
            lifter = (
                mfcc.lifter.double() if mfcc.lifter is not None else torch.ones(mfcc.num_features, dtype=torch.float64)
            )
            bound = (log_tolerance(log_mel) @ mfcc.dct.double().abs()) * lifter
            if kaldi_args.get("use_energy"):
                bound[:, 0] = log_tolerance(expected[:, :1])[:, 0]
            if kaldi_args.get("htk_compat"):
                bound = torch.cat([bound[:, 1:], bound[:, :1] * math.sqrt(2)], dim=1)
        error = (got.double() - expected).abs()
        assert (error <= bound).all(), f"error up to {float((error / bound).max()):.3g} times the float32 bound"


def test_double_precision_input_gives_double_features_close_to_torchaudio_in_double():
    reference = torch.load(FIXTURE, weights_only=True)
    for got, expected in zip(
        batched("fbank", (0, 1), dict(num_mel_bins=40), dtype=torch.float64), reference["fbank40"]
    ):
        assert got.dtype == torch.float64
        # ours holds its window (and filters) in float32, rounded once; torchaudio computes its window in float64
        assert ((got - expected).abs() <= log_tolerance(expected)).all()


@pytest.mark.parametrize("case", [*CASES, *LIVE_ONLY])
def test_features_equal_live_torchaudio_exactly(case):
    kaldi = pytest.importorskip(
        "torchaudio.compliance.kaldi", reason="torchaudio is not installed (make parity tests it)"
    )
    function, utterances, kaldi_args = {**CASES, **LIVE_ONLY}[case]
    signals = [reference_signals()[i] for i in utterances]
    expected = [getattr(kaldi, function)(s[None], dither=0.0, **kaldi_args) for s in signals]
    for got, want in zip(batched(function, utterances, kaldi_args), expected, strict=True):
        assert torch.equal(got, want), f"largest difference {float((got - want).abs().max()):.3g}"


@pytest.mark.parametrize("function", ["fbank", "mfcc"])
def test_torchaudio_frontend_gives_the_same_batch_as_ours(function):
    pytest.importorskip("torchaudio.compliance.kaldi", reason="torchaudio is not installed (make parity tests it)")
    signals = reference_signals()
    wave, lengths = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True), torch.tensor([len(s) for s in signals])
    options = dict(sample_rate=16000, num_mel_bins=23, use_energy=True)
    got, got_lengths = audio.feature_extractor(function, "torchaudio", **options)(wave, lengths)
    want, want_lengths = audio.feature_extractor(function, "torch", **options)(wave, lengths)
    assert torch.equal(got_lengths, want_lengths) and torch.equal(got, want)


def test_torchaudio_frontend_without_torchaudio_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "torchaudio.compliance", None)
    with pytest.raises(ConfigError, match=r"pip install 'seqtrain\[torchaudio\]'") as error:
        audio.feature_extractor("fbank", "torchaudio", sample_rate=16000)
    assert "\n" not in str(error.value)


def test_subtract_mean_removes_each_utterances_own_mean_over_real_frames():
    signals = reference_signals()
    wave, lengths = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True), torch.tensor([len(s) for s in signals])
    plain, frames = audio.Fbank(num_mel_bins=23)(wave, lengths)
    centred, _ = audio.Fbank(num_mel_bins=23, subtract_mean=True)(wave, lengths)
    for row, n in enumerate(frames.tolist()):
        torch.testing.assert_close(centred[row, :n], plain[row, :n] - plain[row, :n].mean(0), rtol=0, atol=0)
        assert (centred[row, n:] == 0).all()


def test_energy_is_the_first_feature_and_respects_its_floor():
    quiet = reference_signals()[0][None] * 1e-4  # frame energies far below 1
    feats, _ = audio.Fbank(num_mel_bins=23, use_energy=True)(quiet)  # torchaudio's energy_floor=1: log floor 0
    assert feats.shape[-1] == 24 and (feats[0, :, 0] == 0).all()
    unfloored, _ = audio.Fbank(num_mel_bins=23, use_energy=True, energy_floor=0.0)(quiet)
    assert (unfloored[0, :, 0] < 0).all() and torch.equal(unfloored[..., 1:], feats[..., 1:])


def sine(freq: float, rate: int, n: int, phase: float = 0.0) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / rate + phase).float()


@pytest.mark.parametrize("orig, new", [(16000, 8000), (8000, 16000), (44100, 16000), (8000, 22050)])
def test_resample_matches_a_known_sine(orig, new):
    n = orig // 2
    out = audio.resample(sine(440, orig, n)[None], orig, new)[0]
    assert len(out) == math.ceil(n * new / orig)
    edge = new // 50  # the filter sees the zeros past either end in the first and last 20 ms
    error = (out - sine(440, new, len(out)))[edge:-edge].abs().max()
    assert error < 2e-3


def test_resample_batch_equals_each_utterance_alone():
    a, b = sine(300, 16000, 4000), sine(700, 16000, 2500)
    batch = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    out = audio.resample(batch, 16000, 11025)
    lengths = audio.resampled_lengths(torch.tensor([4000, 2500]), 16000, 11025)
    for row, single, n in zip(out, [a, b], lengths.tolist()):
        torch.testing.assert_close(row[:n], audio.resample(single[None], 16000, 11025)[0], atol=1e-6, rtol=0)


def test_load_audio_mixes_down_and_resamples(tmp_path):
    left, right = sine(440, 44100, 22050), 0.5 * sine(440, 44100, 22050)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, torch.stack([left, right], 1).numpy(), 44100)
    wave = audio.load_audio(path, 16000)
    assert wave.dtype == torch.float32 and wave.shape == (8000,)
    error = (wave - 0.75 * sine(440, 16000, 8000))[320:-320].abs().max()
    assert error < 2e-3  # flac is 16-bit: quantisation plus the resampler


@pytest.mark.parametrize("content", [b"", b"not audio at all\n", None])
def test_unreadable_empty_or_missing_files_are_one_line_data_errors(tmp_path, content):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as error:
        audio.load_audio(path, 16000)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_wav_without_samples_is_a_data_error(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0, 1), dtype="float32"), 16000)
    with pytest.raises(DataError, match="no audio samples"):
        audio.load_audio(path, 16000)


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_padding_never_changes_features(snip_edges, device):
    signals = reference_signals()
    fbank = audio.Fbank(num_mel_bins=40, snip_edges=snip_edges).to(device)
    wave = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True).to(device)
    wave[1, len(signals[1]) :] = 7.0  # garbage in the padding must not leak into real frames
    feats, frame_lengths = fbank(wave, torch.tensor([len(s) for s in signals], device=device))
    for row, n, signal in zip(feats, frame_lengths.tolist(), signals):
        alone, alone_lengths = fbank(signal[None].to(device))
        assert alone_lengths.item() == n
        torch.testing.assert_close(row[:n], alone[0], atol=1e-5, rtol=0)
        assert (row[n:] == 0).all()


def test_dither_draws_from_the_given_generator():
    wave = reference_signals()[0][None]
    fbank = audio.Fbank(dither=1.0)
    first = fbank(wave, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(first, fbank(wave, generator=torch.Generator().manual_seed(3))[0])
    assert not torch.equal(first, fbank(wave, generator=torch.Generator().manual_seed(4))[0])


def padded_features() -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 12, 5) random features with lengths 12, 7, 3 and garbage in the padding."""
    feats = torch.randn(3, 12, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    lengths = torch.tensor([12, 7, 3])
    feats[1, 7:] = 100.0
    feats[2, 3:] = -50.0
    return feats, lengths


def test_utterance_normalisation_uses_real_frames_only():
    feats, lengths = padded_features()
    out = audio.normalize_utterances(feats, lengths)
    for row, n in zip(out, lengths.tolist()):
        torch.testing.assert_close(row[:n].mean(0), torch.zeros(5), atol=1e-5, rtol=0)
        torch.testing.assert_close(row[:n].var(0, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
        assert (row[n:] == 0).all()


def test_dynamic_range_limit_raises_the_floor_below_each_real_peak_and_follows_the_level():
    feats, lengths = padded_features()  # padding holds 100 and -50: neither may count
    out = audio.limit_dynamic_range(feats, lengths, range_db=30.0)
    for row, limited, n in zip(feats, out, lengths.tolist()):
        floor = row[:n].max() - 3 * math.log(10)  # 30 dB of power in natural-log units
        torch.testing.assert_close(limited[:n], row[:n].clamp(min=float(floor)))
        assert (limited[n:] == 0).all()
    louder = audio.limit_dynamic_range(feats + 2.0, lengths, range_db=30.0)  # a gain: every log value + 2
    for a, b, n in zip(out, louder, lengths.tolist()):
        torch.testing.assert_close(b[:n], a[:n] + 2.0)


def test_global_normalisation_matches_statistics_of_all_real_frames():
    feats, lengths = padded_features()
    real = torch.cat([row[:n] for row, n in zip(feats, lengths.tolist())]).double()  # (22, 5)
    norm = audio.GlobalNormalizer(5)
    norm.update(feats[:2], lengths[:2])
    norm.update(feats[2:], lengths[2:])
    norm.freeze()
    norm.update(feats * 10, lengths)  # frozen: ignored
    out = norm(feats, lengths)
    expected = (real - real.mean(0)) / (real.var(0, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(out[0].double(), expected[:12], atol=1e-5, rtol=0)
    assert (out[1, 7:] == 0).all()
    restored = audio.GlobalNormalizer(5)
    restored.load_state_dict(norm.state_dict())  # the statistics travel with the checkpoint
    assert torch.equal(restored(feats, lengths), out)


def test_spec_augment_masks_bands_inside_each_utterance():
    feats, lengths = padded_features()
    feats = audio.normalize_utterances(feats, lengths) + 10  # no real value is 0 ...
    feats[1, 7:], feats[2, 3:] = 0, 0  # ... and padding is
    out = augment.spec_augment(
        feats,
        lengths,
        torch.Generator().manual_seed(0),
        time_masks=2,
        max_time_width=4,
        max_time_fraction=0.5,
        freq_masks=1,
        max_freq_width=2,
    )
    again = augment.spec_augment(
        feats,
        lengths,
        torch.Generator().manual_seed(0),
        time_masks=2,
        max_time_width=4,
        max_time_fraction=0.5,
        freq_masks=1,
        max_freq_width=2,
    )
    assert torch.equal(out, again)
    for row, n in zip(out, lengths.tolist()):
        assert (row[n:] == 0).all()
        zero_frames = (row[:n] == 0).all(1).sum()
        assert zero_frames <= 2 * min(4, int(n * 0.5))
        assert (row[:n] == 0).all(0).sum() <= 2 or zero_frames == n  # at most one band of 2 bins
    assert (out == 0).any()


def test_frequency_warp_moves_a_formant_by_the_drawn_factor_and_leaves_padding_silent():
    bins = torch.arange(40.0)
    feats = torch.exp(-((bins - 20) ** 2) / 4).expand(3, 6, 40).clone()  # one peak at bin 20 in every frame
    feats[1, 4:] = 0  # padding frames
    generator = torch.Generator().manual_seed(3)
    factors = 1 + (torch.rand(3, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.2  # as the warp draws them
    out = augment.frequency_warp(feats, generator, 0.2)
    for row, factor in zip(out, factors.tolist()):
        peak = (row[0] * bins).sum() / row[0].sum()  # the peak's centre
        assert abs(peak - 20 * factor) < 0.3
    assert (out[1, 4:] == 0).all()
    assert torch.equal(augment.frequency_warp(feats, torch.Generator().manual_seed(3), 0.0), feats)


def test_add_noise_reaches_the_drawn_snr_and_leaves_padding_silent():
    wave = torch.nn.utils.rnn.pad_sequence([sine(440, 16000, 16000), 0.1 * sine(900, 16000, 8000)], batch_first=True)
    lengths = torch.tensor([16000, 8000])
    out = augment.add_noise(wave, lengths, torch.Generator().manual_seed(1), snr_db=(10.0, 10.0))
    assert (out[1, 8000:] == 0).all()
    for clean, noisy, n in zip(wave, out, lengths.tolist()):
        noise = (noisy - clean)[:n]
        snr = 10 * torch.log10(clean[:n].pow(2).mean() / noise.pow(2).mean())
        assert abs(float(snr) - 10.0) < 1e-3


def test_speed_perturbation_changes_tempo_and_pitch():
    wave = torch.nn.utils.rnn.pad_sequence([sine(1000, 16000, 16000), sine(1000, 16000, 8000)], batch_first=True)
    lengths = torch.tensor([16000, 8000])
    out, new_lengths = augment.speed_perturb(wave, lengths, torch.Generator().manual_seed(0), factors=(1.25,))
    assert new_lengths.tolist() == [12800, 6400] and out.size(1) == 12800
    assert (out[1, 6400:] == 0).all()
    spectrum = torch.fft.rfft(out[0, :12800]).abs()
    assert int(spectrum.argmax()) * 16000 / 12800 == pytest.approx(1250, abs=2)  # played 1.25 times faster


def test_random_gain_scales_each_utterance_within_the_range_and_keeps_padding():
    wave = torch.ones(64, 10)
    wave[:, 8:] = 0  # padding
    out = augment.random_gain(wave, torch.Generator().manual_seed(0), max_db=6.0)
    gains_db = 20 * out[:, 0].log10()
    assert (out[:, 8:] == 0).all() and torch.equal(out[:, :8], out[:, :1].expand(64, 8))  # one gain per utterance
    assert gains_db.abs().max() <= 6.0 + 1e-4 and gains_db.min() < -3 and gains_db.max() > 3  # spread over the range


def noise_batch_with_a_short_row() -> tuple[torch.Tensor, torch.Tensor]:
    """32 rows of 4,000 samples of white noise; row 0 is 3,000 long, zero-padded after."""
    torch.manual_seed(0)
    wave = torch.randn(32, 4000)
    lengths = torch.full((32,), 4000)
    lengths[0] = 3000
    wave[0, 3000:] = 0
    return wave, lengths


def test_random_tilt_raises_or_lowers_the_highs_against_the_lows_within_the_range():
    wave, lengths = noise_batch_with_a_short_row()
    out = augment.random_tilt(wave, lengths, torch.Generator().manual_seed(0), max_db=12.0)
    assert (out[0, 3000:] == 0).all()
    power_in, power_out = torch.fft.rfft(wave).abs().pow(2), torch.fft.rfft(out).abs().pow(2)
    band = power_in.size(1) // 8  # the lowest and the highest eighth of the band

    def tilt(power):
        return 10 * (power[:, -band:].mean(1) / power[:, :band].mean(1)).log10()

    change = tilt(power_out) - tilt(power_in)  # the filter's tilt between those bands, each row
    assert change.abs().max() < 12.0 and change.min() < -4 and change.max() > 4


def test_random_equalizer_bends_the_spectrum_within_the_range_and_keeps_padding_silent():
    wave, lengths = noise_batch_with_a_short_row()
    out = augment.random_equalizer(wave, lengths, torch.Generator().manual_seed(0), max_db=12.0)
    assert (out[0, 3000:] == 0).all()
    bands = torch.stack(
        [(torch.fft.rfft(x[1:])[:, 1:].abs().pow(2)).view(31, 8, -1).mean(2) for x in (wave, out)]
    )  # (in/out, rows, eight bands) of the full-length rows
    change_db = 10 * (bands[1] / bands[0]).log10()  # (rows, bands)
    assert change_db.abs().max() < 12.0 and change_db.max() > 4 and change_db.min() < -4
    assert change_db.mean(1).abs().max() < 2.0  # 0 dB on average over the band: the level is random_gain's
    assert (change_db.max(1).values - change_db.min(1).values).max() > 6  # not one flat gain per row


def test_silence_margins_surround_each_utterance_with_quiet_noise_and_keep_it_whole():
    wave, lengths = noise_batch_with_a_short_row()
    out, new_lengths = augment.silence_margins(wave, lengths, torch.Generator().manual_seed(0), max_samples=800)
    added = new_lengths - lengths
    assert out.size(1) == int(new_lengths.max()) and added.min() >= 0 and added.max() <= 1600
    assert added.float().std() > 100  # margins drawn per utterance, not one for the batch
    assert 0 < (added == 0).sum() < 16  # some clips stay cut tight at both ends (a quarter of them, on average)
    for row, n, x, m in zip(out, new_lengths.tolist(), wave, lengths.tolist()):
        assert (row[n:] == 0).all()  # padding stays zero
        matches = [lead for lead in range(n - m + 1) if torch.equal(row[lead : lead + m], x[:m])]
        assert len(matches) == 1  # the utterance itself, unchanged and in one piece
        lead = matches[0]
        margins = torch.cat([row[:lead], row[lead + m : n]])
        if len(margins) > 50:
            below_db = 10 * torch.log10(x[:m].pow(2).mean() / margins.pow(2).mean())
            assert 20 - 3 < below_db < 60 + 3  # quiet: 20-60 dB below the utterance (sampling error aside)
            assert (margins != 0).all()  # noise, not digital silence


def test_time_shift_moves_content_inside_each_length():
    wave = torch.arange(1, 11, dtype=torch.float32).repeat(2, 1)  # (2, 10), values 1..10
    lengths = torch.tensor([10, 6])
    wave[1, 6:] = 0
    out = augment.time_shift(wave, lengths, torch.Generator().manual_seed(5), max_shift=3)
    assert (out[1, 6:] == 0).all()
    for row, n in zip(out, lengths.tolist()):
        real = row[:n][row[:n] != 0]
        assert len(real) >= n - 3
        assert torch.equal(real, torch.arange(real[0], real[0] + len(real)))  # a contiguous stretch, in order
    shifts = {int((row != 0).nonzero()[0]) - int(row[row != 0][0]) + 1 for row in out}
    assert all(abs(s) <= 3 for s in shifts)
