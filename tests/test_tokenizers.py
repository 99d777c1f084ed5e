import io
import json

import pytest
import torch

from seqtrain.data.synthetic_sentiment import make_splits
from seqtrain.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    CharTokenizer,
    WordTokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from seqtrain.errors import ConfigError, DataError

TEXTS = ["It's a charming film!", "The plot is not good, it's dull.", "a charming , dull film"]


def round_trip(tokenizer):
    """What a checkpoint does to it: JSON for vocab.json, torch.save/load(weights_only=True) for checkpoints."""
    data = json.loads(json.dumps(tokenizer.to_dict()))
    buffer = io.BytesIO()
    torch.save({"vocab": tokenizer.to_dict()}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["vocab"] == data
    return tokenizer_from_dict(data)


def test_word_tokenizer_splits_lowercases_and_maps_unknowns():
    tok = build_tokenizer(TEXTS, kind="word")
    assert tok.split("Don't STOP, it 's n't over.") == ["don't", "stop", ",", "it", "'s", "n't", "over", "."]
    ids = tok.encode("A CHARMING zebra")
    assert ids[2] == UNK_ID and ids[0] == tok.index["a"]
    assert tok.decode(ids + [PAD_ID, PAD_ID]) == "a charming <unk>"
    assert tok.symbols[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and (PAD_ID, BOS_ID, EOS_ID) == (0, 2, 3)


def test_word_vocabulary_respects_min_freq_and_max_size():
    texts = ["a a a b b c"]
    assert WordTokenizer.train(texts, min_freq=2).symbols[4:] == ["a", "b"]
    capped = WordTokenizer.train(texts, max_size=5)
    assert len(capped) == 5 and capped.symbols[4:] == ["a"]  # the most frequent survive
    with pytest.raises(DataError, match="at least 9 times"):
        WordTokenizer.train(texts, min_freq=9)


def test_char_tokenizer_keeps_case_and_round_trips():
    tok = build_tokenizer(["Hallo Welt"], kind="char")
    assert tok.decode(tok.encode("Hallo")) == "Hallo"
    assert tok.encode("Hx")[1] == UNK_ID
    again = round_trip(tok)
    assert isinstance(again, CharTokenizer) and again.encode("Welt") == tok.encode("Welt")


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_trains_in_memory_and_survives_a_checkpoint(model_type):
    texts, _ = make_splits(n_train=600, n_valid=10, seed=0)["train"]
    tok = build_tokenizer(texts, kind="sentencepiece", vocab_size=120, model_type=model_type)
    assert len(tok) <= 120
    sentence = texts[0]
    ids = tok.encode(sentence)
    assert ids and PAD_ID not in ids and tok.decode(ids + [PAD_ID]) == sentence
    again = round_trip(tok)
    assert len(again) == len(tok) and again.encode(sentence) == ids
    assert UNK_ID in tok.encode("zebra §")  # characters never seen in training


def test_sentencepiece_copes_with_a_vocab_size_larger_than_the_corpus_allows():
    tok = build_tokenizer(["tiny corpus", "very tiny"], kind="sentencepiece", vocab_size=5000, model_type="bpe")
    assert 4 < len(tok) < 100


def test_bad_kinds_and_saved_vocabularies_are_clear_errors():
    with pytest.raises(ConfigError, match="valid: word, sentencepiece, char"):
        build_tokenizer(TEXTS, kind="bytes")
    with pytest.raises(ConfigError, match="model_type"):
        build_tokenizer(TEXTS, kind="sentencepiece", model_type="wordpiece")
    with pytest.raises(DataError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"chars": ["a"]})
    with pytest.raises(DataError, match="could not train"):
        build_tokenizer(["", "  "], kind="sentencepiece")
