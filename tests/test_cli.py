"""End to end through the `seqtrain` command: fit, sample, evaluate, resume, sweep, and bad input."""

import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import seqtrain, tiny_overrides
from seqtrain import checkpoint


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = seqtrain(
        "fit",
        "recipe=char_lm",
        *tiny_overrides(corpus, f"run_dir={run_dir}", "trainer.max_steps=60", "trainer.val_max_batches=null"),
    )
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout.strip().splitlines()[-1])


def test_fit_writes_a_complete_run_dir_and_the_loss_drops(trained):
    run_dir, metrics = trained
    for name in (
        "config.yaml",
        "overrides.yaml",
        "vocab.json",
        "metrics.jsonl",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        assert (run_dir / name).is_file(), name
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["loss"] < 2.2 < first["loss"]  # ln(vocab of 17) = 2.83 at the start


def test_sample_streams_seeded_text_from_the_prompt(trained):
    run_dir, _ = trained
    one = seqtrain("sample", str(run_dir), "--prompt", "the ", "--length", "80", "--seed", "1", "--top-k", "5")
    two = seqtrain("sample", str(run_dir), "--prompt", "the ", "--length", "80", "--seed", "1", "--top-k", "5")
    assert one.exit_code == 0 and one.stdout == two.stdout and one.stdout.startswith("the ")
    assert len(one.stdout) == len("the ") + 80 + 1


def test_evaluate_prints_metrics_as_json_and_scores_other_data(trained, tmp_path):
    run_dir, _ = trained
    metrics = checkpoint.load(run_dir / "checkpoints" / "best.pt")["metrics"]
    result = seqtrain("evaluate", str(run_dir))
    assert json.loads(result.stdout) == pytest.approx(metrics)
    other = tmp_path / "other.txt"
    other.write_text("the dog sat on the mat.\n" * 50)
    scored = json.loads(seqtrain("evaluate", str(run_dir), f"data.path={other}", "split=all").stdout)
    assert set(scored) == {"loss", "bpc", "perplexity"} and scored["loss"] != metrics["loss"]


def test_resume_continues_in_the_same_run_dir(corpus, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        seqtrain(
            "fit", "recipe=char_lm", *tiny_overrides(corpus, f"run_dir={run_dir}", "trainer.max_steps=10")
        ).exit_code
        == 0
    )
    result = seqtrain("fit", "recipe=char_lm", f"trainer.resume={run_dir}", "trainer.max_steps=20")
    assert result.exit_code == 0, result.output
    assert "resumed from step 10" in result.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 20
    assert "trainer.max_steps=20" in (run_dir / "overrides.yaml").read_text()


def test_multirun_makes_one_run_dir_per_combination_and_a_summary(corpus, tmp_path):
    parent = tmp_path / "sweep"
    result = seqtrain(
        "fit",
        "-m",
        "recipe=char_lm",
        *tiny_overrides(corpus, f"run_dir={parent}", "trainer.max_steps=5"),
        "optim.lr=1e-3,3e-3",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((parent / "sweep.json").read_text())
    assert [r["overrides"] for r in summary] == ["optim.lr=0.001", "optim.lr=0.003"]
    assert all((parent / str(i) / "checkpoints" / "last.pt").is_file() for i in range(2))
    assert "optim.lr=0.003" in result.stdout
    events = EventAccumulator(str(parent / "1"))  # each run's swept values and final metrics, for the HParams dashboard
    events.Reload()
    assert (
        "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
        and "hparams/loss" in events.Tags()["scalars"]
    )


def test_multirun_points_interval_sweeps_to_tune():
    result = seqtrain("fit", "-m", "recipe=char_lm", "optim.lr=interval(1e-4, 1e-2)")
    assert result.exit_code == 2 and "use seqtrain tune" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "recipe=nope"], "unknown recipe 'nope'"),
        (["fit", "recipe=char_lm", "optim.lrr=1"], "unknown key optim.lrr"),
        (["fit", "recipe=char_lm", "optim.lr=fast"], "optim.lr: Value 'fast'"),
        (["fit", "recipe=char_lm", "optim.lr=-0.1"], "optim.lr must be positive"),
        (["fit", "recipe=char_lm", "data=text", "data.path=/no/such/file.txt"], "no such file: /no/such/file.txt"),
        (["fit", "recipe=char_lm", "trainer.resume=/no/such/run"], "trainer.resume=/no/such/run: no such run dir"),
        (["config", "recipe=char_lm", "sched=wavy"], "unknown sched option 'wavy'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = seqtrain(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_existing_run_dir_is_not_touched(trained, corpus):
    run_dir, _ = trained
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = seqtrain("fit", "recipe=char_lm", *tiny_overrides(corpus, f"run_dir={run_dir}"))
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_sample_with_unseen_prompt_characters_is_a_clear_error(trained):
    run_dir, _ = trained
    result = seqtrain("sample", str(run_dir), "--prompt", "Ωmega")
    assert result.exit_code == 2 and "never seen in training: 'Ω'" in result.stderr and result.stdout == ""


def test_config_prints_the_composed_yaml():
    result = seqtrain("config", "recipe=char_lm", "optim.lr=3e-3", "model.cell=gru")
    assert result.exit_code == 0 and "lr: 0.003" in result.stdout and "cell: gru" in result.stdout


def test_the_installed_command_reports_errors_with_exit_codes():
    result = subprocess.run(
        [sys.executable, "-m", "seqtrain", "fit", "recipe=char_lm", "optim.lrr=1"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: unknown key optim.lrr; valid keys there: name, lr, weight_decay, l1, momentum, nesterov, betas, "
        "alpha, eps, fused"
    )
    listed = subprocess.run([sys.executable, "-m", "seqtrain", "recipes"], capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.startswith("char_lm")
