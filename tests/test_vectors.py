import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_float32_close
from seqtrain.data import vectors
from seqtrain.data.vectors import GLOVE, WORD2VEC_BINARY, WORD2VEC_TEXT, load_pretrained, write_word2vec_text
from seqtrain.errors import ConfigError, DataError

DIM = 4
# File order matters: "The" comes before "the", so lower-casing gives the vocabulary's "the" the vector of "The".
FILE_WORDS = ["The", "the", ",", "café", "<unk>", "Good", "日本", "unused"]
TABLE = np.random.default_rng(0).standard_normal((len(FILE_WORDS), DIM)).astype(np.float32)
VOCAB = ["<pad>", "<unk>", "<bos>", "<eos>", "the", "good", "café", "missing", "日本", ",", "rare"]
# vocabulary row -> file row, with str.lower; <unk> is in the file but specials are never matched
EXPECTED = {4: 0, 5: 5, 6: 3, 8: 6, 9: 2}
COUNTS = Counter({"the": 100, "good": 10, "café": 3, "missing": 30, "日本": 2, ",": 50, "rare": 5, "<unk>": 999})


def vector_text(row: np.ndarray) -> str:
    return " ".join(repr(float(x)) for x in row)


def write_format(path: Path, fmt: str, words=FILE_WORDS, table=TABLE, compress: bool = False) -> Path:
    """A vector file as word2vec, GloVe and fastText write them, made here byte by byte."""
    header = f"{len(words)} {table.shape[1]}\n".encode()
    if fmt == "word2vec-text":
        data = header + "".join(f"{w} {vector_text(v)}\n" for w, v in zip(words, table)).encode()
    elif fmt == "fasttext-vec":  # fastText ends every vector with a space
        data = header + "".join(f"{w} {vector_text(v)} \n" for w, v in zip(words, table)).encode()
    elif fmt == "glove":
        data = "".join(f"{w} {vector_text(v)}\n" for w, v in zip(words, table)).encode()
    else:  # word2vec binary, with or without the newline after each vector
        newline = b"\n" if fmt == "word2vec-binary" else b""
        data = header + b"".join(w.encode() + b" " + v.astype("<f4").tobytes() + newline for w, v in zip(words, table))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


FORMATS = {
    "word2vec-text": WORD2VEC_TEXT,
    "fasttext-vec": WORD2VEC_TEXT,
    "glove": GLOVE,
    "word2vec-binary": WORD2VEC_BINARY,
    "word2vec-binary-no-newline": WORD2VEC_BINARY,
}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_fills_the_vocabulary_rows_it_finds(tmp_path, monkeypatch, fmt, compress):
    monkeypatch.setattr(vectors, "BATCH_LINES", 2)  # several parse batches and buffer refills, even here
    monkeypatch.setattr(vectors, "CHUNK_BYTES", 5)
    path = write_format(tmp_path / "vectors", fmt, compress=compress)  # no suffix: the bytes tell the format
    pretrained = load_pretrained(path, VOCAB, str.lower, dim=DIM)
    assert pretrained.dim == DIM and pretrained.coverage.format == FORMATS[fmt]
    assert pretrained.vectors.dtype == torch.float32 and pretrained.vectors.shape == (len(VOCAB), DIM)
    assert pretrained.found.tolist() == [row in EXPECTED for row in range(len(VOCAB))]
    rows = list(EXPECTED)
    assert_float32_close(pretrained.vectors[rows], torch.from_numpy(TABLE[list(EXPECTED.values())]))
    assert not pretrained.vectors[~pretrained.found].any()


def test_a_binary_file_is_read_as_binary_whatever_its_name(tmp_path):
    path = write_format(tmp_path / "vectors.txt", "word2vec-binary")
    pretrained = load_pretrained(path, VOCAB, str.lower)
    assert pretrained.coverage.format == WORD2VEC_BINARY
    assert torch.equal(pretrained.vectors[4], torch.from_numpy(TABLE[0]))  # binary: no text in between, exact


def test_without_normalisation_words_match_exactly(tmp_path):
    path = write_format(tmp_path / "vectors.txt", "glove")
    pretrained = load_pretrained(path, VOCAB, None)
    assert_float32_close(pretrained.vectors[4], torch.from_numpy(TABLE[1]))  # "the", not "The"
    assert not pretrained.found[5]  # "Good" is not "good"


def test_specials_are_never_matched_even_when_the_file_has_them(tmp_path):
    path = write_format(tmp_path / "vectors.txt", "glove")
    assert not load_pretrained(path, VOCAB, str.lower).found[1]
    assert load_pretrained(path, VOCAB, str.lower, skip=()).found[1]  # "<unk>" is the file's fifth word


def test_a_glove_word_with_spaces_takes_the_last_dim_fields(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("a 1 2 3\nnew york 4 5 6\n. . . 7 8 9\nnew 0 0 1\n", encoding="utf-8")
    pretrained = load_pretrained(path, ["<pad>", "new york", "new", ". . ."], None, skip=[0])
    assert pretrained.vectors[1:].tolist() == [[4, 5, 6], [0, 0, 1], [7, 8, 9]]


def test_coverage_counts_words_and_tokens_and_lists_the_most_frequent_missing(tmp_path):
    path = write_format(tmp_path / "vectors.vec", "fasttext-vec")
    coverage = load_pretrained(path, VOCAB, str.lower, counts=COUNTS, top_missing=1).coverage
    assert (coverage.words, coverage.found) == (7, 5)  # specials excluded
    assert coverage.word_share == pytest.approx(5 / 7)
    assert (coverage.tokens, coverage.tokens_found) == (200, 165)  # <unk>'s 999 are not the vocabulary's words
    assert coverage.token_share == pytest.approx(165 / 200)
    assert coverage.missing == (("missing", 30),)
    full = load_pretrained(path, VOCAB, str.lower, counts=COUNTS).coverage
    assert full.missing == (("missing", 30), ("rare", 5))
    line = full.line()
    assert "\n" not in line and str(path) in line and "(word2vec text, 4-d): 5 of 7 words (71.4%)" in line
    assert "82.5% of training tokens" in line
    assert 'most frequent missing: "missing" (30), "rare" (5)' in line
    saved = json.loads(json.dumps(full.to_dict()))
    assert saved["found"] == 5 and saved["dim"] == DIM and saved["token_share"] == pytest.approx(0.825)
    assert saved["missing"] == [{"word": "missing", "count": 30}, {"word": "rare", "count": 5}]


def test_without_counts_the_missing_words_are_the_first_in_vocabulary_order(tmp_path):
    coverage = load_pretrained(write_format(tmp_path / "v.txt", "glove"), VOCAB, str.lower).coverage
    assert coverage.missing == (("missing", None), ("rare", None)) and coverage.token_share is None
    assert "first missing" in coverage.line() and "tokens" not in coverage.line()


def error_message(path: Path, cls: type = DataError, **kwargs) -> str:
    """Load expecting `cls` exactly; check the user-facing contract (exit 2, one line naming the file, nothing
    created) and return the message."""
    before = sorted(path.parent.iterdir())
    with pytest.raises(cls) as info:
        load_pretrained(path, kwargs.pop("words", VOCAB), kwargs.pop("normalize", str.lower), **kwargs)
    message = str(info.value)
    assert type(info.value) is cls and info.value.exit_code == 2
    assert "\n" not in message and str(path) in message
    assert sorted(path.parent.iterdir()) == before
    return message


def test_a_missing_file(tmp_path):
    assert "no such file" in error_message(tmp_path / "nope.txt")


@pytest.mark.parametrize("data", [b"", gzip.compress(b"")])
def test_an_empty_file(tmp_path, data):
    path = tmp_path / "empty.txt"
    path.write_bytes(data)
    assert "is empty" in error_message(path)


def test_a_header_announcing_no_words(tmp_path):
    path = tmp_path / "zero.vec"
    path.write_text("0 300\n")
    assert "is empty" in error_message(path)


@pytest.mark.parametrize("data", [b"\x1f\x8b\x08\x00garbage", gzip.compress(b"a 1 2\nb 3 4\n" * 1000)[:-40]])
def test_an_unreadable_gzip_file(tmp_path, data):
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(data)
    assert "cannot read" in error_message(path, words=["<pad>", "zz"], skip=[0])


def test_a_file_that_is_not_vectors_at_all(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\xba\x16\x4e\x2f\x0c\x00\x00\x00" + bytes(range(256)))  # a fastText .bin model's start
    assert "not a word2vec, GloVe or fastText .vec file" in error_message(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a 1 2 3\nb 1 2 3\nunused 1 2\n", "line 3: expected a word and 3 numbers, found 3 fields"),  # even unwanted
        ("2 3\na 1 2\nb 1 2 3\n", "line 2: expected a word and 3 numbers, found 3 fields"),
        ("2 3\na 1 2 3\nb 1 x 3\n", "line 3: 'x' is not a number"),
        ("a 1 2 3\nb 1 nan 3\n", "line 2: 'nan' is not a finite float32 value"),
        ("a 1 2 3\nb 1 1e39 3\n", "line 2: '1e39' is not a finite float32 value"),
        ("hello\n", "line 1: expected a 'count dim' header or a word and its vector, found one field"),
    ],
)
def test_a_malformed_line_is_named(tmp_path, monkeypatch, text, expected):
    monkeypatch.setattr(vectors, "BATCH_LINES", 1)  # the bad line in a later batch keeps its number
    path = tmp_path / "bad.txt"
    path.write_text(text)
    assert expected in error_message(path, words=["<pad>", "a", "b", "zz"], skip=[0])  # "zz": read to the end


@pytest.mark.parametrize("cut", [3, 4 * DIM + len("unused") + 1 + 1])  # inside the last vector; a whole word
def test_a_binary_file_cut_short(tmp_path, cut):
    path = write_format(tmp_path / "vectors.bin", "word2vec-binary")
    path.write_bytes(path.read_bytes()[:-cut])
    assert "cut short: the word2vec binary file ends in word 8 of 8" in error_message(path)


def test_a_text_file_shorter_than_its_header(tmp_path):
    path = tmp_path / "vectors.vec"
    path.write_text("10 2\nthe 1 2\ngood 3 4\n")
    assert "cut short: it ends after 2 of the 10 words" in error_message(path)


def test_a_dimension_other_than_the_configured_one_names_the_config_key(tmp_path):
    path = write_format(tmp_path / "vectors.txt", "glove")
    message = error_message(path, ConfigError, dim=300)
    assert f"holds {DIM}-dimensional vectors but model.embedding_dim=300; set model.embedding_dim={DIM}" in message


def test_a_file_without_any_vocabulary_word(tmp_path):
    path = write_format(tmp_path / "vectors.txt", "word2vec-text")
    assert "none of the 2 vocabulary words" in error_message(path, words=["<pad>", "<unk>", "<bos>", "<eos>", "x", "y"])


def test_written_vectors_read_back_bit_for_bit(tmp_path):
    words = ["<pad>", "a", "café", "日本", "e"]
    table = torch.tensor(
        [
            [0.1, -0.0, 1e-30, 3.4e38],
            [1.4e-45, 123456.789, -1 / 3, 2.0],
            [-7.5e-5, 1e-8, 6.0, -1.0],
            [float(np.float32(np.pi)), 0.0, -3.4e38, 5e-39],
            [1.0, 2.0, 3.0, 4.0],
        ]
    )
    for name in ("out.vec", "out.vec.gz"):
        assert write_word2vec_text(tmp_path / name, words, table) == 0
        back = load_pretrained(tmp_path / name, words, None, dim=DIM, skip=())
        assert back.found.all() and torch.equal(back.vectors.view(torch.int32), table.view(torch.int32))
    assert (tmp_path / "out.vec").read_text(encoding="utf-8").startswith("5 4\n<pad> 0.100000001 -0 1e-30 ")
    assert (tmp_path / "out.vec.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.vec", "out.vec.gz"]  # no partial files left


def test_words_with_whitespace_are_left_out_and_counted(tmp_path):
    words = ["ok", "new york", "", "tab\there", "no\u00a0break", "line\nbreak", "fine"]
    path = tmp_path / "out.txt"
    assert write_word2vec_text(path, words, torch.ones(len(words), 2)) == 5
    assert path.read_text(encoding="utf-8") == "2 2\nok 1 1\nfine 1 1\n"


def test_a_failed_write_creates_nothing(tmp_path):
    with pytest.raises(DataError, match="cannot write .*nowhere"):
        write_word2vec_text(tmp_path / "nowhere" / "out.txt", ["a"], torch.ones(1, 2))
    with pytest.raises(DataError, match="non-finite"):
        write_word2vec_text(tmp_path / "out.txt", ["a"], torch.tensor([[1.0, float("nan")]]))
    assert not any(tmp_path.iterdir())


def test_a_write_replaces_an_older_table(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("stale")
    write_word2vec_text(path, ["a"], torch.ones(1, 2))
    assert path.read_text() == "1 2\na 1 1\n"


def test_copy_into_an_embedding_overwrites_the_found_rows_only(tmp_path):
    pretrained = load_pretrained(write_format(tmp_path / "v.bin", "word2vec-binary"), VOCAB, str.lower)
    embedding = torch.nn.Embedding(len(VOCAB), DIM, padding_idx=0)
    before = embedding.weight.detach().clone()
    pretrained.copy_into(embedding.weight, match_std=False)
    found = pretrained.found
    assert torch.equal(embedding.weight[found], pretrained.vectors[found])
    assert torch.equal(embedding.weight[~found], before[~found])
    embedding.weight.data.copy_(before * 10)
    pretrained.copy_into(embedding.weight, match_std=True)  # Kim (2014): the rest at the pretrained scale
    assert torch.equal(embedding.weight[found], pretrained.vectors[found]) and not embedding.weight[0].any()
    rest = embedding.weight.detach()[~found]
    assert float(rest.std(correction=0)) == pytest.approx(float(pretrained.vectors[found].std(correction=0)), rel=1e-5)
    with pytest.raises(ValueError):
        pretrained.copy_into(torch.zeros(len(VOCAB), DIM + 1), match_std=False)
