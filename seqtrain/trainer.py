"""The one training loop. It knows no recipe: it trains a `Task` (seqtrain/task.py) on two datasets.

Read `fit` first: it is the whole story, in the order things happen, and each line calls a named part
of `Loop`, which holds the run's state (model, optimiser, schedule, position, clocks) in one object.
"""

from __future__ import annotations

import math
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
from seqtrain.models.gradient_flow import gradient_flow
from seqtrain.models.rnn import RecurrentStack, onednn_off
from seqtrain.monitor import Monitor, Silent, format_metrics
from seqtrain.optim import (
    OptimConfig,
    SchedConfig,
    Schedule,
    build_optimizer,
    clip_gradients,
    current_lr,
    debiased_ema,
    l1_penalty,
)
from seqtrain.progress import Meter, Selection, TrainState, budget_spent, just_validated
from seqtrain.resume import rng_state, seed_everything, set_rng_state, stop_requests
from seqtrain.rundir import RunDir
from seqtrain.task import SizedDataset, Stats, Task
from seqtrain.trainer_config import LoopConfig

OnValidation = Callable[[int, dict[str, float]], Optional[str]]  # (step, metrics) -> a reason to stop, or None


@dataclass
class Settings:
    """Everything the loop reads from the config, typed."""

    trainer: LoopConfig
    optim: OptimConfig
    sched: SchedConfig
    batching: BatchingConfig


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
    if cfg.log_gradient_flow_every and not any(isinstance(m, RecurrentStack) for m in task.model.modules()):
        raise ConfigError("trainer.log_gradient_flow_every measures recurrent layers, and this model has none")
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
        if cfg.log_gradient_flow_every and state.step % cfg.log_gradient_flow_every == 0 and self.world.main:
            # one more forward and backward of the last micro-batch, step by step, in eval mode (no effect on training)
            flow = gradient_flow(self.model, lambda model: self.task.step(model, batch)[0])
            self.monitor.gradient_flow(flow, state.step)
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
        with self.meter.left_out():
            batching, step = self.settings.batching, self.state.step
            stats = score(
                self.task,
                self.evaluated,
                self.valid_set,
                batching,
                self.device,
                self.autocast,
                self.cfg.val_max_batches,
            )
            self.metrics = self.task.summarize(stats)
            self.monitor.scalars("valid", self.metrics, step, self.state.epoch)
            self.monitor.message(f"validation at step {step}: {format_metrics(self.metrics)}")
            if self.task.log_samples is not None and self.world.main:
                self.task.log_samples(self.evaluated, self.monitor.writer, step, stats)
            improved = self.selection.judge(self.metrics, self.task.resolution(stats), self.state)
            self.schedule.validated(improved)
            if improved:
                self.save("best.pt")
            self.save("last.pt")
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
        if self.cfg.log_embeddings and self.task.log_embeddings is not None and self.world.main:
            self.task.log_embeddings(self.evaluated, self.monitor.writer, self.state.step)
        self.monitor.message(f"finished: {reason} at step {self.state.step}")


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
