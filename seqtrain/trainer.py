"""The one training loop. It knows no recipe: it trains a `Task` (seqtrain/task.py) on two datasets.

Read `fit` first: it is the whole story, in the order things happen, and each line calls a named part
of `Loop`, which holds the run's state (model, optimiser, schedule, position, clocks) in one object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, cast

import torch
from rich.console import Console
from torch.optim import swa_utils
from torch.utils.data import Dataset

from seqtrain import __version__, checkpoint, distributed
from seqtrain.data.collate import to_device
from seqtrain.data.sampler import BatchingConfig, BucketBatchSampler
from seqtrain.errors import ConfigError, Interrupted, TrainingError
from seqtrain.evaluation import score
from seqtrain.models.rnn import onednn_off
from seqtrain.monitor import Monitor, format_metrics
from seqtrain.optim import OptimConfig, SchedConfig, Schedule, build_optimizer, l1_penalty
from seqtrain.resume import rng_state, seed_everything, set_rng_state, stop_requests
from seqtrain.rundir import RunDir
from seqtrain.task import SizedDataset, Stats, Task
from seqtrain.trainer_config import EarlyStoppingConfig, LoopConfig

OnValidation = Callable[[int, dict[str, float]], Optional[str]]  # (step, metrics) -> a reason to stop, or None


@dataclass
class Settings:
    """Everything the loop reads from the config, typed."""

    trainer: LoopConfig
    optim: OptimConfig
    sched: SchedConfig
    batching: BatchingConfig


@dataclass
class TrainState:
    """The trainer's position, saved in every checkpoint so that resume continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    elapsed: float = 0.0  # training seconds, over all resumes
    best: Optional[float] = None  # the best value of the monitored metric so far
    best_loss: Optional[float] = None  # the validation loss of the checkpoint kept as best.pt
    bad_validations: int = 0  # validations in a row that did not improve
    world_size: int = 1  # ranks that consumed `batch_in_epoch` batches each


def fit(
    task: Task,
    train_set: SizedDataset,
    valid_set: SizedDataset,
    settings: Settings,
    run_dir: Path,
    meta: dict[str, Any],
    *,
    sampler: BucketBatchSampler,
    resume_from: dict[str, Any] | None = None,
    on_validation: OnValidation | None = None,
    console: Console | None = None,
) -> dict[str, float]:
    """Train `task.model` in place and return the final validation metrics.

    `sampler` is the training sampler `preflight` returned (it ran before the run dir was made).
    `resume_from` is a checkpoint to continue exactly; the caller has checked that it is this run's.
    `on_validation(step, metrics)` hears every validation; a reason it returns stops the run there as
    early stopping would (a hyper-parameter search prunes a hopeless trial this way). `meta` (recipe,
    config, vocab) goes into every checkpoint, so that a checkpoint alone can rebuild the model. In a
    distributed run (seqtrain/distributed.py) every rank calls this; rank 0 alone writes.
    """
    loop = Loop(task, train_set, valid_set, settings, RunDir(run_dir), meta, sampler, on_validation, console)
    if resume_from is not None:
        loop.restore(resume_from)
    with loop.running():
        stop = loop.why_stop()
        while stop is None:
            for micro_batches in loop.epoch():
                loop.train_step(micro_batches)
                loop.log_and_validate_on_schedule()
                stop = loop.why_stop()
                if stop is not None:
                    break
            if stop is None:  # the epoch ran to its end
                loop.end_epoch()
                stop = loop.why_stop()
        loop.finish(stop)
    return loop.metrics


def preflight(
    task: Task, train_set: SizedDataset, valid_set: SizedDataset, settings: Settings, shuffle_train: bool
) -> BucketBatchSampler:
    """Find what is wrong with the batching, the data or the monitored metric before any file is
    written; return this rank's training sampler."""
    world, cfg, batching = distributed.current(), settings.trainer, settings.batching
    if world.size > 1 and not shuffle_train:
        raise ConfigError(
            "this data's batch order carries state (data.stateful), so it cannot be sharded: use trainer.devices=1"
        )
    sampler = BucketBatchSampler(
        train_set.lengths,
        batching.batch_size,
        batching.max_tokens,
        shuffle=shuffle_train,
        seed=cfg.seed,
        rank=world.rank,
        world_size=world.size,
        pool_batches=batching.pool_batches,
    )
    if len(sampler) == 0:
        raise ConfigError(f"the training split has fewer batches than ranks ({world.size}); each needs one")
    device = next(task.model.parameters()).device
    reported = task.summarize(score(task, task.model, valid_set, batching, device, max_batches=world.size))
    if cfg.early_stopping.monitor not in reported:
        raise ConfigError(
            f"trainer.early_stopping.monitor={cfg.early_stopping.monitor!r} is not a metric; valid: "
            f"{', '.join(reported)}"
        )
    return sampler


class Loop:
    """One run's training state and the parts `fit` calls, in the order it calls them."""

    def __init__(
        self,
        task: Task,
        train_set: SizedDataset,
        valid_set: SizedDataset,
        settings: Settings,
        run_dir: RunDir,
        meta: dict[str, Any],
        sampler: BucketBatchSampler,
        on_validation: OnValidation | None,
        console: Console | None,
    ):
        cfg = settings.trainer
        self.task, self.valid_set, self.cfg, self.settings, self.run_dir, self.meta = (
            task,
            valid_set,
            cfg,
            settings,
            run_dir,
            meta,
        )
        self.sampler, self.on_validation = sampler, on_validation
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.world = distributed.current()

        # Device, seed, model. Ranks draw different dropout masks; DDP starts them from rank 0's weights.
        self.device = pick_device(cfg.device, self.world.local_rank)
        seed_everything(cfg.seed + self.world.rank)
        self.model = task.model.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        wrapped = distributed.wrap(self.model, self.device)
        self.forward_model: Any = torch.compile(wrapped) if cfg.compile else wrapped  # a DDP wrapper has no_sync
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        self.emulated_bf16 = cfg.precision == "bf16" and not native_bf16(self.device)  # then oneDNN is off
        # With trainer.ema_decay, a moving average of the weights is what gets validated, kept and used: it
        # smooths the last updates' noise. The raw weights go on training and are saved only for resume.
        self.averaged = None
        if cfg.ema_decay is not None:
            self.averaged = swa_utils.AveragedModel(
                self.model, multi_avg_fn=debiased_ema(cfg.ema_decay), use_buffers=True
            )
        self.evaluated = self.model if self.averaged is None else self.averaged.module

        # Batches, optimiser, schedule. The loader has its own generator, so making a new iterator (each
        # epoch, or at a resume) never draws from the global RNG that dropout uses.
        self.loader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
            cast(Dataset, train_set),
            batch_sampler=sampler,
            collate_fn=task.collate,
            num_workers=settings.batching.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        steps_per_epoch = math.ceil(len(sampler) / cfg.grad_accum)
        budgets = [b for b in (cfg.max_steps, cfg.max_epochs and cfg.max_epochs * steps_per_epoch) if b]
        self.total_steps = min(budgets) if budgets else None
        self.optimizer = build_optimizer(self.params, settings.optim)
        for group in self.optimizer.param_groups:
            group["lr"] *= distributed.lr_factor(cfg.scale_lr_with_world, self.world.size)
        self.schedule = Schedule(self.optimizer, settings.sched, self.total_steps, time_budget_s=cfg.max_time)
        self.selection = Selection(cfg.early_stopping)
        self.state = TrainState(world_size=self.world.size)
        self.metrics: dict[str, float] = {}  # of the last validation
        self.asked_to_stop: str | None = None  # what on_validation answered last
        self.grad_norm: torch.Tensor | None = None  # of the last update, when measured

    def restore(self, saved: dict[str, Any]) -> None:
        """Model, optimiser, schedule, position and RNG continue where the checkpoint left them. After a
        change of world size the position is rescaled (see distributed.rescale_position)."""
        self.model.load_state_dict(saved.get("training_model", saved["model"]))
        if self.averaged is not None and "training_model" in saved:
            self.averaged.module.load_state_dict(saved["model"])
            self.averaged.n_averaged.fill_(saved["ema_updates"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.state = TrainState(**saved["trainer"])
        rng = saved.get("rng_ranks") or [saved["rng"]]
        if self.world.rank < len(rng):
            set_rng_state(rng[self.world.rank])
        if self.state.world_size != self.world.size:
            self.state.batch_in_epoch = distributed.rescale_position(
                self.state.batch_in_epoch, self.state.world_size, self.world.size
            )
            self.state.world_size = self.world.size
        self.console.print(
            f"resumed from step {self.state.step} (epoch {self.state.epoch}, batch {self.state.batch_in_epoch})"
        )

    @contextmanager
    def running(self) -> Iterator[None]:
        """Signals become stop requests, the monitor is open, and oneDNN is off when bf16 is emulated."""
        with ExitStack() as stack:
            self.stop_requested = stack.enter_context(stop_requests())
            self.monitor = stack.enter_context(
                closing(
                    Monitor(
                        self.run_dir.path, self.total_steps, self.cfg.max_time, self.console, start_step=self.state.step
                    )
                    if self.world.main
                    else Silent()
                )
            )
            if self.emulated_bf16:
                stack.enter_context(onednn_off())
                self.monitor.message(
                    "trainer.precision=bf16: this CPU has no native bf16, so it is emulated (slower than fp32)"
                )
            self.meter = Meter(self.state.elapsed)
            self.window: Stats = {}
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            yield

    def epoch(self) -> Iterator[list[dict]]:
        """The rest of the current epoch, as groups of `trainer.grad_accum` micro-batches (the last may be short)."""
        self.sampler.set_epoch(self.state.epoch, start_batch=self.state.batch_in_epoch)
        group = []
        for batch in self.loader:
            group.append(batch)
            if len(group) == self.cfg.grad_accum:
                yield group
                group = []
        if group:
            yield group

    def train_step(self, micro_batches: list[dict]) -> None:
        """One optimiser update: forward and backward on each micro-batch (DDP syncs gradients on the
        last one only), then clip, update, average and schedule."""
        state, cfg = self.state, self.cfg
        for i, batch in enumerate(micro_batches):
            batch = to_device(batch, self.device)
            last = i + 1 == len(micro_batches)
            with nullcontext() if last or self.world.size == 1 else self.forward_model.no_sync():
                with self.autocast:  # the forward only: backward runs in the dtypes autocast chose
                    loss, stats = self.task.step(self.forward_model, batch)
                if distributed.any_rank(not torch.isfinite(loss))[0]:
                    raise TrainingError(
                        f"loss became {loss.item()} at step {state.step + 1} (lr {current_lr(self.optimizer):.3g}); "
                        f"stopped, the last good checkpoint stays in {self.run_dir.checkpoints}"
                    )
                if self.settings.optim.l1 > 0:
                    loss = loss + self.settings.optim.l1 * l1_penalty(self.params)
                (loss / cfg.grad_accum).backward()
            for k, v in stats.items():
                self.window[k] = self.window.get(k, 0) + v.detach()
            self.meter.count(*self.task.sizes(batch))
            state.batch_in_epoch += 1

        state.step += 1
        self.grad_norm = clip_gradients(
            self.params, cfg.clip_grad_norm, cfg.clip_grad_value, measure=self.logging_now()
        )
        if self.grad_norm is not None and not torch.isfinite(self.grad_norm):
            raise TrainingError(
                f"gradient norm became {self.grad_norm.item()} at step {state.step}; stopped before the update, "
                f"the last good checkpoint stays in {self.run_dir.checkpoints}"
            )
        if cfg.log_histograms_every and state.step % cfg.log_histograms_every == 0:
            self.monitor.histograms(self.model, state.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        state.elapsed = self.meter.elapsed()
        if self.schedule.reads_clock:  # the LR follows the clock: every rank reads the same one
            state.elapsed = distributed.max_over_ranks(state.elapsed)
        self.schedule.step(state.elapsed)

    def logging_now(self) -> bool:
        return self.state.step % self.cfg.log_every_steps == 0

    def log_and_validate_on_schedule(self) -> None:
        """Log a window of steps; validate, or save last.pt, when their intervals come round."""
        step, cfg = self.state.step, self.cfg
        if self.logging_now():
            self.log_window()
        if cfg.val_every_steps and step % cfg.val_every_steps == 0:
            self.validate()
        elif cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0:
            self.save("last.pt")

    def log_window(self) -> None:
        """The window's statistics and token counts, summed over ranks, as metrics, throughput and LR."""
        window = distributed.sum_stats(self.window)
        tokens, padded, seconds = self.meter.window()
        assert self.grad_norm is not None  # measured on every logging step
        logged = self.task.summarize(window) | {"lr": current_lr(self.optimizer), "grad_norm": float(self.grad_norm)}
        logged["tokens_per_s"] = tokens / seconds
        if padded:
            logged["padding_efficiency"] = tokens / padded
        self.monitor.scalars("train", logged, self.state.step, self.state.epoch)
        self.monitor.update(
            self.state.step, self.state.elapsed, {k: logged[k] for k in ("loss", "lr", "tokens_per_s") if k in logged}
        )
        self.window = {}

    def validate(self) -> None:
        """Score the validation split; log it; keep best.pt by the selection rule, which also steps
        NewBob and counts early stopping's patience; save last.pt. Not counted in the window's tokens/s."""
        started = time.perf_counter()
        stats = score(
            self.task,
            self.evaluated,
            self.valid_set,
            self.settings.batching,
            self.device,
            self.autocast,
            self.cfg.val_max_batches,
        )
        self.metrics = self.task.summarize(stats)
        self.monitor.scalars("valid", self.metrics, self.state.step, self.state.epoch)
        self.monitor.message(f"validation at step {self.state.step}: {format_metrics(self.metrics)}")
        if self.task.log_samples is not None and self.world.main:
            self.task.log_samples(self.evaluated, self.monitor.writer, self.state.step, stats)
        improved = self.selection.judge(self.metrics, self.task.resolution(stats), self.state)
        self.schedule.validated(improved)
        if improved:
            self.save("best.pt")
        self.save("last.pt")
        self.meter.leave_out(time.perf_counter() - started)
        if self.on_validation is not None:
            self.asked_to_stop = self.on_validation(self.state.step, self.metrics)

    def save(self, name: str) -> None:
        """Every rank hands in its RNG state (a collective); rank 0 writes."""
        rng = distributed.gather(rng_state())
        if not self.world.main:
            return
        averaged = self.averaged
        checkpoint.save(
            {
                **self.meta,
                "seqtrain_version": __version__,
                "metrics": self.metrics,
                "model": self.evaluated.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                **(
                    {"training_model": self.model.state_dict(), "ema_updates": int(averaged.n_averaged)}
                    if averaged
                    else {}
                ),
                "trainer": asdict(self.state),
                "rng": rng[0],
                **({"rng_ranks": rng} if self.world.size > 1 else {}),
            },
            self.run_dir.checkpoint(name),
        )

    def why_stop(self) -> str | None:
        """The one place that decides whether to stop: a budget, early stopping, the on_validation
        callback, another rank, or a signal (which saves last.pt and raises Interrupted). Every rank
        agrees, since clocks and signals differ by rank."""
        cfg, state = self.cfg, self.state
        reason = budget_spent(cfg, state) or self.selection.patience_spent(state) or self.asked_to_stop
        any_reason, signalled = distributed.any_rank(reason is not None, self.stop_requested())
        if signalled:
            self.save("last.pt")
            raise Interrupted(f"stopped at step {state.step}; checkpoint saved in {self.run_dir.checkpoints}")
        return (reason or "another rank's budget") if any_reason else None

    def end_epoch(self) -> None:
        tokens, padded = self.meter.epoch()
        if padded:
            self.monitor.scalars("epoch", {"padding_efficiency": tokens / padded}, self.state.step, self.state.epoch)
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if not self.cfg.val_every_steps:
            self.validate()

    def finish(self, reason: str) -> None:
        """Validate unless the last step just did, which leaves a final checkpoint too."""
        if not self.metrics or not just_validated(self.cfg, self.state):
            self.validate()
        self.monitor.message(f"finished: {reason} at step {self.state.step}")


class Selection:
    """Which validation is best, and whether the run still improves: one rule for best.pt, NewBob and
    early stopping's patience.

    A validation improves when the monitored metric beats the best so far by more than `min_delta` and
    by more than the metric's resolution on the scored split (one example of an accuracy). Within that
    tolerance of the best the metrics are tied, and a lower validation loss breaks the tie: a small or
    easy validation split saturates an accuracy long before the model stops getting better, and the
    loss still sees that. Without it, best.pt froze at the first 100% and NewBob halved the LR at every
    validation after it. Ties are measured against the best value ever reached, so a run of one-example
    drops cannot walk the kept checkpoint downhill.
    """

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg

    def judge(self, metrics: dict[str, float], resolution: dict[str, float], state: TrainState) -> bool:
        """Whether this validation improves on the best so far; updates the best and the patience count."""
        monitor, value, loss = self.cfg.monitor, metrics[self.cfg.monitor], metrics.get("loss")
        sign = 1.0 if self.cfg.mode == "min" else -1.0
        tolerance = max(self.cfg.min_delta, resolution.get(monitor, 0.0))
        if state.best is None:
            improved = True
        else:
            gain = sign * (state.best - value)  # > 0: better than the best so far
            tie_broken = (
                monitor != "loss" and loss is not None and state.best_loss is not None and loss < state.best_loss
            )
            improved = gain > tolerance or (gain >= -tolerance and tie_broken)
        if improved:
            state.best = value if state.best is None else (min if sign > 0 else max)(state.best, value)
            state.best_loss = loss
            state.bad_validations = 0
        else:
            state.bad_validations += 1
        return improved

    def patience_spent(self, state: TrainState) -> str | None:
        patience = self.cfg.patience
        if patience is not None and state.bad_validations >= patience:
            return f"early stopping ({self.cfg.monitor} did not improve in {patience} validations)"
        return None


class Meter:
    """Throughput: real and padded elements of the current logging window and epoch, and the training
    clock, which leaves validation out of the window's seconds (tokens/s counts training only) but not
    out of the run's elapsed time (trainer.max_time counts it)."""

    def __init__(self, elapsed_before: float):
        self.elapsed_before, self.start = elapsed_before, time.perf_counter()
        self.window_start = self.start
        self.tokens = self.padded = self.epoch_tokens = self.epoch_padded = 0

    def count(self, tokens: int, padded: int) -> None:
        self.tokens += tokens
        self.padded += padded
        self.epoch_tokens += tokens
        self.epoch_padded += padded

    def elapsed(self) -> float:
        """Training seconds of the run, over all resumes."""
        return self.elapsed_before + time.perf_counter() - self.start

    def leave_out(self, seconds: float) -> None:
        self.window_start += seconds

    def window(self) -> tuple[int, int, float]:
        """(tokens, padded, seconds) of the window since the last call, summed over ranks; starts the next."""
        counts = distributed.sum_stats({"tokens": torch.tensor(self.tokens), "padded": torch.tensor(self.padded)})
        now = time.perf_counter()
        seconds, self.window_start, self.tokens, self.padded = now - self.window_start, now, 0, 0
        return int(counts["tokens"]), int(counts["padded"]), seconds

    def epoch(self) -> tuple[int, int]:
        """(tokens, padded) of this rank's epoch; starts the next."""
        counts = self.epoch_tokens, self.epoch_padded
        self.epoch_tokens = self.epoch_padded = 0
        return counts


class Silent:
    """The monitor of ranks other than 0: they log nothing (their statistics reach rank 0's)."""

    writer = None

    def scalars(self, *args: Any) -> None: ...

    def update(self, *args: Any) -> None: ...

    def message(self, text: str) -> None: ...

    def histograms(self, *args: Any) -> None: ...

    def close(self) -> None: ...


def native_bf16(device: torch.device) -> bool:
    """A CPU without AVX-512 bf16 (an AVX2 one) has no oneDNN bf16 LSTM; torch's own kernels run it there."""
    return device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is CUDA when present; a worker of a distributed run takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.current().size > 1:
        return torch.device("cuda", local_rank)
    return torch.device(name)


def just_validated(cfg: LoopConfig, state: TrainState) -> bool:
    if cfg.val_every_steps:
        return state.step % cfg.val_every_steps == 0
    return state.batch_in_epoch == 0


def budget_spent(cfg: LoopConfig, state: TrainState) -> str | None:
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        return f"trainer.max_steps={cfg.max_steps} reached"
    if cfg.max_epochs is not None and state.epoch >= cfg.max_epochs:
        return f"trainer.max_epochs={cfg.max_epochs} reached"
    if cfg.max_time is not None and state.elapsed >= cfg.max_time:
        return f"trainer.max_time={cfg.max_time:g}s reached"
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


def debiased_ema(decay: float) -> Callable:
    """An exponential moving average of the weights without the start's bias, as Adam corrects its
    moments: after t updates, update s weighs decay^(t-s), normalised by 1 - decay^t. Torch's own EMA
    starts from the first weights and keeps decay^t of them, 13.5% after 2,000 steps at 0.999, so in a
    run of a few thousand steps the near-random start lingers in what is validated and kept. Debiased,
    the average is the plain mean of the weights so far while t is small against 1 / (1 - decay), and
    becomes the EMA after that. `num_averaged` is the number of updates before this one."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        t = int(num_averaged) + 1
        keep = decay * (1 - decay ** (t - 1)) / (1 - decay**t)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - keep)
        else:  # counters such as batch norm's num_batches_tracked: an average means nothing
            torch._foreach_copy_(averaged, current)

    return update
