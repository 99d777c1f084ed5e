from pathlib import Path

import numpy as np
import pytest

from seqtrain import forecast_metrics as fm
from seqtrain.data import series as series_module
from seqtrain.data.series import SeriesSet, clean, last_horizon_split, read_csv_series, read_m4
from seqtrain.data.synthetic_series import synthetic_series
from seqtrain.errors import DataError


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def as_lists(series: SeriesSet) -> dict[str, list[float]]:
    return {str(i): x.tolist() for i, x in zip(series.ids, series)}


@pytest.fixture(params=[False, True], ids=["one chunk", "3-row chunks"])
def chunks(request, monkeypatch):
    """Every reader runs once in one chunk and once with chunk boundaries everywhere."""
    if request.param:
        monkeypatch.setattr(series_module, "CHUNK_CELLS", 9)
        monkeypatch.setattr(series_module, "WIDE_CHUNK_ROWS", 1)


def test_series_set_views_and_selections():
    s = SeriesSet.from_arrays(["a", "b", "c"], [[1, 2], [3], [4, 5, 6]])
    assert len(s) == 3 and s.lengths.tolist() == [2, 1, 3]
    assert s.values.dtype == np.float32 and s.offsets.dtype == np.int64
    assert s[2].tolist() == [4, 5, 6] and s[-1].tolist() == [4, 5, 6] and np.shares_memory(s[0], s.values)
    assert as_lists(s[1:]) == {"b": [3], "c": [4, 5, 6]} and np.shares_memory(s[1:].values, s.values)
    assert as_lists(s[np.array([True, False, True])]) == {"a": [1, 2], "c": [4, 5, 6]}
    assert as_lists(s[[2, 0]]) == {"c": [4, 5, 6], "a": [1, 2]}
    assert len(s[[]]) == 0 and len(s[[]].values) == 0
    with pytest.raises(ValueError, match="offsets"):
        SeriesSet(["a"], np.zeros(3), np.array([0, 2]))


def test_clean_applies_each_rule_and_says_so_in_one_line():
    nan = np.nan
    raw = SeriesSet.from_arrays(
        ["gaps", "empty", "short", "flat", "zero"],
        [[nan, 1, nan, nan, 4, nan], [nan, nan], [5, 6], [7, 7, 7], [0, 1, 2]],
    )
    cleaned, report = clean(raw, min_length=3)
    # "gaps": one missing value trimmed at each end; 1 _ _ 4 filled linearly with 2 and 3
    assert as_lists(cleaned) == {"gaps": [1, 2, 3, 4], "flat": [7, 7, 7], "zero": [0, 1, 2]}
    assert (report.read, report.kept, report.values) == (5, 3, 10)
    assert (report.trimmed, report.filled, report.filled_series) == (2 + 2, 2, 1)  # the empty series' 2 are trimmed
    assert (report.empty, report.short, report.constant, report.non_positive) == (1, 1, 1, 1)
    assert str(report) == (
        "5 series read, 3 kept (10 values); dropped 1 with no value and 1 shorter than 3; trimmed 4 missing values "
        "at series' ends; filled 2 missing values in 1 series by linear interpolation; 1 constant series (MASE "
        "leaves them out); 1 series with values <= 0 (Naive2 uses the plain naive for them)"
    )
    with pytest.raises(DataError, match="no series left in the data: 1 with no value, 4 shorter than 9"):
        clean(raw, min_length=9)


def test_clean_fills_runs_in_several_series_and_leaves_its_input_alone():
    nan = np.nan
    raw = SeriesSet.from_arrays(["a", "b"], [[0, nan, 2, nan, nan, 8], [10, np.inf, 30]])  # inf is missing too
    cleaned, report = clean(raw)
    assert as_lists(cleaned) == {"a": [0, 1, 2, 4, 6, 8], "b": [10, 20, 30]}
    assert (report.filled, report.filled_series, report.trimmed) == (4, 2, 0)
    assert np.sum(~np.isfinite(raw.values)) == 4
    _, report = clean(SeriesSet.from_arrays(["a"], [[1, 2, 3]]))
    assert str(report) == "1 series read, 1 kept (3 values)"


def test_long_layout_sorts_each_series_by_time(tmp_path, chunks):
    # "b" interleaves with "a" and comes out of time order; "a" has an empty value to fill
    lines = ["id,timestamp,value,note", "a,1,10,x", "b,3,3.5,y", "a,2,,z", "b,1,1.5,", "a,3,30,", "b,2,2.5,"]
    path = write(tmp_path / "long.csv", *lines)
    series, report = read_csv_series(path, "long")
    assert as_lists(series) == {"a": [10, 20, 30], "b": [1.5, 2.5, 3.5]}
    assert report.filled == 1


def test_long_layout_in_time_order_grouped_or_interleaved(tmp_path, chunks):
    lines = ["s1,2024-01-01,1", "s1,2024-01-02,2", "s1,2024-01-03,3", "s2,2024-01-01,7", "s2,2024-01-02,8"]
    grouped = write(tmp_path / "grouped.csv", *lines)
    assert as_lists(read_csv_series(grouped)[0]) == {"s1": [1, 2, 3], "s2": [7, 8]}  # no header
    lines = ["item,ds,y"] + [f"{i},2024-03-{d:02d}T10:00:00+01:00,{d * (i + 1)}" for d in range(1, 6) for i in range(3)]
    interleaved = write(tmp_path / "interleaved.csv", *lines)
    assert as_lists(read_csv_series(interleaved)[0]) == {str(i): [d * (i + 1) for d in range(1, 6)] for i in range(3)}


def test_long_layout_dates_in_any_order_and_missing_rows_at_the_ends(tmp_path, chunks):
    lines = ["id,time,v", "x,2024-01-03,3", "x,2024-01-01 00:00,", "x,2024-01-02,2", "x,2024-01-04,"]
    path = write(tmp_path / "dates.csv", *lines)
    series, report = read_csv_series(path)
    assert as_lists(series) == {"x": [2, 3]} and report.trimmed == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,t,v\na,1,1\na,1,2\n", "series 'a' has two rows at one timestamp"),
        ("id,t,v\na,2,1\nb,1,1\na,1,2\na,2,3\n", "series 'a' has two rows at one timestamp"),  # found when sorting
        ("id,t,v\na,1,1\na,,2\n", "line 3: no timestamp"),
        ("id,t,v\na,1,1\n,2,2\n", "line 3: no series id"),
        ("id,t,v\na,1,1\na,2,abc\n", "could not convert string to float: 'abc'"),
        ("id,t,v\na,2024-01-01,1\na,yesterday,2\n", "timestamps must be all numbers or all ISO 8601 dates"),
        ("id,t,v\na,1,1\na,x,2\n", "timestamps must be all numbers or all ISO 8601 dates"),
        ("", "is empty"),
    ],
)
def test_long_layout_errors_are_one_line(tmp_path, content, message):
    with pytest.raises(DataError, match=message) as error:
        read_csv_series(write(tmp_path / "bad.csv", *content.splitlines()))
    assert "\n" not in str(error.value)


def test_rows_layout_with_header_quotes_padding_and_ragged_rows(tmp_path, chunks):
    lines = ['"V1","V2","V3","V4","V5"', '"T1","1","2","3","4"', '"T2","5","6",,', '"T3","7",,,']
    m4_like = write(tmp_path / "rows.csv", *lines)
    assert as_lists(read_csv_series(m4_like, "rows")[0]) == {"T1": [1, 2, 3, 4], "T2": [5, 6], "T3": [7]}
    ragged = write(tmp_path / "ragged.csv", "a,1", "b,1,2,3,4,5", "c,,1,,3")  # no header; c: leading padding, one gap
    series, report = read_csv_series(ragged, "rows")
    assert as_lists(series) == {"a": [1], "b": [1, 2, 3, 4, 5], "c": [1, 2, 3]} and report.filled == 1
    with pytest.raises(DataError, match="series id 'a' appears more than once"):
        read_csv_series(write(tmp_path / "twice.csv", "a,1", "a,2"), "rows")


def test_columns_layout_with_ids_in_the_header_and_a_time_index(tmp_path, chunks):
    path = write(tmp_path / "cols.csv", "1001,1002,1003", "1,,5", "2,10,6", "3,20,")  # 1002 starts late, 1003 ends soon
    assert as_lists(read_csv_series(path, "columns")[0]) == {"1001": [1, 2, 3], "1002": [10, 20], "1003": [5, 6]}
    dated = write(tmp_path / "dated.csv", "date,north,south", "2024-01-01,1,4", "2024-01-02,,5", "2024-01-03,3,6")
    series, report = read_csv_series(dated, "columns", min_length=1)
    assert as_lists(series) == {"north": [1, 2, 3], "south": [4, 5, 6]} and report.filled == 1


def test_min_length_and_layout_errors(tmp_path):
    path = write(tmp_path / "rows.csv", "a,1,2,3", "b,1")
    series, report = read_csv_series(path, "rows", min_length=2)
    assert list(series.ids) == ["a"] and report.short == 1
    with pytest.raises(DataError, match="no series left in .*rows.csv: 0 with no value, 2 shorter than 5"):
        read_csv_series(path, "rows", min_length=5)
    with pytest.raises(DataError, match="unknown series layout 'wide'; choose from long, rows, columns"):
        read_csv_series(path, "wide")
    with pytest.raises(DataError, match="no such file"):
        read_csv_series(tmp_path / "absent.csv")


def test_read_m4_on_tiny_files(tmp_path, chunks):
    def row(*fields: object) -> str:  # quoted as in M4's files, None an empty (unquoted) field
        return ",".join("" if f is None else f'"{f}"' for f in fields)

    write(
        tmp_path / "Yearly-train.csv",
        row(*(f"V{i}" for i in range(1, 12))),
        row("Y1", *range(1, 11)),
        row("Y2", 5, 6, 7, *[None] * 7),
    )
    write(
        tmp_path / "Yearly-test.csv",
        row(*(f"V{i}" for i in range(1, 8))),
        row("Y1", *range(11, 17)),
        row("Y2", *range(8, 14)),
    )
    train, test = read_m4(tmp_path, "yearly")
    assert as_lists(train) == {"Y1": list(range(1, 11)), "Y2": [5, 6, 7]}
    assert as_lists(test) == {"Y1": list(range(11, 17)), "Y2": list(range(8, 14))}
    with pytest.raises(DataError, match="unknown M4 frequency 'Fortnightly'"):
        read_m4(tmp_path, "Fortnightly")
    with pytest.raises(DataError, match="no Hourly-train.csv in"):
        read_m4(tmp_path, "Hourly")


def test_read_m4_checks_its_files(tmp_path):
    write(tmp_path / "Train" / "Weekly-train.csv", '"V1","V2","V3"', '"W1","1","2"')  # the organisers' folders
    test = write(tmp_path / "Test" / "Weekly-test.csv", '"V1","V2"', '"W2","1"')
    with pytest.raises(DataError, match="different series ids"):
        read_m4(tmp_path, "Weekly")
    write(test, '"V1","V2"', '"W1","1"')
    with pytest.raises(DataError, match="must hold 13 values"):
        read_m4(tmp_path, "Weekly")


def test_last_horizon_split():
    s = SeriesSet.from_arrays(["a", "b"], [[1, 2, 3, 4, 5], [6, 7, 8]])
    train, valid = last_horizon_split(s, 2)
    assert as_lists(train) == {"a": [1, 2, 3], "b": [6]} and as_lists(valid) == {"a": [4, 5], "b": [7, 8]}
    with pytest.raises(DataError, match=r"1 series have at most horizon=3 values \(shortest: 'b' with 3\)"):
        last_horizon_split(s, 3)


def test_synthetic_series_are_deterministic_positive_and_learnable():
    series, horizon, period = synthetic_series()
    again, _, _ = synthetic_series()
    assert (horizon, period, len(series)) == (24, 24, 300) and np.array_equal(series.values, again.values)
    assert 300 <= series.lengths.min() and series.lengths.max() <= 800 and series.values.min() > 0
    assert not np.array_equal(synthetic_series(seed=1)[0].values[:100], series.values[:100])
    train, test = last_horizon_split(series, horizon)
    # A global ridge regression: the last week's logs (relative to the last day's mean) -> the next day's.
    week = 168
    inputs, targets = [], []
    for x in train:
        for end in range(week, len(x) - horizon + 1, 12):
            level = x[end - 24 : end].mean()
            inputs.append(np.log(x[end - week : end] / level))
            targets.append(np.log(x[end : end + horizon] / level))
    design = np.c_[np.array(inputs), np.ones(len(inputs))]  # (windows, 169)
    weights = np.linalg.solve(design.T @ design + np.eye(design.shape[1]), design.T @ np.array(targets))  # (169, 24)
    forecasts = [np.exp(np.r_[np.log(x[-week:] / x[-24:].mean()), 1.0] @ weights) * x[-24:].mean() for x in train]
    scores = fm.evaluate(test, forecasts, train, period)
    assert scores["owa"] < 0.9  # clearly better than Naive2 ...
    assert scores["seasonal_naive"]["smape"] > 10  # ... and the seasonal naive is far from perfect
