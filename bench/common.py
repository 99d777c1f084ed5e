"""Helpers the benchmarks share: where the data is, a quiet console, and a run of `seqtrain fit` whose
command line is printed with the figure."""

from __future__ import annotations

import io
import json
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from seqtrain import runs
from seqtrain.config import compose

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def quiet() -> Console:
    return Console(file=io.StringIO())


def char_lm_data(path: str | None) -> list[str]:
    """Overrides for Tiny Shakespeare when it is there, else the embedded default corpus."""
    path = path or (str(SHAKESPEARE) if SHAKESPEARE.is_file() else None)
    return ["data=text", f"data.path={path}"] if path else ["data=stdlib"]


@dataclass
class Fitted:
    run_dir: Path
    final: dict[str, Any]  # the last validation's metrics, as `seqtrain fit` prints them
    started: float  # time.time() when fit began (metrics.jsonl stamps its lines with time.time())
    seconds: float  # wall time of the whole fit
    command: str  # the command line a user types for the same run


def fit(recipe: str, overrides: list[str], run_dir: str | None = None) -> Fitted:
    """`seqtrain fit recipe=RECIPE OVERRIDES...`, run in this process through the CLI's own code path, into
    `run_dir` (default: a new temporary folder)."""
    run_dir = run_dir or tempfile.mkdtemp(prefix=f"{recipe}_quality-") + "/run"
    overrides = [*overrides, f"run_dir={run_dir}"]
    started, start = time.time(), time.perf_counter()
    run_dir, final = runs.fit(compose(recipe, overrides), Console(stderr=True))
    command = shlex.join(["seqtrain", "fit", f"recipe={recipe}", *overrides])
    return Fitted(Path(run_dir), final, started, time.perf_counter() - start, command)


def records(run_dir: Path, split: str) -> list[dict[str, Any]]:
    """The run's metrics.jsonl lines of one split (train, valid, epoch)."""
    return [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if r["split"] == split]
