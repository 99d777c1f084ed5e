"""Labelled-text readers. Each returns (texts, labels), labels as strings, so any number of classes
and any label spelling ("0"/"1", "neg"/"pos", "joy"/"anger"/...) work the same way.

- `read_table`: a TSV or CSV file with a header naming its text and label columns.
- `read_sst2`: GLUE SST-2 (`sentence\\tlabel`), and `download_sst2` to fetch and cache it.
- `read_folders`: one folder per class holding .txt files, one example per file (the IMDB layout).

Files are read through `iter_text`, so bytes that are not UTF-8 are reported with their line number;
every problem a user can fix is one `DataError` line naming the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from seqtrain.data.download import fetch
from seqtrain.data.text import iter_text
from seqtrain.errors import DataError

Table = tuple[list[str], list[str]]  # (texts, labels)

DELIMITERS = {".tsv": "\t", ".csv": ","}

# GLUE SST-2 as kept in a public repository at a fixed commit (see /work/shared/data/README.md):
# remote train_full.tsv is the full 67,349-row training set, saved here as train.tsv.
SST2_BASE_URL = (
    "https://raw.githubusercontent.com/eyalbd2/Reproducing-AutoPrompt/"
    "6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2"
)
SST2_FILES = {  # local name: (remote name, sha256)
    "train.tsv": ("train_full.tsv", "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
    "dev.tsv": ("dev.tsv", "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
}


def read_table(
    path: str | Path, text_column: str = "text", label_column: str = "label", delimiter: str | None = None
) -> Table:
    """Read a delimited file with a header. The delimiter comes from the extension (.tsv, .csv) unless
    given. TSV fields are taken literally (no quoting, as in GLUE: a review may start with a quote mark);
    CSV fields follow the usual quoting rules. Surrounding whitespace is stripped from every field."""
    path = Path(path)
    delimiter = delimiter or DELIMITERS.get(path.suffix.lower())
    if delimiter is None:
        raise DataError(f"cannot tell the delimiter of {path} from its extension; name it (tab or comma)")
    text = "".join(iter_text(path))
    if not text.strip():
        raise DataError(f"{path} is empty")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = [name.strip() for name in next(rows)]
    header[0] = header[0].removeprefix("\ufeff")  # the byte-order mark spreadsheet programs write
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(f"{path} has no column {column!r}; its columns: {', '.join(header)}")
    text_at, label_at = header.index(text_column), header.index(label_column)
    texts, labels = [], []
    try:
        for row in rows:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(f"{path} line {rows.line_num}: {len(row)} fields, but the header has {len(header)}")
            texts.append(row[text_at].strip())
            labels.append(row[label_at].strip())
            if not texts[-1] or not labels[-1]:
                raise DataError(f"{path} line {rows.line_num}: empty {text_column if not texts[-1] else label_column}")
    except csv.Error as e:
        raise DataError(f"{path} line {rows.line_num}: {e}") from e
    if not texts:
        raise DataError(f"{path} is empty (a header and no rows)")
    return texts, labels


def read_sst2(path: str | Path) -> Table:
    """A GLUE SST-2 file (train.tsv or dev.tsv): labels "0" (negative) and "1" (positive)."""
    return read_table(path, "sentence", "label", "\t")


def download_sst2(
    directory: Path, base_url: str = SST2_BASE_URL, files: dict[str, tuple[str, str]] = SST2_FILES
) -> Path:
    """Fetch SST-2's train.tsv and dev.tsv into `directory` once, verifying each file's sha256; return
    the directory (ready for `read_sst2(directory / "train.tsv")`)."""
    for name, (remote, sha256) in files.items():
        fetch(
            f"{base_url}/{remote}",
            sha256,
            name,
            directory,
            hint="download SST-2's train.tsv and dev.tsv yourself and point data.root at their folder",
        )
    return directory


def read_folders(root: str | Path, classes: Sequence[str] | None = None) -> Table:
    """One example per .txt file in `root/<class>/`, the folder name being the label. `classes` picks
    the folders (IMDB's aclImdb/train also holds unsup/, which has no labels); by default every
    subfolder that holds .txt files is a class."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.txt")))
    for name in classes or ():
        if not (root / name).is_dir():
            raise DataError(
                f"{root} has no class folder {name!r}; folders with .txt files: {', '.join(folders) or 'none'}"
            )
    texts, labels = [], []
    for name in classes or folders:
        for file in sorted((root / name).glob("*.txt")):
            text = "".join(iter_text(file)).strip()
            if not text:
                raise DataError(f"{file} is empty")
            texts.append(text)
            labels.append(name)
    if not texts:
        raise DataError(f"{root} has no class folders holding .txt files (expected {root}/<class>/*.txt)")
    return texts, labels


def class_names(
    train_labels: Iterable[str], valid_labels: Iterable[str] = (), valid_source: str = "validation"
) -> list[str]:
    """The classes of the training labels, in a stable order (numerically when every label is an integer,
    else alphabetically); index i is class id i. A label seen only in validation is an error, since the
    model could never predict it."""
    seen = set(train_labels)
    unseen = sorted(set(valid_labels) - seen)
    if unseen:
        raise DataError(
            f"label{'s' if len(unseen) > 1 else ''} {', '.join(map(repr, unseen))} in {valid_source} "
            f"never appear{'' if len(unseen) > 1 else 's'} in training; training labels: {', '.join(sort_labels(seen))}"
        )
    return sort_labels(seen)


def sort_labels(labels: Iterable[str]) -> list[str]:
    labels = list(labels)
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)
