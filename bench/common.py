"""Helpers the benchmarks share: where the data is, and a quiet console."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def quiet() -> Console:
    return Console(file=io.StringIO())


def char_lm_data(path: str | None) -> list[str]:
    """Overrides for Tiny Shakespeare when it is there, else the embedded default corpus."""
    path = path or (str(SHAKESPEARE) if SHAKESPEARE.is_file() else None)
    return ["data=text", f"data.path={path}"] if path else ["data=stdlib"]
