"""M4 test-set figures of the forecast recipe's defaults in a time budget, with the classic benchmarks beside
them, measured on the same series in the same process.

    python bench/forecast_quality.py --root ../shared/data/m4 --frequency hourly --minutes 20

Runs `seqtrain fit recipe=forecast data=m4 data.root=ROOT data.frequency=F trainer.max_time=SECONDS` and
nothing else, then `seqtrain evaluate RUN split=test` (sMAPE, MASE, OWA, MSIS, coverage, and Naive2's and the
seasonal naive's sMAPE and MASE on the same series). Then, here, statsmodels' Theta (ThetaModel, the
classic Theta method on seasonally adjusted data, M4's "Theta") and ETS (Holt-Winters with damped additive
trend and multiplicative seasonality where the values allow, additive otherwise) forecast every series from
the same training values, scored by the same functions (seqtrain/forecast_metrics.py). statsmodels is a
benchmark dependency only: pip install -e '.[bench]'. Extra overrides after the flags apply to the run.
Prints one JSON line, with the organisers' published figures for the frequency.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench import common
from seqtrain import runs
from seqtrain.data.series import M4_HORIZON_PERIOD, read_m4
from seqtrain.forecast_metrics import evaluate

M4 = Path(__file__).resolve().parents[2] / "shared" / "data" / "m4"
# The organisers' "Point Forecasts-Frequency" sheet (../shared/data/README.md): sMAPE, MASE, OWA.
PUBLISHED = {
    "hourly": {
        "naive2": (18.383, 2.395, 1.000),
        "seasonal_naive": (13.912, 1.193, 0.627),
        "theta": (18.138, 2.455, 1.006),
        "mlp": (13.842, 2.607, 0.921),
        "rnn": (14.698, 3.048, 1.036),
        "es_rnn_smyl": (9.328, 0.893, 0.440),
        "fforma": (11.506, 0.819, 0.484),
        "best_hourly_doornik": (8.913, 0.801, 0.410),
    },
}


def statistical(train, horizon: int, period: int) -> dict[str, np.ndarray]:
    """(S, H) forecasts of Theta and ETS from statsmodels for every training series."""
    from statsmodels.tsa.forecasting.theta import ThetaModel
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    theta, ets = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the per-series fits
        for x in train:
            x = np.asarray(x, dtype=np.float64)
            theta.append(np.asarray(ThetaModel(x, period=period).fit().forecast(horizon)))
            seasonal = "mul" if np.all(x > 0) else "add"
            try:
                fitted = ExponentialSmoothing(
                    x, trend="add", damped_trend=True, seasonal=seasonal, seasonal_periods=period
                ).fit()
                ets.append(np.asarray(fitted.forecast(horizon)))
            except (ValueError, np.linalg.LinAlgError):  # a series the model cannot fit: its naive forecast
                ets.append(np.full(horizon, x[-1]))
    return {"theta": np.stack(theta), "ets": np.stack(ets)}


def parser() -> argparse.ArgumentParser:
    """The flags this benchmark takes (tests/test_docs.py checks every documented command against them)."""
    p = argparse.ArgumentParser()
    p.add_argument("--root", default=str(M4))
    p.add_argument("--frequency", default="hourly")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--skip-statistical", action="store_true", help="leave Theta and ETS out (they take minutes)")
    p.add_argument("overrides", nargs="*", help="extra overrides for the run")
    return p


def main() -> None:
    args = parser().parse_args()

    overrides = [
        "data=m4",
        f"data.root={args.root}",
        f"data.frequency={args.frequency}",
        f"trainer.max_time={args.minutes * 60:g}",
    ]
    run = common.fit("forecast", [*overrides, *args.overrides], args.run_dir)
    test = runs.evaluate([run.run_dir], ["split=test"])
    result = {
        "benchmark": "forecast_quality",
        "frequency": args.frequency,
        **{k: round(v, 4) for k, v in test.items() if isinstance(v, float)},
    }
    if not args.skip_statistical:
        train, actual = read_m4(args.root, args.frequency)
        horizon, period = M4_HORIZON_PERIOD[args.frequency.lower()]
        started = time.perf_counter()
        for name, forecasts in statistical(train, horizon, period).items():
            scored = evaluate(actual, forecasts, train, period)
            result[name] = {k: round(scored[k], 4) for k in ("smape", "mase", "owa")}
        result["statistical_minutes"] = round((time.perf_counter() - started) / 60, 2)
    valid = common.records(run.run_dir, "valid")
    result |= {
        "published": PUBLISHED.get(args.frequency.lower(), {}),
        "steps": valid[-1]["step"],
        "best_valid_owa": round(min(r["owa"] for r in valid), 4),
        "minutes": args.minutes,
        "wall_minutes": round(run.seconds / 60, 2),
        "command": run.command,
        "run_dir": str(run.run_dir),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
