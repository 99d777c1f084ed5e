"""Text corpora: UTF-8 reading with line-numbered errors, character vocabularies, and token files.

A corpus is encoded once into a memory-mapped token file in the cache, streaming in chunks, so a
1 GB text never has to fit in Python objects; later runs on the same file map the cached tokens.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from seqtrain.errors import DataError

CHUNK_BYTES = 1 << 22
UNK = "<unk>"


def iter_text(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Decode a UTF-8 file (gzip-compressed when it ends in .gz) chunk by chunk; bad bytes raise a
    DataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        while True:
            try:
                block = f.read(chunk_bytes)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise DataError(f"{path} is not a readable gzip file ({e})") from e
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                bad_line = line + block[: e.start].count(b"\n")
                raise DataError(f"{path} is not UTF-8 text (bad bytes on line {bad_line})") from e
            line += block.count(b"\n")
            if text:
                yield text
            if not block:
                return


def read_text(path: Path) -> str:
    text = "".join(iter_text(path))
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text


class CharVocab:
    """Characters seen in training, plus `<unk>` (id 0) for characters that were not."""

    def __init__(self, chars: list[str]):
        if not chars:
            raise DataError("no characters to build a vocabulary from")
        self.chars = [UNK, *chars]
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.index.pop(UNK)
        codes = np.array([ord(c) for c in chars], dtype=np.int64)
        self._codes_sorted = np.sort(codes)
        self._ids_sorted = np.argsort(codes) + 1

    def __len__(self) -> int:
        return len(self.chars)

    def unseen(self, text: str) -> list[str]:
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str) -> np.ndarray:
        """Vectorised: code points are looked up in the sorted table; anything else becomes <unk>."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.minimum(np.searchsorted(self._codes_sorted, codes), len(self._codes_sorted) - 1)
        return np.where(self._codes_sorted[pos] == codes, self._ids_sorted[pos], 0)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i > 0 else "?" for i in ids)

    def to_dict(self) -> dict:
        return {"chars": self.chars[1:]}

    @classmethod
    def from_dict(cls, data: dict) -> CharVocab:
        return cls(list(data["chars"]))


def count_chars(path: Path) -> int:
    return sum(len(t) for t in iter_text(path))


def chars_in_prefix(path: Path, n_chars: int) -> list[str]:
    """The sorted character set of the first `n_chars` characters (the training split)."""
    seen: set[str] = set()
    left = n_chars
    for text in iter_text(path):
        seen.update(text[:left])
        left -= len(text)
        if left <= 0:
            break
    return sorted(seen)


def _file_key(path: Path, *extra: str) -> str:
    stat = path.stat()
    raw = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, *extra])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def corpus_stats(path: Path, train_fraction: float, cache: Path) -> tuple[int, list[str]]:
    """(total characters, training-split character set), cached per file version."""
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    meta = cache / f"{_file_key(path, str(train_fraction))}.json"
    if meta.is_file():
        saved = json.loads(meta.read_text())
        return saved["total"], saved["chars"]
    total = count_chars(path)
    if total == 0:
        raise DataError(f"{path} is empty")
    chars = chars_in_prefix(path, int(total * train_fraction))
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(meta, json.dumps({"total": total, "chars": chars}).encode())
    return total, chars


def token_file(path: Path, vocab: CharVocab, cache: Path) -> np.ndarray:
    """The whole file as token ids in a read-only memory map, encoded once per file version and vocab."""
    dtype = np.uint16 if len(vocab) < 2**16 else np.uint32
    key = _file_key(path, json.dumps(vocab.chars))
    target = cache / f"{key}.{np.dtype(dtype).name}"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part-{os.getpid()}")
        with open(partial, "wb") as out:
            for text in iter_text(path):
                out.write(vocab.encode(text).astype(dtype).tobytes())
        os.replace(partial, target)
    if target.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    return np.memmap(target, dtype=dtype, mode="r")


def atomic_write(path: Path, data: bytes) -> None:
    """Write beside `path` under a per-process name, then rename: readers (and other ranks writing the
    same file) never see a torn one."""
    partial = path.with_name(f".{path.name}.part-{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)
