"""The sentiment recipe end to end: data options, learning, padding, bad input, sample, evaluate,
ensembles of runs, and init_from."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import SHARED_DATA, assert_float32_close, seqtrain
from seqtrain import checkpoint
from seqtrain.config import compose
from seqtrain.data.subwords import ngram_buckets
from seqtrain.data.synthetic_sentiment import make_splits
from seqtrain.data.tokenizers import UNK_ID
from seqtrain.recipes import sentiment
from seqtrain.recipes.sentiment import Sentiment

RECIPE = Sentiment()

SST2 = SHARED_DATA / "sst2"
needs_sst2 = pytest.mark.skipif(not (SST2 / "dev.tsv").is_file(), reason="../shared/data/sst2 is absent")
SMALL = [
    "model.embedding_dim=32",
    "model.hidden_size=48",
    "model.num_layers=1",
    "data.batch_size=32",
    # A run of a few hundred steps learns fastest at a constant LR, lightly regularised, on the raw weights
    # (an average over 0.999 of them lags that far behind): not the defaults, which are for longer budgets.
    "sched=constant",
    "model.dropout=0.3",
    "model.label_smoothing=0.0",
    "trainer.ema_decay=null",
    "trainer.max_time=null",
    "trainer.max_epochs=null",
    "trainer.log_every_steps=20",
]


def fit(run_dir, *overrides):
    result = seqtrain("fit", "recipe=sentiment", *SMALL, f"run_dir={run_dir}", *overrides)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_tsv(path, texts, labels, header="sentence\tlabel"):
    path.write_text(header + "\n" + "".join(f"{t}\t{label}\n" for t, label in zip(texts, labels)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on the embedded default corpus (4,000 sentences), different seeds and poolings."""
    root = tmp_path_factory.mktemp("sentiment")
    data = ["data.n_train=4000", "data.n_valid=600", "trainer.max_steps=400", "trainer.val_every_steps=200"]
    first = fit(root / "a", *data)
    fit(root / "b", *data, "trainer.seed=7", "model.pooling=max")
    return root / "a", root / "b", first


@pytest.mark.parametrize(
    "option, extra, source",
    [
        ("synthetic_reviews", [], "synthetic"),
        ("sst2", ["data.root=/data/sst2"], "sst2"),
        ("tsv", ["data.train=t.tsv", "data.valid=v.tsv", "data.text_column=sentence"], "tsv"),
        ("folder", ["data.train=reviews/train", "data.classes=[neg,pos]"], "folder"),
    ],
)
def test_the_recipe_composes_with_each_data_option(option, extra, source):
    cfg = compose("sentiment", [f"data={option}", *extra])
    assert cfg.data.source == source and cfg.trainer.early_stopping.monitor == "accuracy"
    assert cfg.trainer.early_stopping.mode == "max"


def test_a_few_steps_lift_validation_accuracy_well_above_chance(runs):
    run_dir, _, metrics = runs
    assert metrics["accuracy"] > 0.85 and metrics["macro_f1"] > 0.85  # chance is 0.5; a bag of words stays there
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in records if r["split"] == "valid"][0] < metrics["accuracy"]
    epochs = [r["padding_efficiency"] for r in records if r["split"] == "epoch"]
    assert epochs and all(0.8 < e <= 1 for e in epochs)  # bucketing keeps padding low
    assert json.loads((run_dir / "vocab.json").read_text())["classes"] == ["negative", "positive"]


def test_padding_never_changes_a_prediction_through_step(runs):
    run_dir, _, _ = runs
    state = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    model_cfg = sentiment.ModelConfig(**state["config"]["model"])
    model = RECIPE.build_model(model_cfg, state["vocab"]).eval()
    model.load_state_dict(state["model"])
    step = RECIPE.loss(model_cfg, state["vocab"])
    texts = ["the film is dull", "not bad", "although the story is slightly silly , it is very moving", "good"]
    inputs = RECIPE.prepare_inputs(state["vocab"], texts).splits["inputs"]
    inputs.labels[:] = torch.tensor([0, 1, 1, 1])
    items = [inputs[i] for i in range(len(texts))]
    with torch.no_grad():
        batch = sentiment.collate(items)
        loss, stats = step(model, batch)
        alone = [step(model, sentiment.collate([item])) for item in items]
        assert_float32_close(stats["loss_sum"], sum(s["loss_sum"] for _, s in alone))
        assert torch.equal(stats["confusion"], sum(s["confusion"] for _, s in alone))
        probabilities = RECIPE.predict(model, batch)
        for item, row in zip(items, probabilities):
            assert_float32_close(RECIPE.predict(model, sentiment.collate([item]))[0], row)


def trained_model_and_batch(run_dir, **model_overrides):
    """The first run's model, its config changed by `model_overrides`, without dropout (eval mode), a
    labelled batch of five sentences, and the recipe's step (its loss) for that config."""
    state = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    model_cfg = sentiment.ModelConfig(**{**state["config"]["model"], **model_overrides})
    model = RECIPE.build_model(model_cfg, state["vocab"]).eval()
    model.load_state_dict(state["model"])
    texts = ["the film is dull", "not bad", "very moving", "good", "the story is slightly silly"]
    inputs = RECIPE.prepare_inputs(state["vocab"], texts).splits["inputs"]
    inputs.labels[:] = torch.tensor([0, 1, 1, 1, 0])
    return model, sentiment.collate([inputs[i] for i in range(len(texts))]), RECIPE.loss(model_cfg, state["vocab"])


def test_mixup_blends_features_and_labels_together(runs, monkeypatch):
    """With blend weights of 0 each example is scored as its partner, with its partner's label, and as
    the partners are a permutation of the batch, the summed loss is the unmixed one; with weights of 1/2
    both examples of a pair get the same logits, those of their features' midpoint."""
    run_dir, _, _ = runs
    model, batch, step = trained_model_and_batch(run_dir, mixup_alpha=0.4)
    weights = torch.zeros(5)

    class FixedBeta:  # the blend weights, given instead of drawn
        def __init__(self, *_):
            pass

        def sample(self, shape):
            assert shape == (5,)
            return weights

    monkeypatch.setattr(torch.distributions, "Beta", FixedBeta)
    with torch.no_grad():
        plain, _ = step(model, batch)  # eval mode: no mixup
        _, loss_sum = step.mixup(model, batch)
        assert_float32_close(loss_sum / 5, plain)
        weights.fill_(0.5)
        torch.manual_seed(0)
        logits, loss_sum = step.mixup(model, batch)
        torch.manual_seed(0)
        partner = torch.randperm(5)
        features = model.features(batch["tokens"], batch["lengths"], batch.get("subwords"))
        assert_float32_close(logits, model.head((features + features[partner]) / 2))
        assert partner.tolist() != list(range(5)) and not torch.allclose(loss_sum / 5, plain, rtol=1e-3)


def test_mixup_acts_in_training_only_and_a_negative_alpha_is_refused(runs):
    run_dir, _, _ = runs
    model, batch, step = trained_model_and_batch(run_dir, mixup_alpha=0.4)
    plain_model, _, plain_step = trained_model_and_batch(run_dir, mixup_alpha=0.0)
    with torch.no_grad():
        assert_float32_close(step(model, batch)[0], plain_step(plain_model, batch)[0])
    result = seqtrain("fit", "recipe=sentiment", "model.mixup_alpha=-1", f"run_dir={run_dir.parent / 'refused'}")
    assert result.exit_code == 2 and "model.mixup_alpha=-1.0 must be >= 0" in result.output
    assert not (run_dir.parent / "refused").exists()


def test_weight_drop_reaches_the_recurrence_and_leaves_evaluation_alone(runs):
    """model.weight_drop is handed to the classifier's recurrent stack, whose tests cover the masking;
    in eval mode the model scores exactly as without it."""
    run_dir, _, _ = runs
    plain, batch, _ = trained_model_and_batch(run_dir, weight_drop=0.0)
    dropped, _, _ = trained_model_and_batch(run_dir, weight_drop=0.5)
    assert dropped.rnn.weight_drop == 0.5
    with torch.no_grad():
        assert torch.equal(sentiment.class_logits(plain, batch), sentiment.class_logits(dropped, batch))
    result = seqtrain(
        "fit", "recipe=sentiment", "model.cell=ligru", "model.weight_drop=0.2", f"run_dir={run_dir.parent / 'refused'}"
    )
    assert result.exit_code == 2 and "model.weight_drop is for rnn, gru and lstm cells" in result.output
    assert not (run_dir.parent / "refused").exists()


@pytest.mark.parametrize(
    "train, valid, message",
    [
        ("text\tlabel\ngood\t1\n", "sentence\tlabel\nfine\t1\n", "has no column 'sentence'; its columns: text, label"),
        ("", "sentence\tlabel\nfine\t1\n", "train.tsv is empty"),
        (
            "sentence\tlabel\ngood\t1\nbad\t0\n",
            "sentence\tlabel\nfine\t1\nmeh\t2\n",
            "label '2' in the valid split never appears in training",
        ),
        (
            b"sentence\tlabel\ngood\t1\nbad \xff\t0\n",
            "sentence\tlabel\nfine\t1\n",
            "train.tsv is not UTF-8 text (bad bytes on line 3)",
        ),
    ],
)
def test_bad_data_is_one_line_exit_2_and_leaves_no_run_dir(tmp_path, train, valid, message):
    for name, content in (("train.tsv", train), ("valid.tsv", valid)):
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    result = seqtrain(
        "fit",
        "recipe=sentiment",
        "data=tsv",
        f"data.train={tmp_path / 'train.tsv'}",
        f"data.valid={tmp_path / 'valid.tsv'}",
        "data.text_column=sentence",
        f"run_dir={tmp_path / 'run'}",
    )
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "run").exists()


def test_sample_predicts_text_and_a_file_one_json_line_each(runs, tmp_path):
    run_dir, _, _ = runs
    result = seqtrain("sample", run_dir, "--text", "the film is not bad , but very clever")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)
    assert prediction["label"] in ("negative", "positive")
    assert prediction["probabilities"][prediction["label"]] >= 0.5
    assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    lines = tmp_path / "in.txt"
    lines.write_text("the plot is very dull\n\nthe cast is never boring\nzzz unknown words\n")
    result = seqtrain("sample", run_dir, "--input-file", lines)
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [
        "the plot is very dull",
        "the cast is never boring",
        "zzz unknown words",
    ]
    assert seqtrain("sample", run_dir, "--prompt", "hi").exit_code == 2


def test_evaluate_reports_metrics_and_the_confusion_matrix(runs, tmp_path):
    run_dir, _, _ = runs
    report = json.loads(seqtrain("evaluate", run_dir).stdout)
    assert {
        "accuracy",
        "macro_f1",
        "nll",
        "precision/negative",
        "recall/positive",
        "confusion_matrix",
        "classes",
    } <= report.keys()
    assert report["accuracy"] == pytest.approx(
        checkpoint.load(run_dir / "checkpoints" / "best.pt")["metrics"]["accuracy"]
    )
    assert sum(map(sum, report["confusion_matrix"])) == report["examples"] == 600
    other = write_tsv(
        tmp_path / "other.tsv",
        ["the film is very good", "the plot is very bad", "the cast is not good"],
        ["positive", "negative", "negative"],
    )
    scored = json.loads(
        seqtrain("evaluate", run_dir, "data=tsv", f"data.valid={other}", "data.text_column=sentence").stdout
    )
    assert scored["examples"] == 3


def test_every_validation_logs_its_confusion_matrix_as_a_tensorboard_image(runs):
    run_dir, _, _ = runs
    validated = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"valid"' in line
    ]
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("confusion")] == validated


def test_an_ensemble_averages_the_members_probabilities(runs):
    a, b, _ = runs
    text = "the story is somewhat dull and extremely charming"
    alone = [json.loads(seqtrain("sample", run, "--text", text).stdout)["probabilities"] for run in (a, b)]
    together = json.loads(seqtrain("sample", a, b, "--text", text).stdout)["probabilities"]
    assert together["positive"] == pytest.approx((alone[0]["positive"] + alone[1]["positive"]) / 2, abs=2e-4)
    report = json.loads(seqtrain("evaluate", a, b).stdout)
    assert [m["run_dir"] for m in report["members"]] == [str(a), str(b)]
    assert {"accuracy", "macro_f1", "confusion_matrix"} <= report["ensemble"].keys()


def test_init_from_loads_matching_weights_and_reports_new_ones(runs, tmp_path):
    source, _, _ = runs
    result = seqtrain(
        "fit",
        "recipe=sentiment",
        *SMALL,
        "data.n_train=400",
        "data.n_valid=100",
        "trainer.max_steps=1",
        "optim.lr=1e-9",
        "model.mlp_hidden=16",
        f"trainer.init_from={source}",
        f"run_dir={tmp_path / 'run'}",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "init_from.json").read_text())
    assert "embedding.weight" in report["loaded"] and "rnn.rnn.weight_hh_l0" in report["loaded"]
    assert sorted(report["new"]) == ["head.1.bias", "head.1.weight", "head.4.bias", "head.4.weight"]
    assert "init_from" in result.stderr and "new 4 (head.1.weight" in result.stderr
    before = checkpoint.load(source / "checkpoints" / "best.pt")["model"]["embedding.weight"]
    after = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["model"]["embedding.weight"]
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    missing = seqtrain("fit", "recipe=sentiment", f"trainer.init_from={tmp_path / 'nope'}")
    assert missing.exit_code == 2 and "no such run dir" in missing.stderr


def test_tsv_with_a_held_out_split_and_a_sentencepiece_tokenizer(tmp_path):
    texts, labels = make_splits(600, 0, seed=3)["train"]
    (tmp_path / "reviews.csv").write_text(
        "review,stars\n" + "".join(f'"{t}",{label}\n' for t, label in zip(texts, labels))
    )
    fit(
        tmp_path / "run",
        "data=tsv",
        f"data.train={tmp_path / 'reviews.csv'}",
        "data.text_column=review",
        "data.label_column=stars",
        "data.tokenizer=sentencepiece",
        "data.subword_buckets=0",
        "data.vocab_size=60",
        "trainer.max_steps=4",
    )
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert vocab["tokenizer"]["kind"] == "sentencepiece" and sum(vocab["class_counts"]) == 540  # 10% held out
    assert seqtrain("sample", tmp_path / "run", "--text", "unseen wordsmithery").exit_code == 0


def test_folder_per_class_data(tmp_path):
    for label, words in (("neg", ["dull", "bad plot"]), ("pos", ["moving", "good cast"]), ("unsup", ["?"])):
        (tmp_path / label).mkdir()
        for i, text in enumerate(words):
            (tmp_path / label / f"{i}.txt").write_text(text)
    cfg = compose(
        "sentiment",
        [
            "data=folder",
            f"data.train={tmp_path}",
            f"data.valid={tmp_path}",
            "data.classes=[neg,pos]",
            "data.min_freq=1",
        ],
    )
    prepared = RECIPE.prepare(cfg.data, None, ("train", "valid"))
    assert prepared.vocab["classes"] == ["neg", "pos"] and prepared.splits["train"].labels.tolist() == [0, 0, 1, 1]


@needs_sst2
def test_sst2_trains_samples_and_evaluates_from_the_real_files(tmp_path):
    run_dir = tmp_path / "run"
    fit(run_dir, "data=sst2", f"data.root={SST2}", "data.max_rows=400", "trainer.max_steps=5")
    assert json.loads((run_dir / "vocab.json").read_text())["classes"] == ["0", "1"]
    report = json.loads(seqtrain("evaluate", run_dir).stdout)
    assert report["examples"] == 400 and set(report["classes"]) == {"0", "1"}
    assert json.loads(seqtrain("sample", run_dir, "--text", "a charming , moving film").stdout)["label"] in ("0", "1")


def test_subwords_give_a_word_unseen_in_training_a_vector_from_its_spelling(tmp_path):
    texts = ["a warm film", "a dull film", "warm and moving", "dull and flat"] * 8
    train = write_tsv(tmp_path / "train.tsv", texts, ["pos", "neg", "pos", "neg"] * 8)
    fit(
        tmp_path / "run",
        "data=tsv",
        f"data.train={train}",
        f"data.valid={train}",
        "data.text_column=sentence",
        "data.subword_buckets=4096",
        "trainer.max_steps=5",
    )
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["vocab"]["subword_buckets"] == 4096
    batch = sentiment.collate(
        list(RECIPE.prepare_inputs(state["vocab"], ["warmly moving", "flatly dull"]).splits["inputs"])
    )
    assert batch["tokens"][:, 0].tolist() == [UNK_ID, UNK_ID]  # unknown words, told apart by their n-grams
    assert set(ngram_buckets(["warmly"], 4096)[0].tolist()) <= set(batch["subwords"][0, 0].tolist())
    model = RECIPE.build_model(sentiment.ModelConfig(**state["config"]["model"]), state["vocab"]).eval()
    model.load_state_dict(state["model"])
    first, second = model.embedding(batch["tokens"]) + model.subwords(batch["subwords"].flatten(0, 1)).view(2, 2, -1)
    assert not torch.allclose(first[0], second[0])
    result = seqtrain("sample", tmp_path / "run", "--text", "warmly moving")
    assert result.exit_code == 0 and json.loads(result.stdout)["label"] in ("pos", "neg")


def test_subwords_need_the_word_tokenizer(tmp_path):
    result = seqtrain(
        "fit",
        "recipe=sentiment",
        "data.tokenizer=sentencepiece",
        "data.subword_buckets=100",
        f"run_dir={tmp_path / 'run'}",
    )
    assert result.exit_code == 2 and "it needs data.tokenizer=word" in result.output
    assert not (tmp_path / "run").exists()


def test_subword_buckets_are_kept_once_per_distinct_word():
    vocab = {
        "tokenizer": {"kind": "word", "symbols": ["good", "film"]},
        "classes": ["0", "1"],
        "class_counts": [1, 1],
        "subword_buckets": 100,
    }
    encoded = sentiment.encode(vocab, ["good film", "good good unseenword"], [0, 1], "test")
    assert encoded.ngrams.size(0) == 3  # good, film, unseenword
    ids, _, ngrams = encoded[1]
    expected = ngram_buckets(["good", "good", "unseenword"], 100)
    assert ids.tolist() == [4, 4, UNK_ID] and torch.equal(ngrams[:, : expected.size(1)], expected)
    assert (ngrams[:, expected.size(1) :] == 0).all()
