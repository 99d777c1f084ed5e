"""Tokenizers that travel as plain data.

A tokenizer is saved inside checkpoints (read with `torch.load(weights_only=True)`) and in vocab.json,
so `to_dict()` returns only strings, ints and lists: a sentencepiece model travels as base64 of its
serialized proto, never as a pickled object. Every tokenizer reserves the same four ids, so a model or
a collate function never asks which kind it got:

    0 <pad>   1 <unk>   2 <bos>   3 <eos>

`encode` never adds <bos>/<eos> (a classifier does not want them); sequence-to-sequence code adds them.
Build one with `build_tokenizer(texts, kind=...)` on the training texts only; rebuild a saved one with
`tokenizer_from_dict`.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

import sentencepiece as spm

from seqtrain.errors import ConfigError, DataError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIALS))
KINDS = ("word", "sentencepiece", "char")
SP_MODEL_TYPES = ("bpe", "unigram")

# A word, with inner apostrophes ("don't"); a clitic as PTB writes it ("'s", "n't" is a word); or one
# punctuation mark. SST-2 is already split this way, so its tokens come through unchanged.
_WORD = re.compile(r"\w+(?:'\w+)*|'\w+|[^\w\s]")


class Tokenizer(Protocol):
    kind: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def __len__(self) -> int: ...

    def pieces(self) -> list[str]: ...  # each id's text, specials included

    def to_dict(self) -> dict: ...


class SymbolTokenizer:
    """A fixed list of symbols after the specials; a subclass says only how text splits and joins."""

    kind = ""

    def __init__(self, symbols: Sequence[str]):
        self.symbols = [*SPECIALS, *symbols]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols):
            raise DataError(f"the {self.kind} vocabulary has duplicate or reserved symbols")

    @staticmethod
    def split(text: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def join(symbols: list[str]) -> str:
        raise NotImplementedError

    @classmethod
    def train(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> SymbolTokenizer:
        """Keep symbols seen at least `min_freq` times, the most frequent first (ties alphabetical), so
        that the vocabulary, specials included, has at most `max_size` entries."""
        counts = Counter(s for text in texts for s in cls.split(text))
        kept = sorted(
            (s for s, n in counts.items() if n >= min_freq and s not in SPECIALS), key=lambda s: (-counts[s], s)
        )
        if max_size is not None:
            kept = kept[: max(max_size - len(SPECIALS), 0)]
        if not kept:
            raise DataError(f"no {cls.kind} seen at least {min_freq} times in the training texts")
        return cls(kept)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(s, UNK_ID) for s in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.join([self.symbols[i] for i in ids if i != PAD_ID])

    def __len__(self) -> int:
        return len(self.symbols)

    def pieces(self) -> list[str]:
        return list(self.symbols)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols[len(SPECIALS) :]}

    @classmethod
    def from_dict(cls, data: dict) -> SymbolTokenizer:
        return cls(data["symbols"])


class WordTokenizer(SymbolTokenizer):
    """Lower-cased words and punctuation marks; words outside the vocabulary become <unk>."""

    kind = "word"

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    @staticmethod
    def join(symbols: list[str]) -> str:
        return " ".join(symbols)


class CharTokenizer(SymbolTokenizer):
    """Characters as they are (case kept); characters never seen in training become <unk>."""

    kind = "char"

    @staticmethod
    def split(text: str) -> list[str]:
        return list(text)

    @staticmethod
    def join(symbols: list[str]) -> str:
        return "".join(symbols)


class SentencePieceTokenizer:
    """Subword pieces (BPE or unigram) learnt from the training texts, so rare words are spelt from
    pieces instead of becoming <unk>. The model is trained in memory and kept as its serialized proto."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, model_type: str = "unigram") -> SentencePieceTokenizer:
        if model_type not in SP_MODEL_TYPES:
            raise ConfigError(f"sentencepiece model_type={model_type!r} is unknown; valid: {', '.join(SP_MODEL_TYPES)}")
        proto = io.BytesIO()
        spm.set_min_log_level(1)  # warnings only: the trainer's progress lines would flood the console
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(t for t in texts if t.strip()),
                model_writer=proto,
                vocab_size=vocab_size,
                model_type=model_type,
                hard_vocab_limit=False,  # small corpora get fewer pieces
                character_coverage=1.0,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                num_threads=os.cpu_count() or 1,
            )
        except RuntimeError as e:
            raise DataError(f"sentencepiece could not train on the training texts: {e}") from e
        return cls(proto.getvalue())

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids if i != PAD_ID])

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def pieces(self) -> list[str]:
        return [self.processor.id_to_piece(i) for i in range(len(self))]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}

    @classmethod
    def from_dict(cls, data: dict) -> SentencePieceTokenizer:
        return cls(base64.b64decode(data["model"]))


CLASSES: dict[str, type] = {"word": WordTokenizer, "sentencepiece": SentencePieceTokenizer, "char": CharTokenizer}


def build_tokenizer(
    texts: Sequence[str],
    kind: str = "word",
    vocab_size: int = 8000,
    min_freq: int = 1,
    max_size: int | None = None,
    model_type: str = "unigram",
) -> Tokenizer:
    """Learn a tokenizer from the training texts, from plain config values. `vocab_size` and
    `model_type` apply to sentencepiece; `min_freq` and `max_size` to word and char vocabularies."""
    if kind not in CLASSES:
        raise ConfigError(f"tokenizer kind={kind!r} is unknown; valid: {', '.join(KINDS)}")
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, vocab_size, model_type)
    return CLASSES[kind].train(texts, min_freq, max_size)


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from `to_dict()` output (read from a checkpoint or vocab.json)."""
    kind = data.get("kind")
    if kind not in CLASSES:
        raise DataError(f"unknown tokenizer kind {kind!r} in the saved vocabulary; valid: {', '.join(KINDS)}")
    return CLASSES[kind].from_dict(data)
