"""What every recipe gets from the contract (seqtrain/recipe.py): its embedding tables, and for classifiers the
pooled vectors of validation examples, in TensorBoard's projector at the end of a run."""

from __future__ import annotations

import pytest

from conftest import seqtrain

QUICK = ["trainer.max_time=null", "trainer.max_steps=4", "trainer.val_every_steps=2"]
TABLES = {
    "char_lm": (["data=text", "model.hidden_size=16", "data.seq_len=16"], ["characters"]),
    "sentiment": (
        ["data.n_train=200", "data.n_valid=50", "model.hidden_size=16", "model.num_layers=1"],
        ["words", "validation_examples"],
    ),
    "seq2seq": (["data.n_train=200", "data.n_valid=20", "model.hidden_size=8"], ["source", "target"]),
    "speech": (
        ["data.size=48", "model.cnn_channels=[4]", "model.rnn_hidden=8", "model.rnn_layers=1", "model.dnn_sizes=[8]"],
        ["validation_examples"],
    ),
}


@pytest.mark.parametrize("recipe", list(TABLES))
def test_the_projector_gets_each_recipe_s_tables_at_the_end_of_a_run(recipe, corpus, tmp_path):
    overrides, tables = TABLES[recipe]
    overrides = [o if o != "data=text" else f"data=text data.path={corpus}" for o in overrides]
    run_dir = tmp_path / "run"
    result = seqtrain("fit", f"recipe={recipe}", *" ".join(overrides).split(), *QUICK, f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    config = (run_dir / "projector_config.pbtxt").read_text()
    assert sorted(t.split('"')[1] for t in config.split("tensor_name: ")[1:]) == sorted(f"{t}:00004" for t in tables)
    for table in tables:
        metadata = (run_dir / "00004" / table / "metadata.tsv").read_text().splitlines()
        tensors = (run_dir / "00004" / table / "tensors.tsv").read_text().splitlines()
        assert len(tensors) == len(metadata) - (table == "validation_examples")  # a header row for two labels
        if table == "validation_examples":
            assert metadata[0] == "true\tpredicted" and len(metadata) > 10


def test_log_embeddings_false_writes_no_projector_files(tmp_path):
    run_dir = tmp_path / "run"
    result = seqtrain(
        "fit", "recipe=sentiment", *TABLES["sentiment"][0], *QUICK, "trainer.log_embeddings=false", f"run_dir={run_dir}"
    )
    assert result.exit_code == 0 and not (run_dir / "projector_config.pbtxt").exists()
