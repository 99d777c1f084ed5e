"""Attention heat maps: which source tokens each target token was produced from.

Rendering uses matplotlib's object API on the Agg canvas, imported on first use: no pyplot global
state, no display needed, and importing seqtrain stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def attention_image(weights: torch.Tensor | np.ndarray, source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """(T, S) weights with S source and T target labels -> an (H, W, 3) uint8 RGB image.

    For TensorBoard: `writer.add_image(tag, image, step, dataformats="HWC")`.
    """
    figure = _figure(weights, source, target)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_attention(weights: torch.Tensor | np.ndarray, source: Sequence[str], target: Sequence[str],
                   path: str | Path) -> Path:
    """Write the heat map of (T, S) weights to a PNG file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _figure(weights, source, target).savefig(path, format="png")
    return path


def _figure(weights, source: Sequence[str], target: Sequence[str]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = weights.detach().float().cpu().numpy() if torch.is_tensor(weights) else np.asarray(weights)
    if weights.shape != (len(target), len(source)):
        raise ValueError(
            f"attention of shape {tuple(weights.shape)} needs {len(target)} target x {len(source)} source labels"
        )
    # About a third of an inch per token, within sizes that stay readable.
    figure = Figure(figsize=(min(max(3.0, 0.35 * len(source) + 1.5), 16), min(max(3.0, 0.35 * len(target) + 1.2), 16)),
                    dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(len(source)), list(source), rotation=90, fontsize=8)
    axes.set_yticks(range(len(target)), list(target), fontsize=8)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    figure.colorbar(image, ax=axes, fraction=0.05)
    return figure
