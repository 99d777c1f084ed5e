"""Character n-grams of words, hashed into a fixed number of buckets: fastText's subword units
(Bojanowski et al., 2017). A word never seen in training still gets a vector from its spelling:
"adroitly" shares n-grams with "adroit", "warmly" with "warm". Hashing leaves no n-gram vocabulary to
save, and crc32 gives every process the same ids (Python's own string hash is salted per process).
"""

from __future__ import annotations

import zlib

import torch

NGRAM_SIZES = (3, 4, 5)
PAD_BUCKET = 0


def char_ngrams(word: str) -> list[str]:
    """The 3- to 5-grams of the word between boundary marks: "<ok>" gives <ok, ok>, <ok>."""
    marked = f"<{word}>"
    return [marked[i : i + n] for n in NGRAM_SIZES for i in range(len(marked) - n + 1)]


def ngram_buckets(words: list[str], buckets: int) -> torch.Tensor:
    """(T, K) bucket ids in 1..buckets-1 of each word's n-grams, K the most any word has, padded with 0."""
    ids = [[1 + zlib.crc32(g.encode()) % (buckets - 1) for g in char_ngrams(word)] for word in words]
    width = max(len(x) for x in ids)
    return torch.tensor([x + [PAD_BUCKET] * (width - len(x)) for x in ids], dtype=torch.int32)


def pad_buckets(rows: list[torch.Tensor]) -> torch.Tensor:
    """Examples' (T_i, K_i) bucket ids -> (B, T_max, K), padded with 0 on both axes; K is the most
    n-grams any word of the batch has, so a long word elsewhere in the data set costs this batch nothing."""
    width = max(int((r != PAD_BUCKET).sum(1).max()) for r in rows)
    narrowed = [torch.nn.functional.pad(r, (0, max(0, width - r.size(1))), value=PAD_BUCKET)[:, :width] for r in rows]
    return torch.nn.utils.rnn.pad_sequence(narrowed, batch_first=True, padding_value=PAD_BUCKET)
