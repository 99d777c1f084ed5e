"""Pretrained word vectors start the sentiment and seq2seq embeddings (model.pretrained_embeddings), frozen or
not; they live in the checkpoint afterwards; `seqtrain export --format vectors` writes a run's own tables so
that they can start another run. The file formats themselves are tested in test_vectors.py."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import seqtrain
from seqtrain import checkpoint
from seqtrain.data.tokenizers import tokenizer_from_dict

SENTIMENT = [
    "data.n_train=200",
    "data.n_valid=50",
    "model.hidden_size=16",
    "model.num_layers=1",
    "model.embedding_dim=8",
    "trainer.max_time=null",
    "trainer.max_steps=4",
    "trainer.val_every_steps=2",
]


def glove(path, words: list[str], dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """A GloVe-style text file (no header) of random vectors; returns them by word."""
    rng = np.random.default_rng(seed)
    vectors = {w: rng.normal(0, 0.3, dim).astype(np.float32) for w in words}
    path.write_text("".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in vectors.items()))
    return vectors


def rows(run_dir, name="last.pt") -> tuple[torch.Tensor, list[str]]:
    state = checkpoint.load(run_dir / "checkpoints" / name)
    return state["model"]["embedding.weight"], tokenizer_from_dict(state["vocab"]["tokenizer"]).pieces()


def test_frozen_pretrained_vectors_stay_as_the_file_has_them_and_live_in_the_checkpoint(tmp_path):
    vectors = glove(tmp_path / "glove.txt", ["the", "film", "is", "dull", "moving", "notaword"])
    run_dir = tmp_path / "run"
    fit = seqtrain(
        "fit",
        "recipe=sentiment",
        *SENTIMENT,
        f"model.pretrained_embeddings={tmp_path / 'glove.txt'}",
        "model.freeze_embeddings=true",
        f"run_dir={run_dir}",
    )
    assert fit.exit_code == 0, fit.output
    report = json.loads((run_dir / "pretrained.json").read_text())["words"]
    assert report["found"] == 5 and report["dim"] == 8 and "words: pretrained vectors" in fit.output
    weight, pieces = rows(run_dir)
    for word in ("film", "dull", "moving"):
        assert torch.allclose(weight[pieces.index(word)], torch.from_numpy(vectors[word]), atol=1e-6)  # frozen, as read
    (tmp_path / "glove.txt").unlink()  # everything after training reads the checkpoint alone
    assert seqtrain("evaluate", run_dir).exit_code == 0
    assert seqtrain("fit", "recipe=sentiment", f"trainer.resume={run_dir}", "trainer.max_steps=6").exit_code == 0


def test_unfrozen_vectors_train_and_subword_vectors_start_at_zero(tmp_path):
    vectors = glove(tmp_path / "glove.txt", ["film", "dull", "moving"])
    run_dir = tmp_path / "run"
    fit = seqtrain(
        "fit",
        "recipe=sentiment",
        *SENTIMENT,
        f"model.pretrained_embeddings={tmp_path / 'glove.txt'}",
        "data.subword_buckets=512",
        "trainer.max_steps=1",
        f"run_dir={run_dir}",
    )
    assert fit.exit_code == 0, fit.output
    weight, pieces = rows(run_dir)
    moved = weight[pieces.index("film")] - torch.from_numpy(vectors["film"])
    assert 0 < moved.abs().max() < 0.05  # one small step from the file's vector
    subwords = checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]["subwords.weight"]
    assert subwords.abs().max() < 0.05  # zero at the start, one step away now


def test_a_run_s_exported_vectors_start_another_run(tmp_path):
    first = tmp_path / "first"
    assert seqtrain("fit", "recipe=sentiment", *SENTIMENT, f"run_dir={first}").exit_code == 0
    exported = seqtrain("export", first, "--format", "vectors")
    assert exported.exit_code == 0 and (first / "vectors" / "words.vec").is_file(), exported.output
    second = tmp_path / "second"
    fit = seqtrain(
        "fit",
        "recipe=sentiment",
        *SENTIMENT,
        f"model.pretrained_embeddings={first / 'vectors' / 'words.vec'}",
        "model.freeze_embeddings=true",
        f"run_dir={second}",
    )
    assert fit.exit_code == 0, fit.output
    learnt, pieces = rows(first, "best.pt")
    started, again = rows(second)
    assert pieces == again and torch.equal(started[4:], learnt[4:])  # every word; the specials are never matched


def test_seq2seq_matches_each_side_to_its_own_vocabulary(tmp_path):
    glove(tmp_path / "chars.txt", list("0123456789abcdefghijklmnopqrstuvwxyz-"), dim=16)
    run_dir = tmp_path / "run"
    fit = seqtrain(
        "fit",
        "recipe=seq2seq",
        "data.n_train=200",
        "data.n_valid=20",
        "model.hidden_size=8",
        "model.embedding_dim=16",
        f"model.pretrained_embeddings={tmp_path / 'chars.txt'}",
        "trainer.max_time=null",
        "trainer.max_steps=2",
        f"run_dir={run_dir}",
    )
    assert fit.exit_code == 0, fit.output
    report = json.loads((run_dir / "pretrained.json").read_text())
    assert report["source"]["found"] > 20 and report["target"]["found"] >= 11  # ISO dates: digits and "-"


def test_bad_vector_files_are_one_line_and_create_nothing(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    glove(tmp_path / "wide.txt", ["film"], dim=5)
    glove(tmp_path / "strangers.txt", ["zzyzx", "qwfp"])
    cases = {
        "empty.txt": "is empty",
        "wide.txt": "holds 5-dimensional vectors but model.embedding_dim=8; set model.embedding_dim=5",
        "strangers.txt": "none of the",
        "missing.txt": "no such file",
    }
    for name, message in cases.items():
        result = seqtrain(
            "fit",
            "recipe=sentiment",
            *SENTIMENT,
            f"model.pretrained_embeddings={tmp_path / name}",
            f"run_dir={tmp_path / 'run'}",
        )
        assert result.exit_code == 2 and result.output.count("error:") == 1 and message in result.output, result.output
        assert not (tmp_path / "run").exists()
    frozen = seqtrain("fit", "recipe=sentiment", "model.freeze_embeddings=true", f"run_dir={tmp_path / 'run'}")
    assert frozen.exit_code == 2 and "model.freeze_embeddings keeps pretrained vectors" in frozen.output
