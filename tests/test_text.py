import numpy as np
import pytest

from seqtrain.data.text import CharVocab, corpus_stats, iter_text, read_text, token_file
from seqtrain.errors import DataError


def test_vocab_encodes_known_chars_and_maps_unseen_to_unk():
    vocab = CharVocab(sorted("abc\n"))
    ids = vocab.encode("cab\nz")
    assert ids[-1] == 0 and all(i > 0 for i in ids[:-1])
    assert vocab.decode(ids[:-1]) == "cab\n"
    assert vocab.unseen("abz€") == ["z", "€"]
    assert CharVocab.from_dict(vocab.to_dict()).chars == vocab.chars


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nstill fine\nbad \xff here\n")
    with pytest.raises(DataError, match="line 3"):
        read_text(path)


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_text(tmp_path / "empty.txt")


def test_chunked_decoding_keeps_multibyte_characters_whole(tmp_path):
    text = "héllo wörld €uro\n" * 50
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    assert "".join(iter_text(path, chunk_bytes=7)) == text


def test_token_file_is_a_memory_map_equal_to_direct_encoding(tmp_path):
    text = "to be or not to be, ça va?\n" * 200
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    total, chars = corpus_stats(path, 0.9, tmp_path / "cache")
    vocab = CharVocab(chars)
    tokens = token_file(path, vocab, tmp_path / "cache")
    assert isinstance(tokens, np.memmap) and total == len(text)
    assert np.array_equal(np.asarray(tokens), vocab.encode(text))
    again = token_file(path, vocab, tmp_path / "cache")
    assert again.filename == tokens.filename  # encoded once, then mapped


def test_gzip_files_are_read_and_a_broken_one_is_a_clear_error(tmp_path):
    import gzip

    (tmp_path / "t.txt.gz").write_bytes(gzip.compress("grüße\nzwei\n".encode()))
    assert "".join(iter_text(tmp_path / "t.txt.gz", chunk_bytes=3)) == "grüße\nzwei\n"
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="broken.gz is not a readable gzip file"):
        read_text(tmp_path / "broken.gz")
