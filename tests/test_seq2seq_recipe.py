"""The seq2seq recipe: date generator, parallel and Multi30k readers, tokenizers kept with the run,
training through the CLI, sample (beam, attention picture, input file), evaluate, padding invariance."""

import datetime
import gzip
import json
import re

import pytest
import sacrebleu
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional as F

from conftest import SHARED_DATA, assert_float32_close, seqtrain
from seqtrain import checkpoint
from seqtrain.config import compose
from seqtrain.data import dates
from seqtrain.data.parallel import multi30k_files, read_lines, read_parallel
from seqtrain.errors import DataError
from seqtrain.models.decoding import SearchOptions
from seqtrain.recipes import seq2seq
from seqtrain.recipes.seq2seq import Seq2SeqRecipe
from seqtrain.rundir import load_model
from seqtrain.translation_metrics import translation_metrics, translation_stats

RECIPE = Seq2SeqRecipe()

MULTI30K = SHARED_DATA / "multi30k"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def tiny_dates(*extra):
    return [
        "recipe=seq2seq",
        "data.n_train=3000",
        "data.n_valid=200",
        "data.n_test=200",
        "model.hidden_size=64",
        "model.embedding_dim=32",
        "optim.lr=5e-3",
        "trainer.max_time=null",
        "trainer.max_steps=150",
        "trainer.val_every_steps=75",
        "trainer.log_every_steps=25",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seq2seq") / "run"
    result = seqtrain("fit", *tiny_dates(f"run_dir={run_dir}"))
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout.strip().splitlines()[-1])


def write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


@pytest.fixture
def tiny_multi30k(tmp_path):
    """A few German-English pairs under the Multi30k task-1 file names."""
    de = [
        "Zwei Hunde spielen im Schnee.",
        "Ein Mann fährt Fahrrad.",
        "Eine Frau liest ein Buch.",
        "Kinder spielen Fußball.",
    ]
    en = ["Two dogs play in the snow.", "A man rides a bike.", "A woman reads a book.", "Children play football."]
    for stem in ("train", "val", "test_2016_flickr"):
        write_gz(tmp_path / f"{stem}.de.gz", de * (25 if stem == "train" else 1))
        write_gz(tmp_path / f"{stem}.en.gz", en * (25 if stem == "train" else 1))
    return tmp_path


def test_dates_are_written_in_many_formats_and_normalised_to_iso():
    day = datetime.date(1999, 3, 3)
    written = {dates.write(day, form) for form in dates.FORMATS}
    assert {
        "3rd of March, 1999",
        "03/03/99",
        "March 3 1999",
        "1999-3-3",
        "Wednesday, March 3, 1999",
        "3.3.99",
    } <= written
    assert [dates.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 31)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "31st",
    ]
    sources, targets = dates.generate("train", 500, seed=3)
    assert (sources, targets) == dates.generate("train", 500, seed=3)
    assert all(ISO.match(t) and dates.FIRST <= datetime.date.fromisoformat(t) <= dates.LAST for t in targets)
    assert len(set(sources)) > 490 and any(s.isupper() for s in sources) and any("/" in s for s in sources)


def test_held_out_days_never_occur_in_training():
    pools = dates.split_days(seed=0)
    assert sum(len(p) for p in pools.values()) == (dates.LAST - dates.FIRST).days + 1
    assert not set(pools["train"]) & (set(pools["valid"]) | set(pools["test"]))
    train = set(dates.generate("train", 20000)[1])
    held_out = set(dates.generate("test", 2000)[1]) | set(dates.generate("valid", 1000)[1])
    assert held_out and not train & held_out


def test_parallel_files_read_gz_and_crlf_and_refuse_different_line_counts(tmp_path):
    write_gz(tmp_path / "a.de.gz", ["Grüße\r", "zwei"])
    (tmp_path / "a.en").write_text("greetings\ntwo\nthree\n", encoding="utf-8")
    assert read_lines(tmp_path / "a.de.gz") == ["Grüße", "zwei"]
    with pytest.raises(DataError, match=r"a\.de\.gz has 2 lines, .*a\.en has 3"):
        read_parallel(tmp_path / "a.de.gz", tmp_path / "a.en")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"ok\n\xff\n"))
    with pytest.raises(DataError, match="bad bytes on line 2"):
        read_lines(tmp_path / "bad.gz")


def test_mismatched_files_are_one_line_and_exit_2_through_the_cli(tmp_path):
    (tmp_path / "s.txt").write_text("a\nb\n")
    (tmp_path / "t.txt").write_text("a\n")
    files = [
        f"data.{side}={tmp_path / ('s.txt' if side.endswith('src') else 't.txt')}"
        for side in ("train_src", "train_tgt", "valid_src", "valid_tgt")
    ]
    result = seqtrain("fit", "recipe=seq2seq", "data=parallel", *files, f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "s.txt has 2 lines" in result.stderr and "t.txt has 1" in result.stderr
    assert not (tmp_path / "run").exists()


def test_tiny_multi30k_copy_trains_sentencepiece_kept_with_the_run(tiny_multi30k):
    cfg = compose(
        "seq2seq", ["data=multi30k", f"data.root={tiny_multi30k}", "data.vocab_size=60", "data.sp_model_type=bpe"]
    )
    prepared = RECIPE.prepare(cfg.data, None, ("train", "valid"))
    assert (
        len(prepared.splits["train"]) == 100 and prepared.splits["valid"].references[0] == "Two dogs play in the snow."
    )
    vocab = json.loads(json.dumps(prepared.vocab))  # as vocab.json and the checkpoint keep it
    source, target = seq2seq.tokenizers(vocab)
    assert vocab["joint"] and target is source
    again = RECIPE.prepare(cfg.data, vocab, ("test",)).splits["test"]
    assert again.sources == prepared.splits["valid"].sources  # the same ids through the saved tokenizer
    assert source.decode(again.sources[0]) == "Zwei Hunde spielen im Schnee."
    swapped = compose(
        "seq2seq", ["data=multi30k", f"data.root={tiny_multi30k}", "data.source_lang=en", "data.target_lang=de"]
    )
    assert seq2seq.read_pairs(swapped.data, "test")[0][0] == "Two dogs play in the snow."


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="the shared Multi30k copy is absent")
def test_real_multi30k_splits_are_aligned():
    for split, lines in (("valid", 1014), ("test", 1000)):
        sources, targets = read_parallel(*multi30k_files(MULTI30K, split, "test_2016_flickr", "de", "en"))
        assert len(sources) == len(targets) == lines and all(sources) and all(targets)


def test_step_loss_is_label_smoothed_cross_entropy_and_metrics_are_sacrebleu():
    vocab = {"joint": True, "source": {"kind": "char", "symbols": list("abc")}, "monitored": []}
    model_cfg = seq2seq.ModelConfig(hidden_size=8, embedding_dim=8, dropout=0.0)
    model = RECIPE.build_model(model_cfg, vocab).eval()
    batch = seq2seq.collate_pairs([([4, 5], [5, 6, 4], None), ([6], [4], None)], 2, 3, 0)
    loss, stats = RECIPE.loss(model_cfg, vocab)(model, batch)
    logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])[batch["tgt_mask"]]
    gold = batch["tgt_out"][batch["tgt_mask"]]
    assert loss.item() == pytest.approx(F.cross_entropy(logits, gold, label_smoothing=0.1).item(), rel=1e-5)
    assert stats["nll_sum"].item() == pytest.approx(F.cross_entropy(logits, gold, reduction="sum").item(), rel=1e-5)
    hyps = ["the cat sat on the mat", "a dog", "1999-03-03"]
    refs = ["the cat sat on a mat", "the dog", "1999-03-03"]
    totals = {
        k: translation_stats(hyps[:2], refs[:2])[k] + translation_stats(hyps[2:], refs[2:])[k]
        for k in ("bleu", "chrf", "exact", "sentences")
    }
    metrics = translation_metrics(totals)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert metrics["exact_match"] == pytest.approx(1 / 3)


def test_training_on_dates_raises_token_accuracy_keeps_the_tokenizers_and_logs_samples(trained):
    run_dir, final = trained
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["split"] == "train")
    assert (
        final["token_accuracy"] > 0.9 and final["token_accuracy"] > first["token_accuracy"] + 0.3
    )  # first: steps 1-25
    assert {"bleu", "chrf", "exact_match", "perplexity"} <= set(final)
    saved = checkpoint.load(run_dir / "checkpoints" / "best.pt")["vocab"]
    assert json.loads((run_dir / "vocab.json").read_text()) == saved and saved["source"]["kind"] == "char"
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert (
        events.Tags()["images"] == [f"attention/{i}" for i in range(4)]
        and "translations/text_summary" in events.Tags()["tensors"]
    )


def test_sample_text_with_beam_and_attention_picture(trained, tmp_path):
    run_dir, _ = trained
    picture = tmp_path / "align.png"
    result = seqtrain(
        "sample", str(run_dir), "--text", "3rd of March, 1999", "--beam", "5", "--plot-attention", str(picture)
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 and ISO.match(result.stdout.strip())
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_input_file_gives_one_line_per_input(trained, tmp_path):
    run_dir, _ = trained
    inputs = tmp_path / "src.txt"
    inputs.write_text("March 3 1999\n\n03/03/99\n")
    result = seqtrain("sample", str(run_dir), "--input-file", str(inputs), "--beam", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == "" and ISO.match(lines[0])


def test_evaluate_test_split_prints_decoding_metrics(trained):
    run_dir, _ = trained
    result = seqtrain("evaluate", str(run_dir), "split=test", "data.beam_size=3")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert {"bleu", "chrf", "exact_match", "token_accuracy", "loss"} <= set(metrics) and 0 <= metrics[
        "exact_match"
    ] <= 1


@pytest.mark.parametrize("beam", [1, 4])
def test_padding_never_changes_a_translation(trained, beam):
    run_dir, _ = trained
    _, model, state = load_model(run_dir)
    source, _ = seq2seq.tokenizers(state["vocab"])
    short, long = "3 mar 99", "Wednesday the 3rd of March, 1999"
    search = SearchOptions(beam_size=beam)
    ((_, alone),) = seq2seq.translate(model, source, [short], search)
    (_, batched), _ = seq2seq.translate(model, source, [short, long], search)
    assert alone.tokens == batched.tokens and alone.tokens
    assert_float32_close(alone.attention, batched.attention)
    assert alone.log_prob == pytest.approx(batched.log_prob, abs=1e-4)
