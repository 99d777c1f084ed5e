"""Helpers the benchmarks share: where the data is, a quiet console, and step-rate calibration."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console

from seqtrain.optim import OptimConfig, build_optimizer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def quiet() -> Console:
    return Console(file=io.StringIO())


def char_lm_data(path: str | None) -> list[str]:
    """Overrides for Tiny Shakespeare when it is there, else the embedded default corpus."""
    path = path or (str(SHAKESPEARE) if SHAKESPEARE.is_file() else None)
    return ["data=text", f"data.path={path}"] if path else ["data=stdlib"]


def steps_per_second(step: Callable, model: torch.nn.Module, batch: dict | list[dict]) -> float:
    """Training steps/s of a recipe's `step` on one fixed batch, or on real batches in turn when their
    lengths vary (3 warm-up steps, then the rest timed; 5 for one batch): the quality benchmarks size
    their LR schedules to the time budget with it."""
    batches = batch if isinstance(batch, list) else [batch] * 8
    optimizer = build_optimizer(list(model.parameters()), OptimConfig(name="adamw"))  # as the runs build theirs
    model.train()
    for i, each in enumerate(batches):
        if i == 3:
            start = time.perf_counter()
        loss, _ = step(model, each)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (len(batches) - 3) / (time.perf_counter() - start)
