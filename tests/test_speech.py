"""The speech recipe end to end: data options, readers and their splits, skipped files, training beats
chance, padding never changes a prediction, augmentation only in training, sample --audio, evaluate."""

from __future__ import annotations

import json

import pytest
import soundfile
import torch

from conftest import SHARED_DATA, assert_float32_close, seqtrain, write_wav
from seqtrain.config import compose
from seqtrain.data.audio_files import fsdd_entries
from seqtrain.data.synthetic_audio import SyntheticAudio
from seqtrain.models.audio_classifier import AudioClassifier, Augmentation
from seqtrain.recipes.speech import Speech
from seqtrain.rundir import load_model

TINY = [
    "data.size=320",
    "data.batch_size=16",
    "data.cache_audio=true",
    "model.cnn_channels=[8,16]",
    "model.rnn_hidden=32",
    "model.rnn_layers=1",
    "model.dnn_sizes=[32]",
    "optim.lr=0.005",
    "sched.warmup_steps=0",
    "trainer.max_steps=80",
    "trainer.max_epochs=null",
    "trainer.max_time=null",
    "trainer.log_every_steps=20",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CRDNN with the speaker head, trained 80 steps on the embedded default (with the cosine
    schedule, seeds 1-4 read 0.48-0.78; 40 steps were too close to the bar)."""
    run_dir = tmp_path_factory.mktemp("speech") / "run"
    result = seqtrain("fit", "recipe=speech", f"run_dir={run_dir}", "model.aux_head=speaker", *TINY)
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout.strip().splitlines()[-1])


def test_composes_with_each_data_option(tmp_path):
    for option, rate in (("synthetic_audio", 16000), ("fsdd", 8000), ("folder", 16000)):
        cfg = compose("speech", [f"data={option}", f"data.root={tmp_path}", "data.max_seconds=4"])
        assert cfg.data.sample_rate == rate and cfg.data.max_tokens == 4 * rate and cfg.data.batch_size is None
        assert cfg.trainer.early_stopping.monitor == "accuracy" and cfg.trainer.early_stopping.mode == "max"


def test_a_few_steps_beat_chance_and_report_both_accuracies(trained):
    run_dir, metrics = trained
    assert metrics["accuracy"] > 1 / 6 + 0.2  # six classes
    assert 0 <= metrics["speaker_accuracy"] <= 1 and "macro_f1" in metrics
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_the_speaker_adversarial_head_trains_and_reports_the_speaker_accuracy(tmp_path):
    steps = [o for o in TINY if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=20"]
    result = seqtrain(
        "fit", "recipe=speech", f"run_dir={tmp_path / 'run'}", "model.aux_head=speaker_adversarial", *steps
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= metrics["speaker_accuracy"] <= 1 and metrics["speaker_loss"] > 0


def test_padding_never_changes_a_prediction_through_the_recipe(trained):
    run_dir, _ = trained
    module, model, state = load_model(run_dir)
    prepared = module.prepare(compose("speech", TINY).data, state["vocab"], ("valid",))
    items = [prepared.splits["valid"][i] for i in range(5)]
    assert len({len(item["audio"]) for item in items}) > 1
    with torch.no_grad():
        together = module.predict(model, prepared.collate(items))
        for b, item in enumerate(items):
            alone = module.predict(model, prepared.collate([item]))
            assert_float32_close(together[b], alone[0])


def test_augmentation_only_in_training_and_global_statistics_freeze_after_one_pass():
    torch.manual_seed(0)
    model = AudioClassifier(16000, 3, freeze_after=4, cnn_channels=(4,), rnn_hidden=8, rnn_layers=1, dnn_sizes=(8,))
    wave, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    augment = Augmentation(
        speeds=(0.9, 1.1),
        max_margin=400,
        max_shift=200,
        max_gain_db=6.0,
        max_tilt_db=6.0,
        max_equalizer_db=6.0,
        snr_db=(5.0, 10.0),
        time_masks=2,
        freq_masks=2,
    )
    model(wave, lengths, augment)
    assert not model.normalizer.frozen
    model(wave, lengths, augment)
    assert model.normalizer.frozen and model.seen == 4
    model.eval()
    torch.testing.assert_close(model(wave, lengths, augment)["logits"], model(wave, lengths)["logits"])


def make_fsdd(root, speakers=("alice", "bob"), digits=range(3), indices=range(12)):
    for digit in digits:
        for speaker in speakers:
            for index in indices:
                write_wav(root / "recordings" / f"{digit}_{speaker}_{index}.wav", 0.05, 8000, seed=index)


def test_fsdd_reader_keeps_the_official_split_and_carves_validation(tmp_path, capsys):
    make_fsdd(tmp_path)
    write_wav(tmp_path / "recordings" / "notes.wav", 0.05, 8000)
    data = compose("speech", ["data=fsdd", f"data.root={tmp_path}", "data.max_skipped_fraction=0.1"]).data
    prepared = Speech().prepare(data, None, ("train", "valid", "test"))
    sizes = {split: len(dataset) for split, dataset in prepared.splits.items()}
    assert sizes == {"test": 30, "valid": 30, "train": 12}  # indices 0-4, 5-9, 10-11; 3 digits x 2 speakers
    assert prepared.vocab["classes"] == ["0", "1", "2"] and prepared.vocab["speakers"] == ["alice", "bob"]
    assert "notes.wav: the name is not {digit}_{speaker}_{index}.wav" in capsys.readouterr().err


def test_held_out_speakers_are_the_whole_test_split_and_never_trained_on(tmp_path):
    make_fsdd(tmp_path, speakers=("alice", "bob", "carol"))
    data = compose("speech", ["data=fsdd", f"data.root={tmp_path}", "data.test_speakers=[bob]"]).data
    prepared = Speech().prepare(data, None, ("train", "valid", "test"))
    sizes = {split: len(dataset) for split, dataset in prepared.splits.items()}
    assert sizes == {"test": 36, "valid": 30, "train": 42}  # bob's 3 x 12; indices 0-4 and 5-11 of alice and carol
    assert prepared.vocab["speakers"] == ["alice", "carol"] and set(prepared.splits["test"].dataset.speakers) == {-1}
    unknown = seqtrain(
        "fit",
        "recipe=speech",
        "data=fsdd",
        f"data.root={tmp_path}",
        "data.test_speakers=[dave]",
        f"run_dir={tmp_path / 'run'}",
    )
    assert unknown.exit_code == 2 and "data.test_speakers: dave not among the speakers" in unknown.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not (SHARED_DATA / "fsdd").is_dir(), reason="the shared FSDD copy is not here")
def test_real_fsdd_split_counts():
    entries, skipped = fsdd_entries(SHARED_DATA / "fsdd", valid_fraction=0.1)
    assert {split: len(e) for split, e in entries.items()} == {"test": 300, "valid": 300, "train": 2400} and not skipped
    assert {e.speaker for e in entries["test"]} == {e.speaker for e in entries["train"]} and len(
        {e.speaker for e in entries["train"]}
    ) == 6


def test_folder_layout_honours_validation_list(tmp_path):
    for label in ("yes", "no"):
        for i in range(10):
            write_wav(tmp_path / label / f"spk{i}_nohash_0.wav", seed=i)
    write_wav(tmp_path / "_background_noise_" / "white.wav", 0.5)
    (tmp_path / "validation_list.txt").write_text("yes/spk0_nohash_0.wav\nno/spk1_nohash_0.wav\n")
    data = compose("speech", ["data=folder", f"data.root={tmp_path}", "data.test_fraction=0.3"]).data
    prepared = Speech().prepare(data, None, ("train", "valid", "test"))
    valid = prepared.splits["valid"].dataset
    assert sorted(p.parent.name + "/" + p.name for p in valid.paths) == [
        "no/spk1_nohash_0.wav",
        "yes/spk0_nohash_0.wav",
    ]
    assert prepared.vocab["classes"] == ["no", "yes"]
    assert 0 < len(prepared.splits["test"]) < 18 and len(prepared.splits["train"]) + len(prepared.splits["test"]) == 18


def bad_folder(root):
    for i in range(6):
        write_wav(root / "go" / f"good{i}.wav", seed=i)
    good = (root / "go" / "good0.wav").read_bytes()
    (root / "go" / "truncated.wav").write_bytes(good[:30])
    write_wav(root / "go" / "empty.wav", 0.0)
    (root / "go" / "notes.wav").write_text("not audio at all\n")
    return root


def test_unreadable_and_empty_files_are_skipped_with_reasons(tmp_path, capsys):
    data = compose(
        "speech",
        [
            "data=folder",
            f"data.root={bad_folder(tmp_path)}",
            "data.max_skipped_fraction=0.5",
            "data.valid_fraction=0.01",
            "data.test_fraction=0",
        ],
    ).data
    prepared = Speech().prepare(data, None, ("train",))
    assert len(prepared.splits["train"]) == 6
    err = capsys.readouterr().err
    assert "empty.wav: the file holds no audio samples" in err
    assert "truncated.wav: not a readable audio file" in err and "notes.wav: not a readable audio file" in err
    assert "skipped 3 of 9 audio files" in err


def test_clips_shorter_than_one_frame_are_skipped_and_counted(tmp_path, capsys):
    for i in range(6):
        write_wav(tmp_path / "go" / f"good{i}.wav", seed=i)
    write_wav(tmp_path / "go" / "click.wav", seconds=0.012)  # 192 samples at 16 kHz: under one 25 ms window (400)
    data = compose(
        "speech",
        [
            "data=folder",
            f"data.root={tmp_path}",
            "data.max_skipped_fraction=0.5",
            "data.valid_fraction=0.01",
            "data.test_fraction=0",
            "data.augment.speed_perturb=false",
        ],
    ).data
    assert len(Speech().prepare(data, None, ("train",)).splits["train"]) == 6
    err = capsys.readouterr().err
    assert "click.wav: shorter than one feature frame (192 samples at 16000 Hz < 400)" in err
    assert "skipped 1 of 7 audio files: 1 shorter than one feature frame" in err
    # the window follows data.kaldi: 10 ms frames fit in the click
    short_frames = compose(
        "speech",
        [
            "data=folder",
            f"data.root={tmp_path}",
            "data.valid_fraction=0.01",
            "data.test_fraction=0",
            "data.kaldi.frame_length_ms=10",
        ],
    ).data
    assert len(Speech().prepare(short_frames, None, ("train",)).splits["train"]) == 7


def test_speed_perturbation_raises_the_training_minimum(tmp_path, capsys):
    for i in range(6):
        write_wav(tmp_path / "go" / f"good{i}.wav", seed=i)
    write_wav(tmp_path / "go" / "edge.wav", seconds=0.026)  # 416 samples: one frame, but 379 at speed 1.1
    data = compose(
        "speech",
        [
            "data=folder",
            f"data.root={tmp_path}",
            "data.max_skipped_fraction=0.5",
            "data.valid_fraction=0.01",
            "data.test_fraction=0",
            "data.augment.speed_perturb=true",
        ],
    ).data
    assert len(Speech().prepare(data, None, ("train",)).splits["train"]) == 6
    assert "edge.wav: shorter than one feature frame (416 samples at 16000 Hz < 439)" in capsys.readouterr().err


def test_kaldi_options_reach_the_model_through_the_vocabulary():
    cfg = compose(
        "speech",
        [
            *TINY,
            "model.features=mfcc",
            "data.kaldi.window=blackman",
            "data.kaldi.use_energy=true",
            "data.kaldi.cepstral_lifter=0",
        ],
    )
    prepared = Speech().prepare(cfg.data, None, ("train",))
    assert prepared.vocab["kaldi"]["window"] == "blackman"
    model = Speech().build_model(cfg.model, prepared.vocab)
    assert model.features.use_energy and model.features.lifter is None
    default = Speech().build_model(cfg.model, {**prepared.vocab, "kaldi": {}})  # runs from before data.kaldi: defaults
    assert not torch.equal(model.features.fbank.window, default.features.fbank.window)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.frontend=sox", "model.frontend='sox' is unknown; valid: torch, torchaudio"),
        (
            "data.kaldi.window=kaiser",
            "data.kaldi.window='kaiser' is unknown; valid: povey, hanning, hamming, rectangular, blackman",
        ),
        (
            "model.features=mfcc data.augment.freq_warp=0.1",
            "data.augment.freq_warp stretches filterbank channels: it needs model.features=fbank",
        ),
        ("data.augment.freq_warp=0.7", "data.augment.freq_warp must be in [0, 0.5), got 0.7"),
        (
            "model.features=mfcc model.dynamic_range_db=60",
            "model.dynamic_range_db limits log filterbanks: it needs model.features=fbank and a positive value, got "
            "60.0 with mfcc",
        ),
        ("data.augment.margin_ms=-5", "data.augment.margin_ms must be >= 0 (0 = off), got -5.0"),
        ("data.augment.tilt_db=-3", "data.augment.tilt_db must be >= 0 (a range either way), got -3.0"),
        ("data.augment.snr_db=[20]", "data.augment.snr_db must be [low, high] with low <= high, got [20.0]"),
        ("data.augment.speeds=[0.9,0]", "data.augment.speeds must be positive speeds, got [0.9, 0.0]"),
        (
            "model.aux_head=voice",
            "model.aux_head must be null, speaker or speaker_adversarial (got 'voice') and model.aux_weight >= 0",
        ),
    ],
)
def test_bad_front_end_settings_are_one_line(tmp_path, override, message):
    result = seqtrain("fit", "recipe=speech", *override.split(), f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n" and not (tmp_path / "run").exists()


def test_too_many_skipped_files_stop_with_one_line(tmp_path):
    result = seqtrain(
        "fit", "recipe=speech", "data=folder", f"data.root={bad_folder(tmp_path)}", f"run_dir={tmp_path / 'run'}"
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: 3 of ")
    assert "data.max_skipped_fraction=0.05" in result.stderr and not (tmp_path / "run").exists()


def test_sample_audio_prints_label_and_probabilities(trained, tmp_path):
    run_dir, _ = trained
    clip = tmp_path / "clip.wav"
    soundfile.write(str(clip), SyntheticAudio(1, seed=9)[0]["audio"].numpy(), 16000)
    result = seqtrain("sample", str(run_dir), "--audio", str(clip))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["audio"] == str(clip) and out["label"] in out["probabilities"]
    assert sum(out["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    missing = seqtrain("sample", str(run_dir), "--audio", str(tmp_path / "nope.wav"))
    assert missing.exit_code == 2 and "nope.wav: not a readable audio file" in missing.stderr
    click = write_wav(tmp_path / "click.wav", seconds=0.01)
    short = seqtrain("sample", str(run_dir), "--audio", str(click))
    assert (
        short.exit_code == 2
        and short.stderr == f"error: {click}: shorter than one feature frame (160 samples at 16000 Hz < 400)\n"
    )


def test_evaluate_scores_the_test_split(trained):
    run_dir, _ = trained
    result = seqtrain("evaluate", str(run_dir), "split=test")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 80 and len(report["confusion_matrix"]) == 6
    assert sum(map(sum, report["confusion_matrix"])) == 80 and 0 <= report["macro_f1"] <= report["accuracy"] + 1
