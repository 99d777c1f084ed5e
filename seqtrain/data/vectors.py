"""Pretrained word vectors (word2vec, GloVe, fastText .vec) matched to a vocabulary, and written back out.

Transfer learning as in Kim (2014): an embedding that starts from vectors learnt on billions of words already
puts "dreadful" near "awful" before the classifier has seen either with a label. The files are large (GloVe
840B: 5.6 GB, 2.2M words), so a file is streamed once and only the vocabulary's rows are kept: each line's word
is normalised and looked up, and only a wanted word's numbers are parsed.

The format is read from the bytes, whatever the name:
- gzip-compressed when the file starts with gzip's magic bytes 1f 8b;
- a first line of two integers "count dim" is word2vec's header (word2vec text, fastText .vec, word2vec
  binary); without it the file is GloVe text ("word v1 … vd" per line, dim = the first line's fields less one);
- after the header, binary when the first record is not `dim` numbers as text, and the 4·dim bytes after its
  word hold a byte that no text record has (a control byte or one >= 0x80), or the first 64 KB a control byte.
  Float32 values are almost never all printable ASCII and text records are, so a text file whose first record
  is malformed is still read as text, and its bad line named.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from seqtrain.data.tokenizers import SPECIALS
from seqtrain.errors import ConfigError, DataError

WORD2VEC_TEXT, WORD2VEC_BINARY, GLOVE = "word2vec text", "word2vec binary", "GloVe text"
PEEK_BYTES = 1 << 16  # enough for a header and the first record of any dimension in use (300 numbers ≈ 3 KB)
CHUNK_BYTES = 1 << 22
BATCH_LINES = 2048  # kept lines parsed together: one numpy call per batch instead of one per line
FLOAT32_MAX = float(np.finfo(np.float32).max)
LOG_MISSING = 10  # missing words shown in the log line; the dict holds them all

_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NOT_TEXT = re.compile(rb"[^\t\n\r\x20-\x7e]")


@dataclass(frozen=True)
class Coverage:
    """How much of a vocabulary a vector file covers, specials excluded. `missing` holds the most frequent
    words without a vector with their training counts, or, without counts, the first in vocabulary order
    (most frequent first for seqtrain's word vocabularies) with None."""

    path: str
    format: str
    dim: int
    words: int
    found: int
    tokens: int | None
    tokens_found: int | None
    missing: tuple[tuple[str, int | None], ...]

    @property
    def word_share(self) -> float:
        return self.found / self.words

    @property
    def token_share(self) -> float | None:
        """Share of the training tokens of vocabulary words whose word has a vector (<unk> tokens not counted)."""
        return self.tokens_found / self.tokens if self.tokens else None

    def line(self) -> str:
        text = f"pretrained vectors {self.path} ({self.format}, {self.dim}-d): {self.found:,} of {self.words:,} words"
        text += f" ({self.word_share:.1%})"
        if self.token_share is not None:
            text += f", {self.token_share:.1%} of training tokens"
        if self.missing:
            shown = [json.dumps(w, ensure_ascii=False) + ("" if n is None else f" ({n:,})") for w, n in self.missing]
            more = ", …" if len(shown) > LOG_MISSING else ""
            text += f"; {'most frequent' if self.tokens is not None else 'first'} missing: "
            text += ", ".join(shown[:LOG_MISSING]) + more
        return text

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "dim": self.dim,
            "words": self.words,
            "found": self.found,
            "word_share": self.word_share,
            "tokens": self.tokens,
            "tokens_found": self.tokens_found,
            "token_share": self.token_share,
            "missing": [{"word": w, "count": n} for w, n in self.missing],
        }


@dataclass(frozen=True)
class Pretrained:
    """`vectors` (V, D) float32 with the found rows filled and the others zero; `found` (V,) bool."""

    vectors: torch.Tensor
    found: torch.Tensor
    coverage: Coverage

    @property
    def dim(self) -> int:
        return self.vectors.size(1)

    def copy_into(self, weight: torch.Tensor, *, match_std: bool) -> None:
        """Overwrite the found rows of an embedding weight (V, D) in place. `match_std` rescales the other rows,
        which keep the caller's initialisation, to the pretrained vectors' standard deviation, as Kim (2014) draws
        them: nn.Embedding's N(0, 1) is several times larger than GloVe's or word2vec's values, and the unknown
        words would otherwise dominate the first layer's input. A zero padding row stays zero."""
        if weight.shape != self.vectors.shape:
            raise ValueError(f"embedding weight {tuple(weight.shape)} != pretrained table {tuple(self.vectors.shape)}")
        found = self.found.to(weight.device)
        with torch.no_grad():
            rest = weight[~found]
            if match_std and rest.numel() and rest.std(correction=0) > 0:
                weight[~found] = rest * (self.vectors[self.found].std(correction=0) / rest.std(correction=0)).to(weight)
            weight[found] = self.vectors[self.found].to(weight)


@dataclass(frozen=True)
class _Layout:
    format: str
    dim: int
    count: int | None  # the words the header announces; None for GloVe


class _Matcher:
    """The vocabulary rows still without a vector, looked up by normalised file word: popping a row on its
    first match is what makes the first file word win."""

    def __init__(self, words: Sequence[str], skip: Collection[int], normalize: Callable[[str], str] | None, dim: int):
        skip = set(skip)
        self.rows = [row for row in range(len(words)) if row not in skip]
        self.wanted = {words[row]: row for row in self.rows}
        self.normalize = normalize or (lambda word: word)
        self.vectors = np.zeros((len(words), dim), dtype=np.float32)
        self.found = np.zeros(len(words), dtype=bool)

    def row(self, word: bytes) -> int | None:
        """Invalid UTF-8 is replaced, not an error: such a word matches no vocabulary word, and failing on line
        1,834,221 of a 5 GB file for a word nobody asked for helps no one."""
        return self.wanted.pop(self.normalize(word.decode("utf-8", "replace")), None)

    def fill(self, rows: list[int] | int, values: np.ndarray) -> None:
        self.vectors[rows] = values
        self.found[rows] = True


def load_pretrained(
    path: str | Path,
    words: Sequence[str],
    normalize: Callable[[str], str] | None,
    dim: int | None = None,
    skip: Collection[int] = range(len(SPECIALS)),
    counts: Mapping[str, int] | None = None,
    top_missing: int = 20,
) -> Pretrained:
    """Vectors from a word2vec/GloVe/fastText file for `words`, the vocabulary in row order. Rows in `skip`
    (by default the four ids every seqtrain tokenizer reserves) are never matched. `normalize` (the recipe's own
    text normalisation, e.g. `str.lower`; None to match exactly) is applied to the file's words, not to `words`.
    When several file words normalise to the same vocabulary word ("The", "the"), the first in the file wins:
    these files list their words most frequent first, so that is the most frequent spelling, with the best
    trained vector. `dim`, when given, must equal the file's. `counts` (training token counts per word, e.g. a
    Counter) makes the coverage report token shares and the most frequent missing words. Reading stops once
    every wanted word is found; word2vec files are read up to the count their header announces."""
    path = Path(path)
    layout = _detect(path)
    if dim is not None and dim != layout.dim:
        raise ConfigError(
            f"{path} holds {layout.dim}-dimensional vectors but model.embedding_dim={dim}; "
            f"set model.embedding_dim={layout.dim}"
        )
    matcher = _Matcher(words, skip, normalize, layout.dim)
    with _open(path) as f:
        (_read_binary if layout.format == WORD2VEC_BINARY else _read_text)(f, layout, path, matcher)
    coverage = _coverage(path, layout, words, matcher, counts, top_missing)
    if not coverage.found:
        raise DataError(
            f"{path}: none of the {coverage.words:,} vocabulary words has a vector there; "
            f"is it the right file for this vocabulary and its normalisation?"
        )
    return Pretrained(torch.from_numpy(matcher.vectors), torch.from_numpy(matcher.found), coverage)


def write_word2vec_text(path: str | Path, words: Sequence[str], vectors: torch.Tensor | np.ndarray) -> int:
    """Write one vector per word in word2vec text format ("count dim", then "word v1 … vd" per line), so one
    run's learnt embedding can start another; gzip-compressed when `path` ends in .gz. Values are written with
    9 significant digits, which every float32 reads back to itself. A word that is empty or holds whitespace
    would split into other fields for any reader of this format, so it is left out: the header counts the
    words written and the number left out is returned. Written beside `path` and renamed, so no reader (and
    no failed write) leaves half a file."""
    path = Path(path)
    table = torch.as_tensor(vectors).detach().to("cpu", torch.float32).numpy()
    if table.ndim != 2 or len(table) != len(words):
        raise ValueError(f"{len(words)} words but a table of shape {table.shape}")
    if not np.isfinite(table).all():
        raise DataError(f"{path} not written: the vectors hold non-finite values")
    kept = [row for row, word in enumerate(words) if word.split() == [word]]
    partial = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(partial, "wt", encoding="utf-8", newline="\n") as out:
            out.write(f"{len(kept)} {table.shape[1]}\n")
            for row in kept:
                out.write(f"{words[row]} {' '.join(map('{:.9g}'.format, table[row].tolist()))}\n")
        os.replace(partial, path)
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        partial.unlink(missing_ok=True)
    return len(words) - len(kept)


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when they start with gzip's magic; read failures become one-line DataErrors."""
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        with open(path, "rb") as raw:
            if raw.peek(2)[:2] != b"\x1f\x8b":
                yield raw
                return
            with gzip.GzipFile(fileobj=raw) as unzipped:
                yield unzipped
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from e


def _detect(path: Path) -> _Layout:
    with _open(path) as f:
        first = f.readline(PEEK_BYTES)
        head = f.read(PEEK_BYTES)
    if not first.strip():
        raise DataError(f"{path} is empty" if not first else f"{path}, line 1: blank, expected a header or a vector")
    if _CONTROL.search(first):
        raise DataError(
            f"{path} is not a word2vec, GloVe or fastText .vec file (line 1 is not text); "
            f"for fastText, give its .vec file, not the .bin model"
        )
    fields = first.split()
    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
        count, dim = int(fields[0]), int(fields[1])
        if not count or not dim:
            raise DataError(f"{path} is empty (its header announces {count} words of dimension {dim})")
        start = head.find(b" ") + 1
        record = head[start:].split(b"\n", 1)[0]
        window = head[start : start + 4 * dim]
        binary = not _are_numbers(record, dim) and bool(_NOT_TEXT.search(window) or _CONTROL.search(head))
        return _Layout(WORD2VEC_BINARY if binary else WORD2VEC_TEXT, dim, count)
    if len(fields) < 2:
        raise DataError(f"{path}, line 1: expected a 'count dim' header or a word and its vector, found one field")
    return _Layout(GLOVE, len(fields) - 1, None)


def _are_numbers(text: bytes, dim: int) -> bool:
    fields = text.split()
    try:
        return len(fields) == dim and all(math.isfinite(float(x)) for x in fields)
    except ValueError:
        return False


def _read_text(f: BinaryIO, layout: _Layout, path: Path, matcher: _Matcher) -> None:
    """Lines are checked for their field count (cheaply, by counting spaces) and matched by word; only the
    matched lines' numbers are parsed. A line with more than dim+1 fields is a word with spaces (as in GloVe's
    Common Crawl files): its last `dim` fields are the vector. Non-numbers are only noticed in matched lines."""
    dim, first_line = layout.dim, 1
    if layout.count is not None:
        f.readline()
        first_line = 2
    rows: list[int] = []
    texts: list[bytes] = []
    numbers: list[int] = []
    records = 0
    for number, line in enumerate(f, first_line):
        body = line.rstrip()
        if not body:
            continue
        if body.count(b" ") == dim:
            word, _, text = body.partition(b" ")
        else:
            fields = body.rsplit(None, dim)
            if len(fields) != dim + 1:
                raise DataError(f"{path}, line {number}: expected a word and {dim} numbers, found {len(fields)} fields")
            word, text = fields[0], b" ".join(fields[1:])
        row = matcher.row(word)
        if row is not None:
            rows.append(row)
            texts.append(text)
            numbers.append(number)
            if len(rows) == BATCH_LINES:
                matcher.fill(rows, _parse(texts, numbers, dim, path))
                rows, texts, numbers = [], [], []
        records += 1
        if records == layout.count or not matcher.wanted:
            break
    if rows:
        matcher.fill(rows, _parse(texts, numbers, dim, path))
    if layout.count is not None and records < layout.count and matcher.wanted:
        raise DataError(
            f"{path} is cut short: it ends after {records:,} of the {layout.count:,} words its header announces"
        )


def _parse(texts: list[bytes], numbers: list[int], dim: int, path: Path) -> np.ndarray:
    """(n, dim) float32 from n lines' numbers: one numpy parse for the batch; only if that fails is each line
    parsed again, to name the bad one."""
    try:
        values = np.loadtxt(io.BytesIO(b"\n".join(texts)), dtype=np.float32, comments=None, ndmin=2)
        if values.shape == (len(texts), dim) and np.isfinite(values).all():
            return values
    except ValueError:
        pass
    return np.stack([_parse_line(text, number, dim, path) for text, number in zip(texts, numbers)])


def _parse_line(text: bytes, number: int, dim: int, path: Path) -> np.ndarray:
    fields = text.split()
    if len(fields) != dim:
        raise DataError(f"{path}, line {number}: expected a word and {dim} numbers, found {len(fields) + 1} fields")
    values = []
    for field in fields:
        shown = field.decode("utf-8", "replace")
        try:
            value = float(field)
        except ValueError:
            raise DataError(f"{path}, line {number}: {shown!r} is not a number") from None
        if not abs(value) <= FLOAT32_MAX:
            raise DataError(f"{path}, line {number}: {shown!r} is not a finite float32 value")
        values.append(value)
    return np.array(values, dtype=np.float32)


def _read_binary(f: BinaryIO, layout: _Layout, path: Path, matcher: _Matcher) -> None:
    """Records are "word " + dim little-endian float32 (+ an optional newline, dropped from the next word),
    read from a chunked buffer."""
    f.readline()
    count, dim, size = layout.count or 0, layout.dim, 4 * layout.dim
    buffer, pos = b"", 0
    for index in range(1, count + 1):
        while (space := buffer.find(b" ", pos)) < 0 or len(buffer) < space + 1 + size:
            more = f.read(CHUNK_BYTES)
            if not more:
                raise DataError(f"{path} is cut short: the word2vec binary file ends in word {index:,} of {count:,}")
            buffer, pos = buffer[pos:] + more, 0
        row = matcher.row(buffer[pos:space].lstrip(b"\n"))
        if row is not None:
            values = np.frombuffer(buffer, dtype="<f4", count=dim, offset=space + 1)
            if not np.isfinite(values).all():
                raise DataError(f"{path}: word {index:,} of the word2vec binary file has a non-finite value")
            matcher.fill(row, values)
            if not matcher.wanted:
                return
        pos = space + 1 + size


def _coverage(
    path: Path, layout: _Layout, words: Sequence[str], matcher: _Matcher, counts: Mapping[str, int] | None, top: int
) -> Coverage:
    rows, found = matcher.rows, matcher.found
    missing = [row for row in rows if not found[row]]
    tokens = tokens_found = None
    if counts is not None:
        tokens = sum(counts.get(words[row], 0) for row in rows)
        tokens_found = sum(counts.get(words[row], 0) for row in rows if found[row])
        missing.sort(key=lambda row: -counts.get(words[row], 0))  # stable: ties stay in vocabulary order
    shown = tuple((words[row], None if counts is None else counts.get(words[row], 0)) for row in missing[:top])
    return Coverage(str(path), layout.format, layout.dim, len(rows), int(found.sum()), tokens, tokens_found, shown)
