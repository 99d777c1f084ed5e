"""What a person watches during training: TensorBoard, metrics.jsonl, and a progress display.

The progress display is a rich bar on a terminal and plain periodic lines elsewhere (CI, log files).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from seqtrain.data.text import atomic_write
from seqtrain.models.gradient_flow import GradientFlow
from seqtrain.plots import gradient_flow_image
from seqtrain.rundir import RunDir


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def truncate_log(path: Path, last_step: int) -> None:
    """Keep the records of steps up to `last_step`; a line torn by a kill mid-write goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line + "\n")
    atomic_write(path, "".join(kept).encode())


def log_hparams(run_dir: Path, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
    """Record a finished run's searched values and final metrics for TensorBoard's HParams dashboard.

    The session goes into the run's own dir (not a subdir, as `SummaryWriter.add_hparams` would make), so
    over a sweep or study dir the dashboard shows one row per run beside its curves. The metrics are
    logged as `hparams/<name>` scalars, which the dashboard reads. Values it cannot show (lists, None)
    become text.
    """
    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    tagged = {f"hparams/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    with SummaryWriter(str(run_dir)) as writer:
        for summary in hparams_summary(values, tagged):
            writer.file_writer.add_summary(summary)
        for tag, value in tagged.items():
            writer.add_scalar(tag, value)


def log_ensemble(run_dir: Path, members: list[dict[str, float]], ensemble: dict[str, float]) -> None:
    """A bagged run's own log (its members log their training in their own dirs): each member's
    validation metrics at step = its index, then the ensemble's at step = the number of members, in
    metrics.jsonl and TensorBoard (`member/*`, `ensemble/*`). Written whole once the last member is
    done, so a resumed run's replaces the earlier one (purge_step=0 hides the old points)."""
    records = [{"split": "member", "step": i, **m} for i, m in enumerate(members)]
    records.append({"split": "ensemble", "step": len(members), **ensemble})
    atomic_write(RunDir(run_dir).metrics, "".join(json.dumps(r) + "\n" for r in records).encode())
    with SummaryWriter(str(run_dir), purge_step=0) as writer:
        for record in records:
            for name, value in record.items():
                if name not in ("split", "step"):
                    writer.add_scalar(f"{record['split']}/{name}", value, record["step"])


class Monitor:
    """`start_step` > 0 continues a run from its checkpoint at that step: whatever was logged after it
    (by the process that was killed) is dropped, because those steps are about to be trained again."""

    def __init__(
        self, run_dir: Path, total_steps: int | None, max_time: float | None, console: Console, start_step: int = 0
    ):
        self.writer = SummaryWriter(str(run_dir), purge_step=start_step + 1 if start_step else None)
        if start_step:
            truncate_log(RunDir(run_dir).metrics, start_step)
        self.jsonl = open(RunDir(run_dir).metrics, "a", encoding="utf-8")
        self.console = console
        self.total_steps = total_steps
        self.max_time = max_time
        self.progress: Progress | None = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]step {task.completed}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
            self.bar = self.progress.add_task("train", total=total_steps, status="")

    def scalars(self, split: str, metrics: dict[str, float], step: int, epoch: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)
        record = {"split": split, "step": step, "epoch": epoch, "time": round(time.time(), 3), **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def update(self, step: int, elapsed: float, metrics: dict[str, float]) -> None:
        """Progress after a logging window: the bar on a terminal, one plain line otherwise."""
        status = format_metrics(metrics)
        if self.progress is not None:
            self.progress.update(self.bar, completed=step, status=status)
            return
        self.console.print(f"step {step}{self._of_total()}  {status}  elapsed {elapsed:.0f}s{self._eta(step, elapsed)}")

    def message(self, text: str) -> None:
        self.console.print(text)

    def _of_total(self) -> str:
        return f"/{self.total_steps}" if self.total_steps else ""

    def _eta(self, step: int, elapsed: float) -> str:
        left = []
        if self.total_steps and step:
            left.append(elapsed / step * (self.total_steps - step))
        if self.max_time:
            left.append(self.max_time - elapsed)
        return f"  eta {max(0.0, min(left)):.0f}s" if left else ""

    def histograms(self, model: torch.nn.Module, step: int) -> None:
        """Per-parameter gradient norms and weight/gradient histograms: vanishing or exploding gradients show here."""
        for name, param in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            if param.grad is not None:
                grad = param.grad.detach().float()
                self.writer.add_scalar(f"grad_norm/{name}", grad.norm().item(), step)
                if math.isfinite(grad.abs().max().item()):
                    self.writer.add_histogram(f"grads/{name}", grad.cpu(), step)

    def gradient_flow(self, flow: GradientFlow, step: int) -> None:
        """The curves of ‖∂loss/∂h_t‖ against distance from the end as a picture, and each layer's first/last ratio."""
        self.writer.add_image("gradient_flow", gradient_flow_image(flow.norms, f"step {step}"), step, dataformats="HWC")
        for name, ratio in flow.ratios.items():
            self.writer.add_scalar(f"gradient_flow/{name}", ratio, step)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.writer.close()
        self.jsonl.close()


class Silent:
    """The monitor of ranks other than 0: they log nothing (their statistics reach rank 0's)."""

    writer = None

    def scalars(self, *args: Any) -> None: ...

    def update(self, *args: Any) -> None: ...

    def message(self, text: str) -> None: ...

    def histograms(self, *args: Any) -> None: ...

    def gradient_flow(self, *args: Any) -> None: ...

    def close(self) -> None: ...
