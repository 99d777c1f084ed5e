"""Starting an embedding table from pretrained word vectors (transfer learning, Kim 2014).

The vocabulary's tokens are matched to the file's words after the tokenizers' own normalisation: word
vocabularies are lower-cased, so the file's words are lower-cased too; a sentencepiece piece is matched
without its word-start mark (▁), so "▁moving" and "moving" both take the vector of "moving"; characters
match one-letter words. Tokens without a vector keep the model's initialisation, rescaled to the pretrained
vectors' spread. The vectors end up in the model's weights, so a run's checkpoints hold them and nothing
later (resume, evaluate, sample, export, init_from) reads the file again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from seqtrain.data.tokenizers import Tokenizer
from seqtrain.data.vectors import Coverage, load_pretrained


def start_from_vectors(
    embedding: nn.Embedding, path: str, tokenizer: Tokenizer, token_ids: Iterable[Sequence[int]]
) -> Coverage:
    """Overwrite `embedding`'s rows of the tokens found in the vector file `path`; `token_ids` (the training
    split's encoded texts) give the token counts of the coverage report. Returns the coverage."""
    pieces = tokenizer.pieces()
    words = [p.removeprefix("▁").lower() for p in pieces] if tokenizer.kind == "sentencepiece" else pieces
    counts = torch.zeros(len(pieces), dtype=torch.long)
    for ids in token_ids:
        counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long), minlength=len(pieces))
    by_word: dict[str, int] = {}
    for word, count in zip(words, counts.tolist()):
        by_word[word] = by_word.get(word, 0) + count
    found = load_pretrained(path, words, str.lower, dim=embedding.embedding_dim, counts=by_word)
    found.copy_into(embedding.weight, match_std=True)
    return found.coverage
