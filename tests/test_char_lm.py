import math

import pytest
import torch

from conftest import assert_float32_close
from seqtrain.data.windows import StreamDataset, WindowDataset, collate_windows
from seqtrain.errors import ConfigError, DataError
from seqtrain.models.language_model import RecurrentLM
from seqtrain.models.sampling import sample_next
from seqtrain.recipe import SampleOptions
from seqtrain.recipes import char_lm
from seqtrain.recipes.char_lm import CharLM


def test_loss_of_an_example_is_the_same_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    model = RecurrentLM(20, "gru", 16, 2, 8).eval()
    tokens = torch.randint(1, 20, (300,)).numpy()
    data = WindowDataset(tokens, 64)
    last = len(data) - 1  # the short final window
    assert data.lengths[last] < 64
    alone = char_lm.step(model, collate_windows([data[last]]))[1]
    batch = char_lm.step(model, collate_windows([data[0], data[last]]))[1]
    first = char_lm.step(model, collate_windows([data[0]]))[1]
    assert_float32_close(batch["loss_sum"], alone["loss_sum"] + first["loss_sum"])
    assert batch["tokens"] == alone["tokens"] + first["tokens"]


def test_summary_gives_bits_per_character_and_perplexity():
    metrics = CharLM().summarize({"loss_sum": torch.tensor(2.0 * 100), "tokens": torch.tensor(100.0)})
    assert metrics == pytest.approx({"loss": 2.0, "bpc": 2.0 / math.log(2), "perplexity": math.exp(2.0)})


def test_scoring_windows_are_eval_seq_len_long_and_give_each_character_its_window_as_context(corpus):
    data = char_lm.DataConfig(source="text", path=str(corpus), seq_len=32, eval_seq_len=1000, batch_size=4)
    prepared = CharLM().prepare(data, None, ("train", "valid"))
    train, valid = prepared.splits["train"], prepared.splits["valid"]
    assert max(train.lengths) == 32 and valid.lengths[0] == 1000
    assert sum(valid.lengths) == len(valid.tokens) - 1  # every character but the first is scored, once
    torch.manual_seed(0)
    model = (
        CharLM().build_model(char_lm.ModelConfig(hidden_size=16, num_layers=1, embedding_dim=8), prepared.vocab).eval()
    )
    window = collate_windows([valid[0]])
    scored = char_lm.step(model, window)[1]["loss_sum"]
    logits, _ = model(window["tokens"])  # one call over the whole window: full context
    expected = torch.nn.functional.cross_entropy(logits[0], window["targets"][0], reduction="sum")
    assert_float32_close(scored, expected)
    short = collate_windows([WindowDataset(valid.tokens[:1001], 32)[i] for i in range(0, 32)])
    assert not torch.isclose(char_lm.step(model, short)[1]["loss_sum"], scored)  # cut context, another loss


def test_stream_windows_continue_each_row_of_the_previous_batch():
    tokens = torch.arange(1, 202).numpy()
    data = StreamDataset(tokens, seq_len=10, streams=4)
    first = collate_windows([data[i] for i in range(4)])
    second = collate_windows([data[i] for i in range(4, 8)])
    assert first["stream"] == "start" and second["stream"] == "continue"
    assert torch.equal(second["tokens"][:, 0], first["targets"][:, -1])


def test_stateful_model_carries_and_checkpoints_its_state():
    model = RecurrentLM(10, "lstm", 8, 1, 4)
    model(torch.randint(10, (2, 5)), stream="start")
    carry = model.carry
    fresh = RecurrentLM(10, "lstm", 8, 1, 4)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.carry[0], carry[0]) and not carry[0].requires_grad


def test_weight_tying_shares_the_embedding():
    model = RecurrentLM(30, "lstm", 48, 1, 16, tie_weights=True)
    assert model.head.weight is model.embedding.weight and model.projection.out_features == 16
    with pytest.raises(ValueError):
        RecurrentLM(30, "lstm", 48, 1, 0, tie_weights=True)


def test_one_hot_input_works_without_an_embedding():
    model = RecurrentLM(12, "rnn_relu", 8, 1, embedding_dim=0)
    logits, _ = model(torch.randint(12, (3, 4)))
    assert logits.shape == (3, 4, 12)


def test_sampling_filters_respect_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {0, 1}
    draws = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert draws == {0, 1}
    assert int(sample_next(logits, 0.0)) == 0


def test_generation_is_seeded_and_rejects_unseen_prompt_characters():
    vocab = char_lm.CharVocab(list("ab \n"))
    model = RecurrentLM(len(vocab), "gru", 8, 1, 4)
    one = "".join(char_lm.generate(model, vocab, "ab", 30, seed=3))
    two = "".join(char_lm.generate(model, vocab, "ab", 30, seed=3))
    assert one == two and len(one) == 30 and set(one) <= set("ab \n")
    with pytest.raises(DataError, match="never seen in training: 'z'"):
        char_lm.generate(model, vocab, "abz", 5)


def test_sample_refuses_options_of_other_recipes():
    with pytest.raises(ConfigError, match="--prompt"):
        CharLM().sample(None, {"chars": ["a"]}, SampleOptions(text="hello"), print)


def test_stdlib_corpus_is_real_python_source(tmp_path):
    path = char_lm.stdlib_corpus(tmp_path, 20_000)
    text = path.read_text()
    assert len(text) == 20_000 and "def " in text and "import " in text


def test_tinyshakespeare_option_downloads_from_its_url_and_checks_it(tmp_path, corpus):
    import hashlib
    import http.server
    import io
    import threading
    from functools import partial

    from rich.console import Console

    from seqtrain import config, runs

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "input.txt").write_bytes(corpus.read_bytes())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/input.txt"
    try:
        overrides = [
            "data=tinyshakespeare",
            f"data.url={url}",
            f"data.sha256={hashlib.sha256(corpus.read_bytes()).hexdigest()}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.hidden_size=16",
            "model.num_layers=1",
            "trainer.max_time=null",
            "trainer.max_steps=3",
            f"run_dir={tmp_path / 'run'}",
        ]
        run_dir, metrics = runs.fit(config.compose("char_lm", overrides), Console(file=io.StringIO()))
    finally:
        httpd.shutdown()
    assert (tmp_path / "cache" / "tinyshakespeare.txt").read_bytes() == corpus.read_bytes()
    assert metrics["loss"] > 0
