"""Checkpoints: written atomically, versioned, and read back as data only (`weights_only=True`).

A checkpoint holds everything needed to continue a run exactly or to use its model on its own: the
model, optimiser, schedule, trainer position (epoch, batch within the epoch, step), RNG states, the
resolved config and the vocabulary.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from seqtrain.errors import CheckpointError

FORMAT_VERSION = 1


def save(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it.

    A crash or a full disk at any moment leaves either the old file or the new one, never a torn one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a process killed mid-write; one writer per run
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}; {kept}") from e
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path, recipe: str | None = None) -> dict[str, Any]:
    """Read a checkpoint as data; refuse files that are torn, foreign, too new, or of another recipe."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data, refused (checkpoints are data, never code)"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is truncated or not a seqtrain checkpoint ({str(e).splitlines()[0]})") from e
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a seqtrain checkpoint")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer seqtrain (format {state['format_version']}, this one reads "
            f"up to {FORMAT_VERSION}); upgrade seqtrain"
        )
    if recipe is not None and state.get("recipe") != recipe:
        raise CheckpointError(f"{path} is a checkpoint of recipe {state.get('recipe')!r}, not {recipe!r}")
    return state


def check_architecture(saved: dict, current: dict) -> None:
    """Refuse to load weights into a model configured differently, naming what changed."""
    changed = [
        f"model.{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    ]
    if changed:
        raise CheckpointError(f"the checkpoint's model differs from this config ({'; '.join(changed)})")
