import pytest

from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.rundir import RunDir


def test_an_existing_run_dir_is_never_reused(tmp_path):
    target = tmp_path / "run"
    assert RunDir.create("char_lm", str(target)).path == target
    with pytest.raises(ConfigError, match="already exists"):
        RunDir.create("char_lm", str(target))


def test_default_run_dirs_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = RunDir.create("char_lm", None).path, RunDir.create("char_lm", None).path
    assert first != second and first.parent == second.parent == tmp_path.joinpath("runs", "char_lm").relative_to(
        tmp_path
    )


def test_find_prefers_best_for_use_and_last_for_resume(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for name in ("best.pt", "last.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    assert RunDir(tmp_path).find_checkpoint().name == "best.pt"
    assert RunDir(tmp_path).find_checkpoint(prefer="last").name == "last.pt"
    with pytest.raises(CheckpointError, match="no checkpoint"):
        RunDir(tmp_path / "elsewhere").find_checkpoint()
