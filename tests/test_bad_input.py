"""Bad input, table-driven, across the four recipes: each case is one line on stderr starting with
`error:`, a specific message, a specific exit code, no traceback, and no earlier work touched.

The earlier work is a char_lm run and a speech run made once for the module; every file under them
is hashed before and after the whole table.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import seqtrain, tiny_overrides, write_wav
from seqtrain import checkpoint

SPEECH_TINY = [
    "data.size=48",
    "data.num_classes=2",
    "data.num_speakers=2",
    "data.batch_size=16",
    "model.cnn_channels=[4]",
    "model.rnn_hidden=8",
    "model.rnn_layers=1",
    "model.dnn_sizes=[8]",
    "trainer.max_steps=1",
    "trainer.max_epochs=null",
    "trainer.max_time=null",
    "trainer.log_every_steps=1",
]


@pytest.fixture(scope="module")
def world(corpus, tmp_path_factory) -> dict[str, Path]:
    """Earlier runs to protect, and the bad files the table points at."""
    root = tmp_path_factory.mktemp("bad_input")
    lm, speech = root / "lm", root / "speech"
    assert (
        seqtrain("fit", "recipe=char_lm", *tiny_overrides(corpus, f"run_dir={lm}", "trainer.max_steps=5")).exit_code
        == 0
    )
    assert seqtrain("fit", "recipe=speech", f"run_dir={speech}", *SPEECH_TINY).exit_code == 0
    files = root / "files"
    files.mkdir()
    (files / "empty.txt").write_text("")
    (files / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    (files / "nolabel.tsv").write_text("text\tscore\ngood film\t1\nbad film\t0\n")
    (files / "src.txt").write_text("a b\nc d\ne f\n")
    (files / "tgt.txt").write_text("x y\nz w\n")
    wav = write_wav(files / "clip.wav").read_bytes()
    (files / "truncated.wav").write_bytes(wav[:30])
    write_wav(files / "empty.wav", 0.0)
    (files / "notes.txt").write_text("this is text, not audio\n")
    for i in range(4):  # a speech folder whose every file is torn
        (files / "torn" / "go").mkdir(parents=True, exist_ok=True)
        (files / "torn" / "go" / f"{i}.wav").write_bytes(wav[:30])
    truncated = root / "truncated_run"
    shutil.copytree(lm, truncated)
    best = truncated / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:300])
    other = root / "other_recipe_run"
    shutil.copytree(lm, other)
    speech_state = torch.load(speech / "checkpoints" / "best.pt", weights_only=True)
    checkpoint.save({k: v for k, v in speech_state.items() if k != "format_version"}, other / "checkpoints" / "best.pt")
    torch.save({"format_version": checkpoint.FORMAT_VERSION + 1, "recipe": "char_lm"}, files / "newer.pt")
    (files / "model").mkdir()
    (files / "model" / "evil.yaml").write_text('_target_: os.system\n_args_: ["echo pwned"]\n')
    return {
        "lm": lm,
        "speech": speech,
        "files": files,
        "truncated": truncated,
        "other": other,
        "root": root,
        "corpus": corpus,
    }


def tiny(world, *extra):
    return ["recipe=char_lm", *tiny_overrides(world["corpus"], *extra)]


# (id, command builder, exit code, expected message fragment)
CASES = [
    (
        "unknown recipe",
        lambda w: ["fit", "recipe=nope"],
        2,
        "unknown recipe 'nope'; valid: char_lm, sentiment, seq2seq, speech",
    ),
    ("no recipe", lambda w: ["fit", "optim.lr=1"], 2, "which recipe? add recipe=NAME"),
    ("unknown override key", lambda w: ["fit", "recipe=sentiment", "optim.lrr=1"], 2, "unknown key optim.lrr"),
    (
        "unknown group option",
        lambda w: ["fit", "recipe=seq2seq", "data=wikipedia"],
        2,
        "unknown data option 'wikipedia'",
    ),
    (
        "wrong value type",
        lambda w: ["fit", "recipe=char_lm", "trainer.max_steps=many"],
        2,
        "trainer.max_steps: Value 'many' of type 'str' could not be converted to Integer",
    ),
    ("negative lr", lambda w: ["fit", "recipe=speech", "optim.lr=-0.1"], 2, "optim.lr must be positive"),
    (
        "unknown cell",
        lambda w: ["fit", "recipe=char_lm", "model.cell=transformer"],
        2,
        "model.cell='transformer' is unknown",
    ),
    (
        "weight drop on Li-GRU",
        lambda w: ["fit", "recipe=char_lm", "model.cell=ligru", "model.weight_drop=0.2"],
        2,
        "model.weight_drop is for rnn, gru and lstm cells",
    ),
    (
        "zero batch size",
        lambda w: ["fit", *tiny(w, "data.batch_size=0")],
        2,
        "data.batch_size and data.max_tokens must be positive",
    ),
    ("zero devices", lambda w: ["fit", *tiny(w, "trainer.devices=0")], 2, "trainer.devices must be >= 1"),
    (
        "unparsable override",
        lambda w: ["fit", "recipe=char_lm", "optim.lr=[1,"],
        2,
        "cannot parse override 'optim.lr=[1,'",
    ),
    ("missing data file", lambda w: ["fit", *tiny(w, f"data.path={w['files'] / 'nope.txt'}")], 2, "no such file: "),
    ("empty data file", lambda w: ["fit", *tiny(w, f"data.path={w['files'] / 'empty.txt'}")], 2, "empty.txt is empty"),
    (
        "non-utf8 text",
        lambda w: ["fit", *tiny(w, f"data.path={w['files'] / 'latin1.txt'}")],
        2,
        "latin1.txt is not UTF-8 text (bad bytes on line 1)",
    ),
    (
        "tsv without label column",
        lambda w: ["fit", "recipe=sentiment", "data=tsv", f"data.train={w['files'] / 'nolabel.tsv'}"],
        2,
        "nolabel.tsv has no column 'label'; its columns: text, score",
    ),
    (
        "tsv missing",
        lambda w: ["fit", "recipe=sentiment", "data=tsv", f"data.train={w['files'] / 'nope.tsv'}"],
        2,
        "no such file: ",
    ),
    (
        "mismatched parallel files",
        lambda w: [
            "fit",
            "recipe=seq2seq",
            "data=parallel",
            *(f"data.{s}_{side}={w['files'] / f'{side}.txt'}" for s in ("train", "valid") for side in ("src", "tgt")),
        ],
        2,
        "parallel files differ in length",
    ),
    (
        "parallel files missing",
        lambda w: ["fit", "recipe=seq2seq", "data=parallel", "data.train_src=x"],
        2,
        "data=parallel needs data.train_src, data.train_tgt",
    ),
    (
        "folder of torn wavs",
        lambda w: ["fit", "recipe=speech", "data=folder", f"data.root={w['files'] / 'torn'}"],
        2,
        "audio files cannot be used",
    ),
    (
        "truncated wav",
        lambda w: ["sample", w["speech"], "--audio", w["files"] / "truncated.wav"],
        2,
        "truncated.wav: not a readable audio file",
    ),
    (
        "empty audio file",
        lambda w: ["sample", w["speech"], "--audio", w["files"] / "empty.wav"],
        2,
        "empty.wav: the file holds no audio samples",
    ),
    (
        "text given as audio",
        lambda w: ["sample", w["speech"], "--audio", w["files"] / "notes.txt"],
        2,
        "notes.txt: not a readable audio file",
    ),
    (
        "truncated checkpoint",
        lambda w: ["sample", w["truncated"]],
        2,
        "best.pt is truncated or not a seqtrain checkpoint",
    ),
    (
        "checkpoint of another recipe",
        lambda w: ["sample", w["other"]],
        2,
        "is a checkpoint of recipe 'speech', not 'char_lm'",
    ),
    (
        "newer checkpoint format",
        lambda w: ["sample", w["files"] / "newer.pt"],
        2,
        "was written by a newer seqtrain (format 2, this one reads up to 1); upgrade seqtrain",
    ),
    ("not a run dir", lambda w: ["sample", w["files"]], 2, "files/checkpoints (is "),
    (
        "prompt with unseen characters",
        lambda w: ["sample", w["lm"], "--prompt", "Ωmega"],
        2,
        "the prompt has characters never seen in training: 'Ω'",
    ),
    ("text option for char_lm", lambda w: ["sample", w["lm"], "--text", "hi"], 2, "char_lm generates from --prompt"),
    (
        "resume pointing to nothing",
        lambda w: ["fit", "recipe=char_lm", f"trainer.resume={w['root'] / 'nothing'}"],
        2,
        "nothing: no such run dir",
    ),
    (
        "resume of another recipe",
        lambda w: ["fit", "recipe=sentiment", f"trainer.resume={w['lm']}"],
        2,
        "is a run of recipe char_lm, not sentiment",
    ),
    (
        "evaluate with a model override",
        lambda w: ["evaluate", w["lm"], "model.hidden_size=8"],
        2,
        "model.* cannot be overridden",
    ),
    (
        "evaluate an unknown split",
        lambda w: ["evaluate", w["lm"], "split=test"],
        2,
        "split=test is not a split of char_lm",
    ),
    (
        "early stopping on no metric",
        lambda w: ["fit", *tiny(w, f"run_dir={w['root'] / 'monitor_run'}", "trainer.early_stopping.monitor=accuracy")],
        2,
        "trainer.early_stopping.monitor='accuracy' is not a metric; valid: loss, bpc, perplexity",
    ),
    (
        "run dir that already exists",
        lambda w: ["fit", *tiny(w, f"run_dir={w['lm']}")],
        2,
        "already exists; choose another run_dir or continue it with trainer.resume=",
    ),
    (
        "lr making the loss non-finite",
        lambda w: [
            "fit",
            *tiny(
                w,
                f"run_dir={w['root'] / 'diverged'}",
                "optim=sgd",
                "sched=constant",
                "optim.lr=1e38",
                "trainer.clip_grad_norm=null",
                "trainer.max_steps=200",
            ),
        ],
        1,
        "loss became inf at step 2 (lr 1e+38); stopped, the last good checkpoint stays in",
    ),
    (
        "_target_ override",
        lambda w: ["fit", "recipe=char_lm", "+model._target_=os.system"],
        2,
        "model._target_: configs cannot name code to instantiate; choose among seqtrain's recipes and options",
    ),
    (
        "_target_ in a user config dir",
        lambda w: ["config", "recipe=char_lm", f"hydra.searchpath=[file://{w['files']}]", "model=evil"],
        2,
        "unknown model option 'evil'; valid: char_rnn",
    ),
    (
        "added unknown key",
        lambda w: ["fit", "recipe=seq2seq", "+model.depth=3"],
        2,
        "unknown key model.depth; valid keys there:",
    ),
]


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def protected(world):
    """Hashes of every file of the earlier runs, taken before the table and compared after it."""
    before = {name: digest(world[name]) for name in ("lm", "speech")}
    yield
    assert {name: digest(world[name]) for name in ("lm", "speech")} == before


@pytest.mark.parametrize("name, args, code, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(world, protected, name, args, code, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default run dir (runs/<recipe>/<stamp>) would appear
    made_before = sorted(world["root"].iterdir())
    result = seqtrain(*args(world))
    if code == 2:
        assert sorted(world["root"].iterdir()) == made_before and not (tmp_path / "runs").exists(), (
            "bad input made a run dir"
        )
    assert (result.exit_code, message) == (code, message) and message in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.rstrip().endswith(error_lines[0]), "the error line comes last"


def test_the_table_is_broad():
    assert len(CASES) >= 25
    assert {"fit", "sample", "evaluate", "config"} <= {
        c[1]({k: Path("x") for k in ("lm", "speech", "files", "truncated", "other", "root", "corpus")})[0]
        for c in CASES
    }


def test_a_failed_check_before_training_leaves_no_run_dir(world):
    assert not (world["root"] / "monitor_run").exists()


def test_a_diverged_run_keeps_a_loadable_checkpoint_or_none(world):
    ckpt = world["root"] / "diverged" / "checkpoints"
    for path in ckpt.glob("*.pt") if ckpt.is_dir() else []:
        assert json.dumps(checkpoint.load(path)["trainer"])
