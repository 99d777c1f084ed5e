"""seqtrain export: for every recipe and format the export computes what the run's model computes, on
real inputs of different lengths, padded rows included; char_lm samples and seq2seq translations are
identical; bad input is one line, exit 2, nothing overwritten.

Tolerances are in float32 ulps of the largest value compared (conftest.assert_float32_close), one
number per recipe. onnxruntime's LSTM/GRU kernels and MLAS matmuls (and TorchScript's fused graph) sum
in another order than eager PyTorch, which moves each product-sum by a few ulps of its largest terms,
and a recurrence carries that through its steps; another machine (AVX-512, another BLAS) moves it
again. Measured here (AVX2): at most 2 ulps for every recipe. Allowed: char_lm (logits up to ~10 over
32 steps), sentiment (probabilities) and seq2seq (encoder states, step logits, attention) 64 ulps;
speech 128, because its features pass an FFT (pocketfft vs onnxruntime's DFT) and a log near the floor
before the CRDNN.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_float32_close, seqtrain, tiny_overrides
from seqtrain import exported
from seqtrain.config import load_run_config
from seqtrain.data.collate import pad
from seqtrain.models.decoding import SearchOptions
from seqtrain.recipes import seq2seq
from seqtrain.rundir import load_model

ULPS = {"char_lm": 64, "sentiment": 64, "seq2seq": 64, "speech": 128}
FIT = {
    "sentiment": [
        "data.n_train=1000",
        "data.n_valid=100",
        "model.hidden_size=32",
        "model.embedding_dim=16",
        "trainer.max_steps=20",
        "trainer.max_epochs=null",
        "trainer.max_time=null",
    ],
    "seq2seq": [
        "data.n_train=1000",
        "data.n_valid=50",
        "data.n_test=50",
        "model.hidden_size=32",
        "model.embedding_dim=16",
        "trainer.max_steps=30",
        "trainer.val_every_steps=30",
        "trainer.max_time=null",
    ],
    "speech": [
        "data.size=160",
        "data.batch_size=16",
        "data.cache_audio=true",
        "model.cnn_channels=[8,16]",
        "model.rnn_hidden=32",
        "model.rnn_layers=1",
        "model.dnn_sizes=[32]",
        "trainer.max_steps=10",
        "trainer.max_epochs=null",
        "trainer.max_time=null",
    ],
}
FORMATS = ["onnx", "torchscript"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """One tiny run per recipe, trained lazily (a few seconds each)."""
    root, made = tmp_path_factory.mktemp("export"), {}

    def get(recipe: str):
        if recipe not in made:
            overrides = tiny_overrides(corpus) if recipe == "char_lm" else FIT[recipe]
            result = seqtrain("fit", f"recipe={recipe}", f"run_dir={root / recipe}", *overrides)
            assert result.exit_code == 0, result.output
            made[recipe] = root / recipe
        return made[recipe]

    return get


@pytest.fixture(scope="module")
def export(trained):
    """(run dir, export dir) of a recipe in a format, exported once."""
    made = {}

    def get(recipe: str, format: str):
        if format == "onnx":
            pytest.importorskip(
                "onnxruntime", reason="the ONNX tests need onnxruntime (pip install 'seqtrain[export]')"
            )
        if (recipe, format) not in made:
            run_dir = trained(recipe)
            result = seqtrain("export", run_dir, "--format", format, "--out", run_dir / f"export-{format}")
            assert result.exit_code == 0, result.output
            made[recipe, format] = run_dir, run_dir / f"export-{format}"
        return made[recipe, format]

    return get


def models(run_dir, export_dir):
    """(the run's model, the export as the model) and the recipe module."""
    module, model, state = load_model(run_dir)
    _, exported_model, _ = exported.load_model(export_dir)
    return module, model, exported_model, state


@pytest.mark.parametrize("format", FORMATS)
def test_char_lm_logits_equal_the_model_on_padded_windows(export, format):
    run_dir, export_dir = export("char_lm", format)
    module, model, ported, state = models(run_dir, export_dir)
    prepared = module.prepare(load_run_config(run_dir).data, state["vocab"], ("valid",))
    windows = [prepared.splits["valid"][i] for i in (0, 1, 2)]
    batch = prepared.collate([{k: item[k][:n] for k in ("tokens", "targets")} for item, n in zip(windows, (32, 9, 20))])
    with torch.no_grad():
        expected, _ = model(batch["tokens"], batch["lengths"])
        actual, _ = ported(batch["tokens"])
    for row, n in enumerate(batch["lengths"].tolist()):  # real positions; the model reads left to right
        assert_float32_close(actual[row, :n], expected[row, :n], ULPS["char_lm"])


@pytest.mark.parametrize("format", FORMATS)
def test_char_lm_export_samples_the_same_200_characters(export, format):
    run_dir, export_dir = export("char_lm", format)
    args = ["--prompt", "the ", "--length", "200", "--temperature", "0.8", "--top-k", "10", "--seed", "3"]
    original, again = (
        seqtrain("sample", run_dir, *args),
        seqtrain("sample", export_dir / f"model{'.onnx' if format == 'onnx' else '.pt'}", *args),
    )
    assert original.exit_code == again.exit_code == 0, again.output
    assert len(original.stdout) == len("the ") + 200 + 1 and again.stdout == original.stdout


@pytest.mark.parametrize("format", FORMATS)
def test_sentiment_probabilities_equal_the_model_and_ignore_padding(export, format):
    run_dir, export_dir = export("sentiment", format)
    module, model, ported, state = models(run_dir, export_dir)
    texts = [
        "not bad at all , actually quite moving",
        "dull",
        "the film is dull at first , but brilliant in the end",
        "fine .",
    ]
    batch = module.prepare_inputs(state["vocab"], texts).collate(
        list(module.prepare_inputs(state["vocab"], texts).splits["inputs"])
    )
    assert len(set(batch["lengths"].tolist())) == len(texts)
    with torch.no_grad():
        expected, actual = module.predict(model, batch), module.predict(ported, batch)
        alone = torch.cat(
            [
                module.predict(
                    ported,
                    {
                        k: v[i : i + 1, : int(batch["lengths"][i])] if k == "tokens" else v[i : i + 1]
                        for k, v in batch.items()
                        if k in ("tokens", "lengths")
                    },
                )
                for i in range(len(texts))
            ]
        )
    assert_float32_close(actual, expected, ULPS["sentiment"])
    assert_float32_close(alone, actual, ULPS["sentiment"])


@pytest.mark.parametrize("format", FORMATS)
def test_seq2seq_parts_equal_the_model_and_translate_identically(export, format):
    run_dir, export_dir = export("seq2seq", format)
    module, model, ported, state = models(run_dir, export_dir)
    source, _ = seq2seq.tokenizers(state["vocab"])
    texts = ["3rd of March, 1999", "1/2/03", "Monday, 14 July 2014", "the 9th of May 1970", "12.12.12"]
    src, lengths = pad([torch.tensor(source.encode(t)) for t in texts])
    with torch.no_grad():
        expected, actual = model.encode(src, lengths), ported.encode(src, lengths)
        for name in ("h", "feed", "memory", "keys"):
            assert_float32_close(getattr(actual, name), getattr(expected, name), ULPS["seq2seq"], msg=name)
        assert torch.equal(actual.mask, expected.mask)
        prev = torch.full((len(texts),), 2)
        (logits, _, weights), (logits2, _, weights2) = model.step(expected, prev), ported.step(actual, prev)
    assert_float32_close(logits2, logits, ULPS["seq2seq"])
    assert_float32_close(weights2, weights, ULPS["seq2seq"])
    for beam in (1, 4):
        mine = [h.tokens for _, h in seq2seq.translate(model, source, texts, SearchOptions(beam_size=beam))]
        theirs = [h.tokens for _, h in seq2seq.translate(ported, source, texts, SearchOptions(beam_size=beam))]
        assert theirs == mine


@pytest.mark.parametrize("format", FORMATS)
def test_speech_probabilities_from_waveforms_equal_the_model(export, format):
    run_dir, export_dir = export("speech", format)
    module, model, ported, state = models(run_dir, export_dir)
    prepared = module.prepare(module.DataConfig(size=160), state["vocab"], ("valid",))
    items = [prepared.splits["valid"][i] for i in range(4)]
    batch = prepared.collate(items)
    cut = batch["lengths"].clone()
    cut[1] = cut[1] // 2  # a shorter utterance in the same padded batch
    batch["audio"][1, cut[1] :] = 0
    batch["lengths"] = cut
    with torch.no_grad():
        expected, actual = module.predict(model, batch), module.predict(ported, batch)
    assert_float32_close(actual, expected, ULPS["speech"])


def test_bad_input_is_one_line_exit_2_and_overwrites_nothing(export, tmp_path):
    run_dir, export_dir = export("char_lm", "torchscript")
    before = (export_dir / "model.pt").read_bytes()
    (tmp_path / "empty").mkdir()
    for args, says in (
        ([tmp_path / "empty"], "no checkpoint"),
        ([run_dir, "--format", "tflite"], "unknown export format 'tflite'"),
        ([run_dir, "--format", "torchscript", "--out", export_dir], "exists"),
    ):
        result = seqtrain("export", *args)
        assert result.exit_code == 2 and result.output.count("error:") == 1 and says in result.output, result.output
    assert (export_dir / "model.pt").read_bytes() == before
    assert not list(run_dir.glob(".export-*")) and not (tmp_path / "empty" / "export").exists()


def test_an_onnx_file_that_is_not_seqtrains_is_refused(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    foreign = tmp_path / "net.onnx"
    torch.onnx.export(torch.nn.Linear(2, 3), (torch.zeros(1, 2),), str(foreign), dynamo=False)
    result = seqtrain("sample", foreign, "--text", "hi")
    assert result.exit_code == 2 and "not a seqtrain export" in result.output, result.output
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "recipe": "sentiment",
                "format": "onnx",
                "graphs": {"model": {"file": "net.onnx", "inputs": [], "outputs": []}},
            }
        )
    )
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("recipe: sentiment\n")
    result = seqtrain("sample", foreign, "--text", "hi")
    assert result.exit_code == 2 and "not a seqtrain export of a sentiment run" in result.output, result.output


@pytest.mark.parametrize("format", FORMATS)
def test_subword_runs_export_and_predict_as_the_model_does(tmp_path, format):
    if format == "onnx":
        pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime (pip install 'seqtrain[export]')")
    run_dir = tmp_path / "run"
    result = seqtrain(
        "fit",
        "recipe=sentiment",
        f"run_dir={run_dir}",
        "data.subword_buckets=64",
        *FIT["sentiment"][:4],
        "trainer.max_steps=5",
        "trainer.max_epochs=null",
        "trainer.max_time=null",
    )
    assert result.exit_code == 0, result.output
    assert seqtrain("export", run_dir, "--format", format).exit_code == 0
    module, model, ported, state = models(run_dir, run_dir / "export")
    inputs = module.prepare_inputs(
        state["vocab"], ["an unseenword here", "not bad at all", "good"]
    )  # padded rows: all-padding bags
    batch = inputs.collate(list(inputs.splits["inputs"]))
    with torch.no_grad():
        assert_float32_close(module.predict(ported, batch), module.predict(model, batch), ULPS["sentiment"])


def test_a_traced_li_gru_keeps_its_loop_for_any_length():
    from seqtrain.models.rnn import RecurrentStack

    stack = RecurrentStack("ligru", 3, 4, num_layers=2, bidirectional=True).eval().requires_grad_(False)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    traced = torch.jit.trace(lambda x, lengths: stack(x, lengths)[0], (x, lengths), check_trace=False)
    longer, other = torch.randn(3, 9, 3), torch.tensor([9, 4, 7])
    assert_float32_close(traced(longer, other), stack(longer, other)[0], 8)
