import errno
import os

import pytest
import torch

from seqtrain import checkpoint
from seqtrain.errors import CheckpointError


def test_round_trip_keeps_tensors_and_plain_data(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"recipe": "char_lm", "model": {"w": torch.ones(2)}, "rng": {"python": (3, (1, 2), None)}}, path)
    state = checkpoint.load(path, recipe="char_lm")
    assert torch.equal(state["model"]["w"], torch.ones(2)) and state["format_version"] == checkpoint.FORMAT_VERSION


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"recipe": "char_lm", "step": 1}, path)

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint is intact"):
        checkpoint.save({"recipe": "char_lm", "step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_truncated_checkpoint_is_refused_clearly(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"recipe": "char_lm", "model": {"w": torch.randn(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_carrying_a_pickled_callable_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "recipe": "char_lm", "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load(path)


def test_newer_format_and_other_recipe_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format_version": checkpoint.FORMAT_VERSION + 1, "recipe": "char_lm"}, path)
    with pytest.raises(CheckpointError, match="newer seqtrain"):
        checkpoint.load(path)
    checkpoint.save({"recipe": "sentiment"}, path)
    with pytest.raises(CheckpointError, match="recipe 'sentiment', not 'char_lm'"):
        checkpoint.load(path, recipe="char_lm")


def test_architecture_check_names_what_changed():
    with pytest.raises(CheckpointError, match="model.hidden_size: 512 -> 256"):
        checkpoint.check_architecture({"hidden_size": 512, "cell": "lstm"}, {"hidden_size": 256, "cell": "lstm"})
    checkpoint.check_architecture({"cell": "gru"}, {"cell": "gru"})
