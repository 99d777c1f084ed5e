"""Faults lose nothing: random SIGKILL/SIGTERM with resumes (the harness of bench/fault_trials.py, few
kills), and a checkpoint write that fails for a full disk keeps the previous checkpoint, says what
happened, and the run resumes from it."""

from __future__ import annotations

import errno

import pytest
import torch

from bench.fault_trials import corpus_file, trials
from conftest import seqtrain, tiny_overrides
from seqtrain import checkpoint

pytestmark = pytest.mark.slow  # processes and timeouts: deselect with -m 'not slow' while iterating


def test_random_kills_and_resumes_end_with_the_weights_of_an_uninterrupted_run(tmp_path):
    result = trials(tmp_path, corpus_file(tmp_path), steps=120, kills=3, seed=1, max_delay=0.3, hidden=64)
    assert result["weights_equal"] and result["temp_files_left"] == 0 and result["log_equal"]
    assert result["kills"] >= 2
    for event in result["events"]:
        if event["signal"] == "SIGTERM" and event["step"] < 120:  # arrived while training
            assert (
                event["exit"] == 130 and "resume with: seqtrain fit recipe=char_lm trainer.resume=" in event["message"]
            )


@pytest.mark.parametrize(
    "code, reason", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")]
)
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_why(corpus, tmp_path, monkeypatch, code, reason):
    run_dir = tmp_path / "run"
    real_save, calls = torch.save, []

    def failing_third_write(obj, f):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"partial")
            raise OSError(code, reason)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", failing_third_write)
    args = tiny_overrides(
        corpus,
        f"run_dir={run_dir}",
        "trainer.checkpoint_every_steps=1",
        "trainer.val_every_steps=null",
        "trainer.max_steps=6",
    )
    result = seqtrain("fit", "recipe=char_lm", *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: could not write checkpoint {run_dir / 'checkpoints' / 'last.pt'}: {reason}; the previous checkpoint "
        "is intact"
    )
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["trainer"]["step"] == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.pt"]
    monkeypatch.undo()
    resumed = seqtrain("fit", "recipe=char_lm", f"trainer.resume={run_dir}")
    assert resumed.exit_code == 0 and "resumed from step 2" in resumed.stderr
