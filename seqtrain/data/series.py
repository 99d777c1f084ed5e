"""Many time series held in flat arrays, and readers for M4 files and users' own CSV files.

A `SeriesSet` keeps S series back to back in one float32 array with int64 offsets, never a Python object
per value: 100,000 series of 500 values cost 200 MB, where lists of floats would cost gigabytes.

CSV layouts (`read_csv_series`), read in chunks with pandas so that memory stays near the final arrays':
- "long":    rows of id, timestamp, value (the first three columns; more are ignored). A series' rows may
             come in any order and interleaved with others': each series is sorted by timestamp, one row
             one step (gaps between timestamps are not filled in). Timestamps are numbers or ISO 8601 dates;
             a missing or repeated timestamp is an error. Series come in order of first appearance.
- "rows":    one series per row, its id first and its values after it (the M4 layout); a first line
             whose value fields are not numbers is a header.
- "columns": one series per column, the header line holding the ids, rows in time order; a first column
             that holds no numbers (dates, say) is a time index and is ignored.
In the wide layouts, empty fields before a series' first value and after its last are padding.
Peak memory while reading 100,000 series of 50M values in all (bench/forecast_scale.py), as a multiple of
the returned arrays' 194 MB: long layout with each series in time order 2.2 (grouped) to 3.2 (series
interleaved), long layout in random order 8.1 (a second pass keeps the timestamps to sort); rows 2.2;
columns 4.4 (a dense time-by-series table, and pandas' cost per column).

Data rules (`clean`; the `Cleaning` it returns counts each one, and its str is a one-line summary):
- missing values (empty, NA, NaN, inf): those before a series' first value and after its last are
  trimmed; interior ones are filled by linear interpolation between their neighbours;
- a series with no value at all is dropped;
- a series shorter than `min_length` (after trimming) is dropped; a DataError when none is left;
- constant series are kept: their MASE scale is zero, so MASE and MSIS leave them out;
- series holding values <= 0 are kept: Naive2 uses the plain naive forecast for them, and a model that
  divides by the level or takes logs must handle them.
A repeated id (wide layouts), a row without id and a value that is not a number are DataErrors.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from seqtrain.errors import DataError

Layout = Literal["long", "rows", "columns"]
EARLIEST = np.iinfo(np.int64).min  # before any date, as int64 nanoseconds
CHUNK_CELLS = 1 << 19  # fields pandas parses per chunk: its per-chunk objects stay near 50 MB
WIDE_CHUNK_ROWS = 64  # at least, in the columns layout: pandas' cost per column and chunk outweighs the rest

# The organisers' forecast horizon and seasonal period (MASE's m) per M4 frequency.
M4_HORIZON_PERIOD = {
    "yearly": (6, 1),
    "quarterly": (8, 4),
    "monthly": (18, 12),
    "weekly": (13, 1),
    "daily": (14, 1),
    "hourly": (48, 24),
}


class SeriesSet:
    """S series back to back: `ids` (S,) str, `values` (N,) float32, `offsets` (S+1,) int64, series i
    being values[offsets[i]:offsets[i+1]]. An int index gives a view of one series; a slice, a boolean
    mask or an array of ints gives a SeriesSet."""

    def __init__(self, ids: Sequence[str] | np.ndarray, values: np.ndarray, offsets: np.ndarray):
        self.ids = np.asarray(ids, dtype=str)
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.offsets.shape != (len(self.ids) + 1,) or self.offsets[0] != 0 or self.offsets[-1] != len(self.values):
            raise ValueError(f"offsets must be (S+1,) from 0 to {len(self.values)}, got {self.offsets.shape}")
        if np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must not decrease")

    @classmethod
    def from_arrays(cls, ids: Sequence[str], arrays: Iterable[np.ndarray]) -> SeriesSet:
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
        return cls(ids, np.concatenate(arrays) if arrays else np.zeros(0, np.float32), offsets)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (S,)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.values[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:]))

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> np.ndarray | SeriesSet:
        if isinstance(index, (int, np.integer)):
            i = range(len(self))[index]
            return self.values[self.offsets[i] : self.offsets[i + 1]]
        chosen = np.arange(len(self))[index]  # (K,) from a slice, boolean mask or ints
        if len(chosen) and np.all(np.diff(chosen) == 1):  # a contiguous run: a view, no copy
            values = self.values[self.offsets[chosen[0]] : self.offsets[chosen[-1] + 1]]
        else:
            pieces = [self.values[self.offsets[i] : self.offsets[i + 1]] for i in chosen]
            values = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return SeriesSet(self.ids[chosen], values, np.concatenate([[0], np.cumsum(self.lengths[chosen])]))

    def __repr__(self) -> str:
        return f"SeriesSet({len(self)} series, {len(self.values)} values)"


@dataclass
class Cleaning:
    """What `clean` did, in counts; str() is the one-line summary a recipe prints."""

    read: int = 0  # series read
    kept: int = 0
    values: int = 0  # values kept
    trimmed: int = 0  # missing values cut from series' ends (all of an empty series')
    filled: int = 0  # interior missing values filled by interpolation
    filled_series: int = 0
    empty: int = 0  # series with no value, dropped
    short: int = 0  # series shorter than min_length, dropped
    min_length: int = 1
    constant: int = 0  # kept
    non_positive: int = 0  # series with a value <= 0, kept

    def __str__(self) -> str:
        parts = [f"{self.read:,} series read, {self.kept:,} kept ({self.values:,} values)"]
        dropped = [f"{self.empty:,} with no value"] * bool(self.empty)
        dropped += [f"{self.short:,} shorter than {self.min_length}"] * bool(self.short)
        if dropped:
            parts.append("dropped " + " and ".join(dropped))
        if self.trimmed:
            parts.append(f"trimmed {self.trimmed:,} missing values at series' ends")
        if self.filled:
            where = f"in {self.filled_series:,} series"
            parts.append(f"filled {self.filled:,} missing values {where} by linear interpolation")
        if self.constant:
            parts.append(f"{self.constant:,} constant series (MASE leaves them out)")
        if self.non_positive:
            parts.append(f"{self.non_positive:,} series with values <= 0 (Naive2 uses the plain naive for them)")
        return "; ".join(parts)


def clean(series: SeriesSet, min_length: int = 1, source: str = "the data") -> tuple[SeriesSet, Cleaning]:
    """Apply the module's data rules (see its docstring); `source` names the data in the error message. When
    nothing needs changing, the result shares its values array with `series`."""
    report = Cleaning(read=len(series), min_length=min_length)
    values, offsets = series.values, series.offsets
    starts, ends = offsets[:-1].copy(), offsets[1:].copy()  # (S,) the span from first to last finite value
    missing = np.flatnonzero(~np.isfinite(values))  # (M,) usually few: the loop below visits their series only
    for i in np.unique(np.searchsorted(offsets, missing, side="right") - 1):
        finite = offsets[i] + np.flatnonzero(np.isfinite(values[offsets[i] : offsets[i + 1]]))
        starts[i], ends[i] = (finite[0], finite[-1] + 1) if len(finite) else (offsets[i], offsets[i])
    lengths = ends - starts
    report.trimmed = int(series.lengths.sum() - lengths.sum())
    report.empty = int(np.sum(lengths == 0))
    report.short = int(np.sum((lengths > 0) & (lengths < min_length)))
    keep = lengths >= max(min_length, 1)
    if not keep.any():
        dropped = f"{report.empty} with no value, {report.short} shorter than {min_length}"
        raise DataError(f"no series left in {source}: {dropped}")
    if report.trimmed or not keep.all():
        starts, ends, lengths = starts[keep], ends[keep], lengths[keep]
        span = np.zeros(len(values) + 1, np.int8)  # +1 where a kept span starts, -1 where it ends
        np.add.at(span, starts, 1)
        np.add.at(span, ends, -1)
        values = values[np.cumsum(span[:-1], dtype=np.int8).astype(bool)]
    elif len(missing):
        values = values.copy()  # fill_gaps writes in place; the caller's set stays as it was
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    report.filled, report.filled_series = fill_gaps(values, offsets)
    low, high = np.minimum.reduceat(values, offsets[:-1]), np.maximum.reduceat(values, offsets[:-1])  # (S,)
    report.constant, report.non_positive = int(np.sum(low == high)), int(np.sum(low <= 0))
    report.kept, report.values = int(keep.sum()), len(values)
    return SeriesSet(series.ids[keep], values, offsets), report


def fill_gaps(values: np.ndarray, offsets: np.ndarray) -> tuple[int, int]:
    """Fill, in place, the non-finite values inside series (each series starts and ends finite) by linear
    interpolation; return (values filled, series touched)."""
    gaps = np.flatnonzero(~np.isfinite(values))  # (M,)
    if not len(gaps):
        return 0, 0
    # A run of consecutive gaps lies inside one series, since every series starts and ends finite.
    first = np.concatenate([[True], np.diff(gaps) != 1])
    run_starts = gaps[first]  # (R,)
    run_lengths = np.diff(np.concatenate([np.flatnonzero(first), [len(gaps)]]))  # (R,)
    left = np.repeat(values[run_starts - 1].astype(np.float64), run_lengths)  # (M,)
    right = np.repeat(values[run_starts + run_lengths].astype(np.float64), run_lengths)
    step = gaps - np.repeat(run_starts, run_lengths) + 1  # 1..length within each run
    values[gaps] = left + (right - left) * step / np.repeat(run_lengths + 1, run_lengths)
    return len(gaps), len(np.unique(np.searchsorted(offsets, run_starts, side="right")))


def last_horizon_split(series: SeriesSet, horizon: int) -> tuple[SeriesSet, SeriesSet]:
    """(train, validation): validation holds the last `horizon` values of each series, train the rest."""
    lengths = series.lengths
    if np.any(lengths <= horizon):
        short = int(np.argmin(lengths))
        raise DataError(
            f"{int(np.sum(lengths <= horizon))} series have at most horizon={horizon} values (shortest: "
            f"{str(series.ids[short])!r} with {lengths[short]}); drop them with a minimum length above {horizon}"
        )
    tail = (series.offsets[1:, None] - horizon + np.arange(horizon)).ravel()  # (S*horizon,)
    head = np.ones(len(series.values), bool)
    head[tail] = False
    train = SeriesSet(series.ids, series.values[head], np.concatenate([[0], np.cumsum(lengths - horizon)]))
    return train, SeriesSet(series.ids, series.values[tail], np.arange(len(series) + 1, dtype=np.int64) * horizon)


def read_m4(root: str | Path, frequency: str) -> tuple[SeriesSet, SeriesSet]:
    """(train, test) of one M4 frequency from `{Frequency}-train.csv` and `{Frequency}-test.csv` in `root`
    (or in root/Train and root/Test, the organisers' repository layout). The horizon and seasonal period
    are `M4_HORIZON_PERIOD[frequency.lower()]`."""
    key = frequency.lower()
    if key not in M4_HORIZON_PERIOD:
        choices = ", ".join(k.title() for k in M4_HORIZON_PERIOD)
        raise DataError(f"unknown M4 frequency {frequency!r}; choose from {choices}")
    horizon = M4_HORIZON_PERIOD[key][0]
    root = Path(root)
    sets = []
    for split in ("train", "test"):
        name = f"{key.title()}-{split}.csv"
        path = next((p for p in (root / name, root / split.title() / name) if p.is_file()), None)
        if path is None:
            raise DataError(f"no {name} in {root} (nor in {root / split.title()})")
        read = _read_rows(path, ",")
        if np.isnan(read.values).any():
            raise DataError(f"{path} has missing values inside a series; M4 files have none")
        sets.append(read)
    train, test = sets
    if not np.array_equal(train.ids, test.ids):
        raise DataError(f"the train and test files of M4 {key.title()} hold different series ids")
    if np.any(test.lengths != horizon):
        other = sorted(int(n) for n in set(test.lengths) - {horizon})
        raise DataError(f"every M4 {key.title()} test series must hold {horizon} values; some hold {other}")
    return train, test


def read_csv_series(
    path: str | Path,
    layout: Layout = "long",
    min_length: int = 1,
    delimiter: str = ",",
) -> tuple[SeriesSet, Cleaning]:
    """Read a user's series in one of the module's layouts and apply its data rules."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    readers = {"long": _read_long, "rows": _read_rows, "columns": _read_columns}
    if layout not in readers:
        raise DataError(f"unknown series layout {layout!r}; choose from {', '.join(readers)}")
    return clean(readers[layout](path, delimiter), min_length, str(path))


def _first_rows(path: Path, delimiter: str, count: int = 2) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for _, row in zip(range(count), csv.reader(f, delimiter=delimiter))]
    if not rows or not any(rows[0]):
        raise DataError(f"{path} is empty")
    return rows


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _chunks(path: Path, **options):
    """pandas' chunked reader, empty chunks skipped, its errors turned into one DataError line."""
    import pandas as pd  # lazy: only runs that read CSV series pay for it

    try:
        yield from (chunk for chunk in pd.read_csv(path, header=None, **options) if len(chunk))
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: {str(e).splitlines()[0]}") from e


def _read_rows(path: Path, delimiter: str) -> SeriesSet:
    """One series per row: id, then values; padding trimmed chunk by chunk."""
    header = not all(_is_number(f) or not f.strip() for f in _first_rows(path, delimiter, 1)[0][1:])
    with open(path, "rb") as f:  # the widest line bounds the fields (a quoted delimiter only adds empty columns)
        width = max(line.count(delimiter.encode()) + 1 for line in f)
    ids, arrays, lengths = [], [], []
    options = dict(
        skiprows=int(header),
        names=range(width),
        sep=delimiter,
        chunksize=max(1, CHUNK_CELLS // width),
        dtype={0: str, **{i: np.float32 for i in range(1, width)}},
    )
    for chunk in _chunks(path, **options):
        if chunk[0].isna().any():
            raise DataError(f"{path} line {int(chunk.index[chunk[0].isna()][0]) + 1 + header}: no series id")
        ids.extend(chunk[0].tolist())
        block = chunk.iloc[:, 1:].to_numpy(np.float32)  # (rows, width-1), NaN where empty
        first, stop = _finite_span(block)
        positions = np.arange(block.shape[1])
        arrays.append(block[(positions >= first[:, None]) & (positions < stop[:, None])])  # row-major: series by series
        lengths.append(stop - first)
    return _checked(path, ids, arrays, lengths)


def _read_columns(path: Path, delimiter: str) -> SeriesSet:
    """One series per column, the header holding the ids; a first column of non-numbers is a time index."""
    rows = _first_rows(path, delimiter)
    index = len(rows) > 1 and bool(rows[1]) and rows[1][0].strip() != "" and not _is_number(rows[1][0])
    names, width = rows[0][int(index) :], len(rows[0])
    options = dict(
        skiprows=1,
        names=range(width),
        usecols=range(int(index), width),
        sep=delimiter,
        dtype=np.float32,
        chunksize=max(WIDE_CHUNK_ROWS, CHUNK_CELLS // max(len(names), 1)),
    )
    table = np.full((_count_lines(path) - 1, len(names)), np.nan, np.float32)  # (T, S), filled chunk by chunk
    filled = 0
    for chunk in _chunks(path, **options):
        table[filled : filled + len(chunk)] = chunk.to_numpy(np.float32)
        filled += len(chunk)
    if not filled:
        raise DataError(f"{path} holds no values under its header")
    series_major = table[:filled].T  # (S, T), a view: blank lines were skipped
    first, stop = _finite_span(series_major)
    positions = np.arange(series_major.shape[1])
    values = series_major[(positions >= first[:, None]) & (positions < stop[:, None])]  # series by series
    return _checked(path, names, [values], [stop - first])


def _finite_span(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, T) -> (S,) first and (S,) one past the last finite position of each row; equal for an empty row."""
    finite = np.isfinite(block)
    first = finite.argmax(axis=1)
    return first, np.where(finite.any(axis=1), block.shape[1] - finite[:, ::-1].argmax(axis=1), first)


def _count_lines(path: Path) -> int:
    """Lines in the file (a last one without a newline counts), read in 1 MiB blocks."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count, last = count + block.count(b"\n"), block[-1:]
    return count + (last != b"\n")


def _checked(path: Path, ids: list[str], arrays: list[np.ndarray], lengths: list[np.ndarray]) -> SeriesSet:
    ids = [str(i).strip() for i in ids]
    if not ids:
        raise DataError(f"{path} holds no series")
    if len(set(ids)) < len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: series id {repeated!r} appears more than once")
    values = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return SeriesSet(ids, values, np.concatenate([[0], np.cumsum(np.concatenate(lengths))]))


def _read_long(path: Path, delimiter: str) -> SeriesSet:
    """Rows of id, timestamp, value. The common files, whose series each come in time order (grouped or
    interleaved), are read once keeping the values and, only once series interleave, int32 series codes;
    a file with a series out of time order is read a second time keeping the timestamps, to sort them."""
    first = _first_rows(path, delimiter)
    if len(first[0]) < 3:
        raise DataError(f"{path}: the long layout needs columns id, timestamp, value; line 1 has {len(first[0])}")
    header = first[0][2].strip() != "" and not _is_number(first[0][2])
    data = first[1] if header and len(first) > 1 else first[0]
    numeric = len(data) > 1 and _is_number(data[1])
    read = _read_long_pass(path, delimiter, header, numeric, keep_time=False)
    return read if read is not None else _read_long_pass(path, delimiter, header, numeric, keep_time=True)


def _read_long_pass(path: Path, delimiter: str, header: bool, numeric: bool, keep_time: bool) -> SeriesSet | None:
    """One pass over a long file; None when a series is out of time order and `keep_time` is False."""
    import pandas as pd

    codes_of: dict[str, int] = {}  # id -> code in order of first appearance: one entry per series, not per value
    counts = np.zeros(0, np.int64)  # (S,) rows so far
    latest = np.zeros(0, np.float64 if numeric else np.int64)  # (S,) each series' latest timestamp so far
    values, codes, times = [], [], []  # per chunk: float32; int32 codes once series interleave; timestamps
    grouped, previous = True, -1  # grouped: codes never decrease, so the values come series by series
    options = dict(
        skiprows=int(header),
        names=["id", "time", "value"],
        usecols=[0, 1, 2],
        sep=delimiter,
        dtype={"id": str, "value": np.float32},
        chunksize=CHUNK_CELLS // 3,
    )
    for chunk in _chunks(path, **options):
        inverse, unique_ids = pd.factorize(chunk["id"])  # (rows,) codes into the chunk's own ids
        if (inverse < 0).any():
            raise DataError(f"{path} line {int(chunk.index[inverse < 0][0]) + 1 + header}: no series id")
        code = np.array([codes_of.setdefault(str(i).strip(), len(codes_of)) for i in unique_ids], np.int32)[inverse]
        time = _timestamps(chunk["time"], numeric, path, header)
        value = chunk["value"].to_numpy(np.float32)
        del chunk, inverse
        if len(codes_of) > len(counts):
            new = len(codes_of) - len(counts)
            counts = np.concatenate([counts, np.zeros(new, np.int64)])
            latest = np.concatenate([latest, np.full(new, -np.inf if numeric else EARLIEST, latest.dtype)])
        if grouped and (code[0] < previous or np.any(np.diff(code) < 0)):
            grouped = False  # the codes of the chunks before follow from the counts so far
            before = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
            codes = np.split(before, np.cumsum([len(v) for v in values])[:-1]) if values else []
        if not keep_time and not _in_time_order(code, time, latest, codes_of, path):
            return None
        counts += np.bincount(code, minlength=len(counts))
        previous = int(code[-1])
        values.append(value)
        codes += [] if grouped else [code]
        times += [time] if keep_time else []
    if not codes_of:
        raise DataError(f"{path} holds no series")
    ids = list(codes_of)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if keep_time:
        return SeriesSet(ids, _sorted_by_time(path, ids, values, codes, times, offsets, grouped), offsets)
    return SeriesSet(ids, np.concatenate(values) if grouped else _scatter(codes, offsets, values)[0], offsets)


def _timestamps(column, numeric: bool, path: Path, header: bool) -> np.ndarray:
    """A chunk's timestamps (a pandas Series) -> (rows,) float64 numbers or int64 nanoseconds since 1970 (UTC)."""
    import pandas as pd

    if column.isna().any():
        raise DataError(f"{path} line {int(column.index[column.isna()][0]) + 1 + header}: no timestamp")
    try:
        if numeric:
            return pd.to_numeric(column).to_numpy(np.float64)
        stamps = pd.to_datetime(column, utc=True, format="ISO8601").dt.tz_localize(None)  # UTC, naive
        return stamps.to_numpy("datetime64[ns]").view(np.int64)
    except (ValueError, TypeError) as e:
        problem = str(e).splitlines()[0]
        raise DataError(f"{path}: timestamps must be all numbers or all ISO 8601 dates; {problem}") from e


def _in_time_order(
    code: np.ndarray,
    time: np.ndarray,
    latest: np.ndarray,
    codes_of: dict[str, int],
    path: Path,
) -> bool:
    """Whether the chunk's rows continue each series in time order; moves `latest` (S,) on if so."""
    order = np.argsort(code, kind="stable")  # (rows,) each series' rows together, in file order
    code, time = code[order], time[order]
    head = np.concatenate([[True], code[1:] != code[:-1]])  # (rows,) each series' first row in the chunk
    before = np.concatenate([time[:1], time[:-1]])
    before[head] = latest[code[head]]
    if np.any(time == before):
        raise DataError(f"{path}: series {list(codes_of)[code[time == before][0]]!r} has two rows at one timestamp")
    if np.any(time < before):
        return False
    tail = np.concatenate([head[1:], [True]])
    latest[code[tail]] = time[tail]
    return True


def _scatter(codes: list[np.ndarray], offsets: np.ndarray, *columns: list[np.ndarray]) -> list[np.ndarray]:
    """Chunks of series codes and of columns (values, timestamps), in file order -> each column as (N,) series
    by series, each series' rows in file order. The chunk lists are emptied as their rows are placed."""
    placed = [np.empty(offsets[-1], column[0].dtype) for column in columns]
    fill = offsets[:-1].copy()  # (S,) each series' next free slot
    while codes:
        code = codes.pop(0)
        order = np.argsort(code, kind="stable")  # (rows,) chunk-local
        code = code[order]
        slots = fill[code] + np.arange(len(code)) - np.searchsorted(code, code)  # after the series' earlier rows
        for out, column in zip(placed, columns):
            out[slots] = column.pop(0)[order]
        fill += np.bincount(code, minlength=len(fill))
    return placed


def _sorted_by_time(
    path: Path,
    ids: list[str],
    values: list[np.ndarray],
    codes: list[np.ndarray],
    times: list[np.ndarray],
    offsets: np.ndarray,
    grouped: bool,
) -> np.ndarray:
    """(N,) the values series by series, each sorted by timestamp; the chunk lists are emptied. Series are
    gathered first (linear time), then only those out of time order are sorted, one at a time."""
    if grouped:
        value, time = np.concatenate(values), np.concatenate(times)
        values.clear(), times.clear()
    else:
        value, time = _scatter(codes, offsets, values, times)
    inside = np.ones(len(time) - 1, bool)  # (N-1,) neighbours within one series
    inside[offsets[1:-1] - 1] = False
    backwards = np.flatnonzero((time[1:] < time[:-1]) & inside)
    for i in np.unique(np.searchsorted(offsets, backwards, side="right") - 1):
        span = slice(offsets[i], offsets[i + 1])
        order = np.argsort(time[span], kind="stable")
        time[span], value[span] = time[span][order], value[span][order]
    repeated = np.flatnonzero((time[1:] == time[:-1]) & inside)
    if len(repeated):
        series = ids[np.searchsorted(offsets, repeated[0], side="right") - 1]
        raise DataError(f"{path}: series {series!r} has two rows at one timestamp")
    return value
