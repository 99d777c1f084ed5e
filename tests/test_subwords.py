import subprocess
import sys

import torch

from seqtrain.data.subwords import PAD_BUCKET, char_ngrams, ngram_buckets, pad_buckets


def test_char_ngrams_are_the_3_to_5_grams_between_boundary_marks():
    assert char_ngrams("ok") == ["<ok", "ok>", "<ok>"]
    assert char_ngrams("a") == ["<a>"]
    assert len(char_ngrams("warmly")) == 6 + 5 + 4  # "<warmly>" has 8 characters


def test_a_derived_word_shares_the_buckets_of_its_stem():
    warm, warmly = (set(ngram_buckets([w], 1 << 15)[0].tolist()) for w in ("warm", "warmly"))
    assert {"<wa", "war", "arm", "<war", "warm", "<warm"} <= set(char_ngrams("warm")) & set(char_ngrams("warmly"))
    assert len(warm & warmly) >= 6


def test_buckets_are_in_range_and_each_row_is_padded_to_the_longest_word():
    ids = ngram_buckets(["a", "remarkable", "film"], 100)  # (T, K)
    assert ids.shape == (3, len(char_ngrams("remarkable")))
    assert ((ids >= 1) & (ids < 100))[0, :1].all() and (ids[0, 1:] == PAD_BUCKET).all()
    assert ((ids[1] >= 1) & (ids[1] < 100)).all()


def test_bucket_ids_do_not_depend_on_the_process_string_hash_seed():
    code = (
        "from seqtrain.data.subwords import ngram_buckets; print(ngram_buckets(['moving', 'dull'], 1 << 15).tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {str(ngram_buckets(["moving", "dull"], 1 << 15).tolist()) + "\n"}


def test_pad_buckets_pads_words_and_n_grams_with_zero():
    short, long = ngram_buckets(["ok"], 50), ngram_buckets(["a", "wonderful"], 50)
    batch = pad_buckets([short, long])  # (B, T, K)
    assert batch.shape == (2, 2, long.size(1))
    assert torch.equal(batch[1], long)
    assert torch.equal(batch[0, 0, :3], short[0]) and (batch[0, 0, 3:] == 0).all() and (batch[0, 1] == 0).all()


def test_pad_buckets_keeps_only_the_columns_the_batch_needs():
    table = ngram_buckets(["a", "extraordinarily"], 50)  # (2, K) with K set by the long word
    batch = pad_buckets([table[torch.tensor([0, 0])]])  # a batch holding only "a a"
    assert table.size(1) > 1 and batch.shape == (1, 2, 1)
