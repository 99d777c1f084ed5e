"""The one training loop. It knows no recipe: a recipe hands it a `Task` (a model, a step function
that returns the loss and additive statistics, and a summary of those statistics into metrics).

Read `fit` top to bottom; its numbered sections are the whole story.
"""

from __future__ import annotations

import math
import random
import signal
import time
import threading
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import torch
from rich.console import Console

from seqtrain import __version__, checkpoint
from seqtrain.data.collate import to_device
from seqtrain.data.sampler import BatchingConfig, BucketBatchSampler
from seqtrain.errors import ConfigError, Interrupted, TrainingError
from seqtrain.monitor import Monitor, format_metrics
from seqtrain.optim import OptimConfig, SchedConfig, Schedule, build_optimizer, l1_penalty

Stats = dict[str, torch.Tensor]


@dataclass
class EarlyStoppingConfig:
    monitor: str = "loss"  # a validation metric name
    mode: str = "min"  # min or max
    patience: Optional[int] = None  # validations without improvement before stopping; None = never stop early
    min_delta: float = 0.0

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ConfigError(f"trainer.early_stopping.mode must be min or max, got {self.mode!r}")


@dataclass
class TrainerConfig:
    max_epochs: Optional[int] = None
    max_steps: Optional[int] = None
    max_time: Optional[float] = None  # seconds of training, summed over resumes
    val_every_steps: Optional[int] = None  # None = validate at the end of each epoch
    val_max_batches: Optional[int] = None
    checkpoint_every_steps: Optional[int] = None
    grad_accum: int = 1
    clip_grad_norm: Optional[float] = 1.0
    clip_grad_value: Optional[float] = None
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    device: str = "auto"  # auto = cuda when present
    compile: bool = False
    seed: int = 1234
    resume: Optional[str] = None  # a run dir to continue in
    init_from: Optional[str] = None  # a run dir whose weights (matching names and shapes) start a new run
    log_every_steps: int = 50
    log_histograms_every: int = 0  # 0 = never
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self):
        if self.max_epochs is None and self.max_steps is None and self.max_time is None:
            raise ConfigError("set a budget: trainer.max_epochs, trainer.max_steps or trainer.max_time")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"trainer.precision must be fp32 or bf16, got {self.precision!r}")
        if self.resume and self.init_from:
            raise ConfigError("trainer.resume continues a run and trainer.init_from starts a new one; give one")
        if self.grad_accum < 1 or self.log_every_steps < 1:
            raise ConfigError("trainer.grad_accum and trainer.log_every_steps must be >= 1")


class SizedDataset(Protocol):
    """A map-style dataset that knows each example's length, for bucketing."""

    lengths: Sequence[int]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclass
class Task:
    """What a recipe hands the trainer: a model and the math around it."""

    model: torch.nn.Module
    step: Callable[[torch.nn.Module, dict], tuple[torch.Tensor, Stats]]  # -> (loss to minimise, additive stats)
    summarize: Callable[[Stats], dict[str, float]]  # summed stats -> metrics
    collate: Callable[[list], dict]
    log_samples: Optional[Callable[[torch.nn.Module, Any, int], None]] = None  # (model, tensorboard writer, step)


@dataclass
class TrainState:
    """The trainer's position, saved in every checkpoint so that resume continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    elapsed: float = 0.0  # training seconds, over all resumes
    best: Optional[float] = None
    bad_validations: int = 0


def seed_everything(seed: int) -> None:
    """Seed the RNGs seqtrain draws from (Python's and torch's); call it before building the model."""
    random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    task: Task,
    train_set: SizedDataset,
    valid_set: SizedDataset,
    cfg: TrainerConfig,
    optim_cfg: OptimConfig,
    sched_cfg: SchedConfig,
    batching: BatchingConfig,
    run_dir: Path,
    meta: dict[str, Any],
    console: Console | None = None,
    shuffle_train: bool = True,
) -> dict[str, float]:
    """Train `task.model` in place and return the final validation metrics.

    `meta` (recipe, config, vocab) goes into every checkpoint so that a checkpoint alone can rebuild
    the model. Checkpoints go to run_dir/checkpoints; TensorBoard events and metrics.jsonl to run_dir.
    """
    console = console or Console(stderr=True, soft_wrap=True)

    # 1. Device, seed, model.
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = task.model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    forward_model = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    # 2. Batches, optimiser, schedule. The loader gets its own generator so that making a new iterator
    #    (at each epoch, or at a resume) never draws from the global RNG that dropout uses.
    sampler = BucketBatchSampler(
        train_set.lengths, batching.batch_size, batching.max_tokens, shuffle=shuffle_train,
        seed=cfg.seed, pool_batches=batching.pool_batches,
    )
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, collate_fn=task.collate,
        num_workers=batching.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
    )
    steps_per_epoch = math.ceil(len(sampler) / cfg.grad_accum)
    if steps_per_epoch == 0:
        raise ConfigError("the training split has fewer examples than one batch")
    budgets = [b for b in (cfg.max_steps, cfg.max_epochs and cfg.max_epochs * steps_per_epoch) if b]
    total_steps = min(budgets) if budgets else None
    optimizer = build_optimizer(params, optim_cfg)
    schedule = Schedule(optimizer, sched_cfg, total_steps, cfg.early_stopping.mode)
    state = TrainState()
    ckpt_dir = run_dir / "checkpoints"
    # Fail now, not after an epoch, if early stopping watches a metric the recipe does not report.
    reported = evaluate(task, forward_model, valid_set, batching, device, autocast, max_batches=1)
    if cfg.early_stopping.monitor not in reported:
        raise ConfigError(
            f"trainer.early_stopping.monitor={cfg.early_stopping.monitor!r} is not a metric; valid: {', '.join(reported)}"
        )

    # 3. Resume: model, optimiser, schedule, position and RNG continue where the checkpoint left them.
    if cfg.resume:
        saved = checkpoint.load(checkpoint.find(Path(cfg.resume), prefer="last"), recipe=meta["recipe"])
        checkpoint.check_architecture(saved["config"]["model"], meta["config"]["model"])
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = TrainState(**saved["trainer"])
        set_rng_state(saved["rng"])
        console.print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")

    def save(name: str, metrics: dict[str, float]) -> None:
        checkpoint.save(
            {
                **meta, "seqtrain_version": __version__, "metrics": metrics,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "trainer": asdict(state), "rng": rng_state(),
            },
            ckpt_dir / name,
        )

    def validate() -> dict[str, float]:
        """Validate, log, step NewBob, keep the best checkpoint, count validations without improvement."""
        metrics = evaluate(task, forward_model, valid_set, batching, device, autocast, cfg.val_max_batches)
        monitor.scalars("valid", metrics, state.step, state.epoch)
        monitor.message(f"validation at step {state.step}: {format_metrics(metrics)}")
        if task.log_samples is not None:
            task.log_samples(model, monitor.writer, state.step)
        stop = cfg.early_stopping
        value = metrics[stop.monitor]
        schedule.validated(value)
        sign = 1 if stop.mode == "min" else -1
        if state.best is None or sign * (state.best - value) > stop.min_delta:
            state.best, state.bad_validations = value, 0
            save("best.pt", metrics)
        else:
            state.bad_validations += 1
        save("last.pt", metrics)
        return metrics

    # 4. The loop. A step is one optimiser update over `grad_accum` micro-batches.
    monitor = Monitor(run_dir, total_steps, cfg.max_time, console)
    metrics: dict[str, float] = {}
    window: Stats = {}
    window_start, window_tokens, window_padded = time.perf_counter(), 0, 0
    epoch_tokens, epoch_padded = 0, 0
    elapsed_before, fit_start = state.elapsed, time.perf_counter()
    stop_reason = budget_spent(cfg, state, "epoch") or patience_spent(cfg, state)
    with stop_requests() as stop_requested, closing(monitor):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        while stop_reason is None:
            sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
            epoch_batches = len(sampler)
            micro = 0
            for batch in loader:
                # 4a. Forward and backward on one micro-batch.
                batch = to_device(batch, device)
                with autocast:
                    loss, stats = task.step(forward_model, batch)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss.item()} at step {state.step + 1} (lr {current_lr(optimizer):.3g}); "
                        f"stopped, the last good checkpoint stays in {ckpt_dir}"
                    )
                if optim_cfg.l1 > 0:
                    loss = loss + optim_cfg.l1 * l1_penalty(params)
                (loss / cfg.grad_accum).backward()
                for k, v in stats.items():
                    window[k] = window.get(k, 0) + v.detach()
                window_tokens += batch.get("num_tokens", 0)
                window_padded += batch.get("padded_tokens", 0)
                epoch_tokens += batch.get("num_tokens", 0)
                epoch_padded += batch.get("padded_tokens", 0)
                state.batch_in_epoch += 1
                micro += 1
                if micro < cfg.grad_accum and state.batch_in_epoch < epoch_batches:
                    continue

                # 4b. Clip, update, schedule.
                state.step += 1
                logging_now = state.step % cfg.log_every_steps == 0
                grad_norm = clip_gradients(params, cfg.clip_grad_norm, cfg.clip_grad_value, measure=logging_now)
                if grad_norm is not None and not torch.isfinite(grad_norm):
                    raise TrainingError(
                        f"gradient norm became {grad_norm.item()} at step {state.step}; stopped before the update, "
                        f"the last good checkpoint stays in {ckpt_dir}"
                    )
                if cfg.log_histograms_every and state.step % cfg.log_histograms_every == 0:
                    monitor.histograms(model, state.step)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                micro = 0
                now = time.perf_counter()
                state.elapsed = elapsed_before + now - fit_start

                # 4c. Log a window of steps.
                if logging_now:
                    seconds = now - window_start
                    logged = task.summarize(window) | {"lr": current_lr(optimizer), "grad_norm": float(grad_norm)}
                    logged["tokens_per_s"] = window_tokens / seconds
                    if window_padded:
                        logged["padding_efficiency"] = window_tokens / window_padded
                    monitor.scalars("train", logged, state.step, state.epoch)
                    monitor.update(state.step, state.elapsed, {k: logged[k] for k in ("loss", "lr", "tokens_per_s") if k in logged})
                    window, window_tokens, window_padded = {}, 0, 0
                    window_start = time.perf_counter()

                # 4d. Validate and checkpoint on schedule; stop on a budget, early stopping or a signal.
                if cfg.val_every_steps and state.step % cfg.val_every_steps == 0:
                    metrics = validate()
                    window_start = time.perf_counter()
                elif cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0:
                    save("last.pt", metrics)
                stop_reason = budget_spent(cfg, state, "step") or patience_spent(cfg, state)
                if stop_requested():
                    save("last.pt", metrics)
                    raise Interrupted(f"stopped at step {state.step}; checkpoint saved in {ckpt_dir}")
                if stop_reason:
                    break
            else:
                # 4e. End of epoch.
                if epoch_padded:
                    monitor.scalars("epoch", {"padding_efficiency": epoch_tokens / epoch_padded}, state.step, state.epoch)
                epoch_tokens, epoch_padded = 0, 0
                state.epoch += 1
                state.batch_in_epoch = 0
                if not cfg.val_every_steps:
                    metrics = validate()
                stop_reason = budget_spent(cfg, state, "epoch") or patience_spent(cfg, state)

        # 5. Finish: validate unless the last step just did, and leave a final checkpoint.
        if not metrics or not just_validated(cfg, state):
            metrics = validate()
        monitor.message(f"finished: {stop_reason} at step {state.step}")
    return metrics


def just_validated(cfg: TrainerConfig, state: TrainState) -> bool:
    if cfg.val_every_steps:
        return state.step % cfg.val_every_steps == 0
    return state.batch_in_epoch == 0


def budget_spent(cfg: TrainerConfig, state: TrainState, at: str) -> str | None:
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        return f"trainer.max_steps={cfg.max_steps} reached"
    if at == "epoch" and cfg.max_epochs is not None and state.epoch >= cfg.max_epochs:
        return f"trainer.max_epochs={cfg.max_epochs} reached"
    if cfg.max_time is not None and state.elapsed >= cfg.max_time:
        return f"trainer.max_time={cfg.max_time:g}s reached"
    return None


def patience_spent(cfg: TrainerConfig, state: TrainState) -> str | None:
    patience = cfg.early_stopping.patience
    if patience is not None and state.bad_validations >= patience:
        return f"early stopping ({cfg.early_stopping.monitor} did not improve in {patience} validations)"
    return None


def clip_gradients(
    params: list[torch.nn.Parameter], max_norm: float | None, max_value: float | None, measure: bool
) -> torch.Tensor | None:
    """Clip by norm and/or value. Returns the gradient norm before any clipping when clipping by norm
    (which computes it anyway) or when `measure` asks for it, else None (no extra pass over the grads)."""
    norm = None
    if max_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    elif measure:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if max_value:
        torch.nn.utils.clip_grad_value_(params, max_value)
    return norm


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


@torch.no_grad()
def evaluate(
    task: Task,
    model: torch.nn.Module,
    dataset: SizedDataset,
    batching: BatchingConfig,
    device: torch.device,
    autocast: torch.autocast | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Sum the step's statistics over a data set (sorted by length, so little padding) and summarize."""
    sampler = BucketBatchSampler(dataset.lengths, batching.batch_size, batching.max_tokens, shuffle=False)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=task.collate, generator=torch.Generator())
    was_training = model.training
    model.eval()
    totals: Stats = {}
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        with autocast or torch.autocast(device.type, enabled=False):
            _, stats = task.step(model, to_device(batch, device))
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + (v.double() if v.is_floating_point() else v)
    model.train(was_training)
    return task.summarize(totals)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """SIGTERM or a first Ctrl-C asks the loop to finish its step, save and stop; a second Ctrl-C kills."""
    requested = False
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        nonlocal requested
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


