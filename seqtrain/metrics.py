"""Classification metrics from a confusion matrix, shared by every classifier recipe.

A recipe's `step` returns the batch's confusion matrix as one of its additive statistics; the trainer
sums them over batches, and `summarize` turns the sum into metrics. Summing counts (not averaging
per-batch scores) makes macro-F1 exact however the data was batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,), (N,) class ids -> (C, C) counts; row = true class, column = predicted class."""
    flat = targets.long() * num_classes + predictions.long()  # (N,)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(confusion: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and per-class precision/recall (keys `precision/NAME`, `recall/NAME`).

    A precision or recall with nothing to divide by counts as 0 (as scikit-learn's zero_division=0).
    Macro-F1 averages the F1 of the classes that occur as targets or predictions, so a class absent
    from a small validation set does not drag the average down.
    """
    counts = confusion.double()
    names = [str(i) for i in range(len(counts))] if names is None else list(names)
    true_positives = counts.diagonal()
    predicted, actual = counts.sum(dim=0), counts.sum(dim=1)  # (C,) column and row sums
    precision = true_positives / predicted.clamp(min=1)
    recall = true_positives / actual.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = (predicted + actual) > 0
    metrics = {
        "accuracy": float(true_positives.sum() / counts.sum().clamp(min=1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
    for i, name in enumerate(names):
        metrics[f"precision/{name}"] = float(precision[i])
        metrics[f"recall/{name}"] = float(recall[i])
    return metrics


def confusion_image(confusion: torch.Tensor, names: Sequence[str]) -> np.ndarray:
    """The confusion matrix as an (H, W, 3) uint8 image with counts in the cells, for TensorBoard:
    `writer.add_image("confusion", image, step, dataformats="HWC")`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only runs that log images pay for it
    from matplotlib.figure import Figure

    counts = confusion.cpu().numpy()
    size = 2.5 + 0.5 * len(names)
    figure = Figure(figsize=(size, size), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues")
    axes.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
    )
    axes.tick_params(axis="x", labelrotation=45)
    threshold = counts.max() / 2
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
