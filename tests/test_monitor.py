"""A resumed run's logs hold each step once: what the killed process logged after its last checkpoint
is dropped from metrics.jsonl (a torn last line too) and purged from TensorBoard, since those steps
are trained and logged again."""

import io
import json

from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqtrain.monitor import Monitor


def log_steps(run_dir, steps, start_step=0, torn=False):
    monitor = Monitor(run_dir, None, None, Console(file=io.StringIO()), start_step=start_step)
    for step in steps:
        monitor.scalars("train", {"loss": float(step)}, step, 0)
    if torn:
        monitor.jsonl.write('{"split": "train", "st')  # a kill in the middle of a write
    monitor.close()


def test_a_resume_drops_what_was_logged_after_its_checkpoint(tmp_path):
    log_steps(tmp_path, [2, 4, 6, 8], torn=True)  # the killed process: its checkpoint was at step 4
    log_steps(tmp_path, [6, 8, 10], start_step=4)  # the resume from step 4
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10]
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10]


def test_a_fresh_run_appends_nothing_it_did_not_log(tmp_path):
    log_steps(tmp_path, [1, 2])
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_hparams_go_into_the_run_s_own_dir_for_the_dashboard(tmp_path):
    from seqtrain.monitor import log_hparams

    log_hparams(
        tmp_path,
        {"optim.lr": 0.003, "model.cell": "gru", "model.cnn_channels": [4, 8]},
        {"loss": 1.5, "confusion": [[1]]},
    )
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")
    assert [e.value for e in events.Scalars("hparams/loss")] == [1.5] and "hparams/confusion" not in events.Tags()[
        "scalars"
    ]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no subdir, unlike SummaryWriter.add_hparams
