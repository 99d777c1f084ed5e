"""Attention heat maps: which source tokens each target token was produced from. Gradient flow through time:
how much of the loss's gradient reaches each step of each recurrent layer (seqtrain/models/gradient_flow.py).
Forecasts: a series' recent history, its forecast with the prediction interval, and the actual values.

Rendering uses matplotlib's object API on the Agg canvas, imported on first use: no pyplot global
state, no display needed, and importing seqtrain stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

# One series' picture: (name, history (T,), the actual future (H,) or None, forecasts (H, 3): lower, median, upper)
ForecastPanel = tuple[str, np.ndarray, "np.ndarray | None", np.ndarray]


def attention_image(weights: torch.Tensor | np.ndarray, source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """(T, S) weights with S source and T target labels -> an (H, W, 3) uint8 RGB image.

    For TensorBoard: `writer.add_image(tag, image, step, dataformats="HWC")`.
    """
    return _rgb(_figure(weights, source, target))


def _rgb(figure) -> np.ndarray:
    """A drawn figure as an (H, W, 3) uint8 array."""
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
    return _rgb(_flow_figure(norms, title))


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


def forecast_image(panels: Sequence[ForecastPanel]) -> np.ndarray:
    """Up to a few series, each with its history, forecast, interval and actual values -> an (H, W, 3) image."""
    return _rgb(_forecast_figure(panels))


def save_forecasts(panels: Sequence[ForecastPanel], path: str | Path) -> Path:
    """Write the forecast pictures of `panels` to a PNG file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _forecast_figure(panels).savefig(path, format="png")
    return path


def _forecast_figure(panels: Sequence[ForecastPanel]):
    """One panel per series: the history up to step 0, then the median forecast inside its interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(6.0 * columns, 2.8 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for i, (name, history, actual, forecast) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        steps = np.arange(1, len(forecast) + 1)
        axes.plot(np.arange(-len(history) + 1, 1), history, color="0.3", linewidth=1.0, label="history")
        axes.fill_between(steps, forecast[:, 0], forecast[:, 2], color="C0", alpha=0.25, linewidth=0, label="interval")
        axes.plot(steps, forecast[:, 1], color="C0", linewidth=1.5, label="forecast")
        if actual is not None:
            axes.plot(steps, actual, color="C1", linewidth=1.0, linestyle="--", label="actual")
        axes.set_title(str(name), fontsize=9)
        axes.grid(True, alpha=0.3)
        if i == 0:
            axes.legend(fontsize=7, loc="upper left")
    return figure
