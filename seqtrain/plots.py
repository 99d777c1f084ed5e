"""Attention heat maps: which source tokens each target token was produced from. Gradient flow through time:
how much of the loss's gradient reaches each step of each recurrent layer (seqtrain/models/gradient_flow.py).

Rendering uses matplotlib's object API on the Agg canvas, imported on first use: no pyplot global
state, no display needed, and importing seqtrain stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def attention_image(weights: torch.Tensor | np.ndarray, source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """(T, S) weights with S source and T target labels -> an (H, W, 3) uint8 RGB image.

    For TensorBoard: `writer.add_image(tag, image, step, dataformats="HWC")`.
    """
    figure = _figure(weights, source, target)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_attention(
    weights: torch.Tensor | np.ndarray, source: Sequence[str], target: Sequence[str], path: str | Path
) -> Path:
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
    figure = Figure(
        figsize=(min(max(3.0, 0.35 * len(source) + 1.5), 16), min(max(3.0, 0.35 * len(target) + 1.2), 16)),
        dpi=100,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(len(source)), list(source), rotation=90, fontsize=8)
    axes.set_yticks(range(len(target)), list(target), fontsize=8)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    figure.colorbar(image, ax=axes, fraction=0.05)
    return figure


def gradient_flow_image(norms: Mapping[str, torch.Tensor | np.ndarray], title: str = "") -> np.ndarray:
    """Per layer, (T,) mean ‖∂loss/∂h‖ by distance from the end -> an (H, W, 3) uint8 RGB image of the curves.

    For TensorBoard: `writer.add_image(tag, image, step, dataformats="HWC")`.
    """
    figure = _flow_figure(norms, title)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_gradient_flow(norms: Mapping[str, torch.Tensor | np.ndarray], path: str | Path, title: str = "") -> Path:
    """Write the gradient-flow curves to a PNG file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _flow_figure(norms, title).savefig(path, format="png")
    return path


def _flow_figure(norms: Mapping[str, torch.Tensor | np.ndarray], title: str):
    """Log y: a gradient that vanishes or explodes through time is a straight line, its slope the factor per step.
    Zeros (a gradient below float32's range) are left out: a log axis has no place for them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, curve in norms.items():
        curve = curve.detach().double().cpu().numpy() if torch.is_tensor(curve) else np.asarray(curve, dtype=float)
        axes.plot(np.arange(len(curve)), np.where(curve > 0, curve, np.nan), label=name, linewidth=1.5)
    axes.set_yscale("log")
    axes.set_xlabel("distance from the end of the sequence (steps)")
    axes.set_ylabel(r"mean $\|\partial\,\mathrm{loss} / \partial h_t\|$")
    axes.set_title(title or "gradient flow through time")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8)
    return figure
