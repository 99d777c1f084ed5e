"""Parallel text: readers, encoded sentence pairs for the trainer, and their collation.

Line i of the source file is translated by line i of the target file.

Files hold one sentence per line, UTF-8, plain or gzip-compressed (`.gz`); bytes that are not UTF-8
are reported with their line number. Lines are split on "\\n" only (a trailing "\\r" is dropped):
`str.splitlines` would also split inside a sentence at characters such as U+2028 and so misalign the
two sides. Files are read whole; parallel corpora for these models are megabytes, not gigabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqtrain.data.collate import lengths_to_mask, pad
from seqtrain.data.text import iter_text
from seqtrain.errors import DataError

Pairs = tuple[list[str], list[str]]  # (sources, targets)

# Multi30k task 1 (multi30k/dataset, data/task1/raw): seqtrain's split -> the file stem.
MULTI30K = {"train": "train", "valid": "val"}


def read_lines(path: str | Path) -> list[str]:
    """The stripped lines of a text file (`.gz` is decompressed)."""
    text = "".join(iter_text(Path(path)))
    return [line.strip() for line in text.removesuffix("\n").split("\n")] if text else []


def read_parallel(source: str | Path, target: str | Path) -> Pairs:
    """Both sides of a parallel corpus; their line counts must agree."""
    sources, targets = read_lines(source), read_lines(target)
    if len(sources) != len(targets):
        raise DataError(
            f"parallel files differ in length: {source} has {len(sources)} lines, {target} has {len(targets)}"
        )
    if not sources:
        raise DataError(f"{source} and {target} are empty")
    return sources, targets


def multi30k_files(
    root: str | Path, split: str, test_set: str, source_lang: str, target_lang: str
) -> tuple[Path, Path]:
    """The (source, target) files of a Multi30k task-1 split: `<stem>.<lang>.gz`, or uncompressed."""
    stem = MULTI30K.get(split, test_set)
    files = []
    for lang in (source_lang, target_lang):
        candidates = [Path(root) / f"{stem}.{lang}.gz", Path(root) / f"{stem}.{lang}"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise DataError(f"Multi30k: neither {candidates[0]} nor {candidates[1]} exists (data.root={root})")
        files.append(found[0])
    return files[0], files[1]


class PairDataset:
    """Encoded pairs (token ids, without BOS/EOS) and, for held-out splits, the reference texts.

    `lengths` is source + target tokens (EOS included): what an example costs, encoder steps plus
    decoder steps. Bucketing by it groups pairs of similar source and target length (the two grow
    together), and `data.max_tokens` budgets the padded tokens of both sides at once.
    """

    def __init__(self, sources: list[list[int]], targets: list[list[int]], references: list[str] | None = None):
        self.sources, self.targets, self.references = sources, targets, references
        self.lengths = [len(s) + len(t) + 1 for s, t in zip(sources, targets)]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[list[int], list[int], str | None]:
        return self.sources[i], self.targets[i], None if self.references is None else self.references[i]


def collate_pairs(
    examples: list[tuple[list[int], list[int], str | None]], bos: int, eos: int, pad_id: int, scoring: Any = None
) -> dict:
    """Pad a batch. The decoder reads `tgt_in` (BOS + target) and predicts `tgt_out` (target + EOS).
    Batches of held-out pairs also carry their `references` and the recipe's `scoring` object."""
    src, src_lengths = pad([torch.tensor(s, dtype=torch.long) for s, _, _ in examples], pad_id)  # (B, S), (B,)
    tgt_in, tgt_lengths = pad([torch.tensor([bos, *t], dtype=torch.long) for _, t, _ in examples], pad_id)  # (B, T)
    tgt_out, _ = pad([torch.tensor([*t, eos], dtype=torch.long) for _, t, _ in examples], pad_id)  # (B, T)
    batch = {
        "src": src,
        "src_lengths": src_lengths,
        "tgt_in": tgt_in,
        "tgt_out": tgt_out,
        "tgt_mask": lengths_to_mask(tgt_lengths),  # (B, T) True at real target positions
        "num_tokens": int(src_lengths.sum() + tgt_lengths.sum()),
        "padded_tokens": len(examples) * (src.size(1) + tgt_in.size(1)),
    }
    if examples[0][2] is not None:
        batch |= {"references": [r for _, _, r in examples], "scoring": scoring}
    return batch
