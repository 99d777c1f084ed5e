"""Loading many series: the time and peak memory of `read_csv_series` on a generated CSV of 100,000
series and 50 million values, set beside the size of the arrays it returns.

    python bench/forecast_scale.py                                   # long layout, rows grouped by series
    python bench/forecast_scale.py --order interleaved               # all series at t0, then t1, ...
    python bench/forecast_scale.py --order shuffled                  # rows in random order: two passes and a sort
    python bench/forecast_scale.py --layout rows --series 2000 --values 1000000   # smoke test, M4-like rows

Series lengths vary from half to one and a half times the mean; values carry two decimals, timestamps
are hourly ISO dates (or step numbers with --timestamps int). The file is written to a temporary folder
and loaded in a child process, whose peak resident memory (VmHWM) is compared with its resident
memory after imports. Ends by printing one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def lengths_of(series: int, values: int, rng: np.random.Generator) -> np.ndarray:
    """(series,) lengths from about 0.5 to 1.5 times the mean, adding up to `values` exactly."""
    if values < 2 * series:
        raise SystemExit("--values must be at least twice --series")
    raw = rng.uniform(0.5, 1.5, series)
    lengths = np.floor(raw * values / raw.sum()).astype(np.int64)
    lengths[: values - lengths.sum()] += 1  # flooring left fewer than `series` values over
    return lengths


def write_csv(
    path: Path,
    layout: str,
    order: str,
    timestamps: str,
    lengths: np.ndarray,
    rng: np.random.Generator,
) -> None:
    import pandas as pd

    ids = np.array([f"T{i}" for i in range(len(lengths))])
    levels = np.exp(rng.uniform(np.log(10), np.log(10_000), len(lengths)))
    with open(path, "w") as f:
        if layout == "long":
            f.write("id,timestamp,value\n")
            starts = np.concatenate([[0], np.cumsum(lengths)])
            total = int(starts[-1])
            if order == "shuffled":
                rows = rng.permutation(total)
            elif order == "interleaved":
                step = np.arange(total) - np.repeat(starts[:-1], lengths)  # each row's step within its series
                rows = np.argsort(step, kind="stable")
            else:
                rows = np.arange(total)
            series_of = np.repeat(np.arange(len(lengths)), lengths)
            for chunk in np.array_split(rows, max(1, total // 2_000_000)):
                s = series_of[chunk]
                t = chunk - starts[s]
                stamp = (np.datetime64("2020-01-01T00", "h") + t).astype(str) if timestamps == "date" else t
                value = np.round(levels[s] * rng.lognormal(0, 0.2, len(chunk)), 2)
                pd.DataFrame({"id": ids[s], "timestamp": stamp, "value": value}).to_csv(f, header=False, index=False)
        elif layout == "rows":
            for name, level, n in zip(ids, levels, lengths):
                f.write(name + "," + ",".join(map(str, np.round(level * rng.lognormal(0, 0.2, n), 2))) + "\n")
        else:  # columns: one series per column, shorter ones padded with empty fields at the end
            f.write(",".join(ids) + "\n")
            for t in range(int(lengths.max())):
                row = np.round(levels * rng.lognormal(0, 0.2, len(lengths)), 2).astype(str)
                row[lengths <= t] = ""
                f.write(",".join(row) + "\n")


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MiB. Not ru_maxrss: after a fork
    and exec that starts from the parent's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # kB


def load(path: str, layout: str) -> None:
    """The child: import, note the resident memory, load, and print the figures as JSON."""
    import pandas  # noqa: F401  imported before the baseline, as a recipe's process has it already

    from seqtrain.data.series import read_csv_series

    before = memory_mb("VmRSS")
    start = time.perf_counter()
    series, report = read_csv_series(path, layout)
    seconds = time.perf_counter() - start
    peak = memory_mb("VmHWM")
    arrays = (series.values.nbytes + series.offsets.nbytes + series.ids.nbytes) / 2**20
    print(
        json.dumps(
            {
                "series": len(series),
                "values": len(series.values),
                "load_s": round(seconds, 2),
                "peak_rss_increase_mb": round(peak - before, 1),
                "arrays_mb": round(arrays, 1),
                "ratio": round((peak - before) / arrays, 2),
                "summary": str(report),
            }
        )
    )


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--values", type=int, default=50_000_000)
    parser.add_argument("--layout", choices=["long", "rows", "columns"], default="long")
    parser.add_argument(
        "--order", choices=["grouped", "interleaved", "shuffled"], default="grouped", help="the long layout's row order"
    )
    parser.add_argument("--timestamps", choices=["date", "int"], default="date")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", metavar="CSV", help=argparse.SUPPRESS)  # the child's mode
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.load:
        return load(args.load, args.layout)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="forecast_scale-") as tmp:
        path = Path(tmp) / f"series-{args.layout}.csv"
        start = time.perf_counter()
        write_csv(path, args.layout, args.order, args.timestamps, lengths_of(args.series, args.values, rng), rng)
        written = time.perf_counter() - start
        child = subprocess.run(
            [sys.executable, __file__, "--load", str(path), "--layout", args.layout],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr.strip().splitlines()[-1])
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        size = path.stat().st_size / 2**20
    print(
        json.dumps(
            {
                "benchmark": "forecast_scale",
                "layout": args.layout,
                "order": args.order if args.layout == "long" else None,
                "timestamps": args.timestamps if args.layout == "long" else None,
                "file_mb": round(size, 1),
                "write_s": round(written, 1),
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
