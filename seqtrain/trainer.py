"""The one training loop. It knows no recipe: a recipe hands it a `Task` (a model, a step function
that returns the loss and additive statistics, and a summary of those statistics into metrics).

Read `fit` top to bottom; its numbered sections are the whole story.
"""

from __future__ import annotations

import math
import time
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import torch
from rich.console import Console
from torch.optim import swa_utils

from seqtrain import __version__, checkpoint, distributed
from seqtrain.data.collate import to_device
from seqtrain.data.sampler import BatchingConfig, BucketBatchSampler
from seqtrain.errors import ConfigError, Interrupted, TrainingError
from seqtrain.evaluation import score
from seqtrain.models.rnn import onednn_off
from seqtrain.monitor import Monitor, format_metrics
from seqtrain.optim import OptimConfig, SchedConfig, Schedule, build_optimizer, l1_penalty
from seqtrain.resume import rng_state, seed_everything, set_rng_state, stop_requests
from seqtrain.trainer_config import EarlyStoppingConfig, TrainerConfig

__all__ = ["EarlyStoppingConfig", "Task", "TrainerConfig", "TrainState", "fit", "preflight", "score", "seed_everything"]

Stats = dict[str, torch.Tensor]
OnValidation = Callable[[int, dict[str, float]], Optional[str]]  # (step, metrics) -> a reason to stop, or None


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
    # (model, tensorboard writer, step, summed validation stats): pictures and text beyond the scalars
    log_samples: Optional[Callable[[torch.nn.Module, Any, int, Stats], None]] = None


@dataclass
class TrainState:
    """The trainer's position, saved in every checkpoint so that resume continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    elapsed: float = 0.0  # training seconds, over all resumes
    best: Optional[float] = None
    bad_validations: int = 0
    world_size: int = 1  # ranks that consumed `batch_in_epoch` batches each


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


def preflight(task: Task, train_set: SizedDataset, valid_set: SizedDataset, cfg: TrainerConfig,
              batching: BatchingConfig, shuffle_train: bool) -> BucketBatchSampler:
    """Find what is wrong with the batching, the data or the monitored metric before any file is
    written; return this rank's training sampler."""
    world = distributed.current()
    if world.size > 1 and not shuffle_train:
        raise ConfigError("this data's batch order carries state (data.stateful), so it cannot be sharded: use trainer.devices=1")
    sampler = BucketBatchSampler(
        train_set.lengths, batching.batch_size, batching.max_tokens, shuffle=shuffle_train,
        seed=cfg.seed, rank=world.rank, world_size=world.size, pool_batches=batching.pool_batches,
    )
    if len(sampler) == 0:
        raise ConfigError(f"the training split has fewer batches than ranks ({world.size}); each needs one")
    device = next(task.model.parameters()).device
    reported = task.summarize(score(task, task.model, valid_set, batching, device, max_batches=world.size))
    if cfg.early_stopping.monitor not in reported:
        raise ConfigError(
            f"trainer.early_stopping.monitor={cfg.early_stopping.monitor!r} is not a metric; valid: {', '.join(reported)}"
        )
    return sampler


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
    sampler: BucketBatchSampler | None = None,
    on_validation: OnValidation | None = None,
) -> dict[str, float]:
    """Train `task.model` in place and return the final validation metrics.

    `sampler` is what `preflight` returned when the caller already ran it (before making the run dir);
    without it, `fit` runs the preflight checks itself.

    `on_validation(step, metrics)` hears every validation; a reason it returns stops the run there as
    early stopping would (a hyper-parameter search prunes a hopeless trial this way).

    `meta` (recipe, config, vocab) goes into every checkpoint so that a checkpoint alone can rebuild
    the model. Checkpoints go to run_dir/checkpoints; TensorBoard events and metrics.jsonl to run_dir.
    In a distributed run (see `seqtrain.distributed`) every rank calls this; rank 0 alone writes.
    """
    console = console or Console(stderr=True, soft_wrap=True)
    world = distributed.current()

    # 1. Device, seed, model. Ranks draw different dropout masks; DDP starts them from rank 0's weights.
    device = pick_device(cfg.device, world.local_rank)
    seed_everything(cfg.seed + world.rank)
    model = task.model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    forward_model = distributed.wrap(model, device)
    forward_model = torch.compile(forward_model) if cfg.compile else forward_model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    emulated_bf16 = cfg.precision == "bf16" and not native_bf16(device)  # then training runs with oneDNN off
    # With trainer.ema_decay, an exponential moving average of the weights is what gets validated, kept
    # and used: it smooths the last updates' noise, which on small data sets moves the score from one
    # validation to the next. The raw weights go on training and are saved only for resume.
    averaged = None
    if cfg.ema_decay is not None:
        averaged = swa_utils.AveragedModel(model, multi_avg_fn=debiased_ema(cfg.ema_decay), use_buffers=True)
    evaluated = model if averaged is None else averaged.module

    # 2. Batches, optimiser, schedule. The loader gets its own generator so that making a new iterator
    #    (at each epoch, or at a resume) never draws from the global RNG that dropout uses.
    if sampler is None:
        sampler = preflight(task, train_set, valid_set, cfg, batching, shuffle_train)
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, collate_fn=task.collate,
        num_workers=batching.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
    )
    steps_per_epoch = math.ceil(len(sampler) / cfg.grad_accum)
    budgets = [b for b in (cfg.max_steps, cfg.max_epochs and cfg.max_epochs * steps_per_epoch) if b]
    total_steps = min(budgets) if budgets else None
    optimizer = build_optimizer(params, optim_cfg)
    for group in optimizer.param_groups:
        group["lr"] *= distributed.lr_factor(cfg.scale_lr_with_world, world.size)
    schedule = Schedule(optimizer, sched_cfg, total_steps, cfg.early_stopping.mode, time_budget_s=cfg.max_time)
    state = TrainState(world_size=world.size)
    ckpt_dir = run_dir / "checkpoints"

    # 3. Resume: model, optimiser, schedule, position and RNG continue where the checkpoint left them.
    #    After a change of world size the position is rescaled (see distributed.rescale_position).
    if cfg.resume:
        saved = checkpoint.load(checkpoint.find(Path(cfg.resume), prefer="last"), recipe=meta["recipe"])
        checkpoint.check_architecture(saved["config"]["model"], meta["config"]["model"])
        model.load_state_dict(saved.get("training_model", saved["model"]))
        if averaged is not None and "training_model" in saved:
            averaged.module.load_state_dict(saved["model"])
            averaged.n_averaged.fill_(saved["ema_updates"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = TrainState(**saved["trainer"])
        rng = saved.get("rng_ranks") or [saved["rng"]]
        if world.rank < len(rng):
            set_rng_state(rng[world.rank])
        if state.world_size != world.size:
            state.batch_in_epoch = distributed.rescale_position(state.batch_in_epoch, state.world_size, world.size)
            state.world_size = world.size
        console.print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")

    def save(name: str, metrics: dict[str, float]) -> None:
        """Every rank hands in its RNG state (a collective); rank 0 writes."""
        rng = distributed.gather(rng_state())
        if world.main:
            checkpoint.save(
                {
                    **meta, "seqtrain_version": __version__, "metrics": metrics,
                    "model": evaluated.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    **({"training_model": model.state_dict(), "ema_updates": int(averaged.n_averaged)} if averaged else {}),
                    "trainer": asdict(state), "rng": rng[0], **({"rng_ranks": rng} if world.size > 1 else {}),
                },
                ckpt_dir / name,
            )

    def validate() -> dict[str, float]:
        """Validate, log, step NewBob, keep the best checkpoint, count validations without improvement.
        Its time is left out of the current log window, whose tokens/s counts training only."""
        nonlocal window_start, asked_to_stop
        started = time.perf_counter()
        stats = score(task, evaluated, valid_set, batching, device, autocast, cfg.val_max_batches)
        metrics = task.summarize(stats)
        monitor.scalars("valid", metrics, state.step, state.epoch)
        monitor.message(f"validation at step {state.step}: {format_metrics(metrics)}")
        if task.log_samples is not None and world.main:
            task.log_samples(evaluated, monitor.writer, state.step, stats)
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
        window_start += time.perf_counter() - started
        if on_validation is not None:
            asked_to_stop = on_validation(state.step, metrics)
        return metrics

    def stopping(reason: str | None) -> tuple[str | None, bool]:
        """(why to stop, whether a signal asked) as every rank agrees: clocks and signals differ by rank."""
        any_reason, signalled = distributed.any_rank(reason is not None, stop_requested())
        return (reason or "another rank's budget" if any_reason else None), signalled

    # 4. The loop. A step is one optimiser update over `grad_accum` micro-batches.
    monitor = Monitor(run_dir, total_steps, cfg.max_time, console, start_step=state.step) if world.main else Silent()
    metrics: dict[str, float] = {}
    asked_to_stop: str | None = None  # what on_validation answered last
    window: Stats = {}
    window_start, window_tokens, window_padded = time.perf_counter(), 0, 0
    epoch_tokens, epoch_padded = 0, 0
    elapsed_before, fit_start = state.elapsed, time.perf_counter()
    if emulated_bf16:
        monitor.message("trainer.precision=bf16: this CPU has no native bf16, so it is emulated (slower than fp32)")
    with stop_requests() as stop_requested, closing(monitor), onednn_off() if emulated_bf16 else nullcontext():
        stop_reason, _ = stopping(budget_spent(cfg, state, "epoch") or patience_spent(cfg, state))
        model.train()
        optimizer.zero_grad(set_to_none=True)
        while stop_reason is None:
            sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
            epoch_batches = len(sampler)
            micro = 0
            for batch in loader:
                # 4a. Forward and backward on one micro-batch; DDP syncs gradients on the last one only.
                batch = to_device(batch, device)
                last_micro = micro + 1 == cfg.grad_accum or state.batch_in_epoch + 1 == epoch_batches
                with nullcontext() if last_micro or world.size == 1 else forward_model.no_sync():
                    with autocast:  # the forward only: backward runs in the dtypes autocast chose
                        loss, stats = task.step(forward_model, batch)
                    if distributed.any_rank(not torch.isfinite(loss))[0]:
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
                if not last_micro:
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
                if averaged is not None:
                    averaged.update_parameters(model)
                micro = 0
                now = time.perf_counter()
                state.elapsed = elapsed_before + now - fit_start
                if schedule.reads_clock:  # the LR follows the clock: every rank reads the same one
                    state.elapsed = distributed.max_over_ranks(state.elapsed)
                schedule.step(state.elapsed)

                # 4c. Log a window of steps, its statistics and token counts summed over ranks.
                if logging_now:
                    seconds = now - window_start
                    counts = {"tokens": torch.tensor(window_tokens), "padded": torch.tensor(window_padded)}
                    window, counts = distributed.sum_stats(window), distributed.sum_stats(counts)
                    logged = task.summarize(window) | {"lr": current_lr(optimizer), "grad_norm": float(grad_norm)}
                    logged["tokens_per_s"] = int(counts["tokens"]) / seconds
                    if counts["padded"]:
                        logged["padding_efficiency"] = int(counts["tokens"]) / int(counts["padded"])
                    monitor.scalars("train", logged, state.step, state.epoch)
                    monitor.update(state.step, state.elapsed, {k: logged[k] for k in ("loss", "lr", "tokens_per_s") if k in logged})
                    window, window_tokens, window_padded = {}, 0, 0
                    window_start = time.perf_counter()

                # 4d. Validate and checkpoint on schedule; stop on a budget, early stopping or a signal.
                if cfg.val_every_steps and state.step % cfg.val_every_steps == 0:
                    metrics = validate()
                elif cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0:
                    save("last.pt", metrics)
                stop_reason, signalled = stopping(budget_spent(cfg, state, "step") or patience_spent(cfg, state) or asked_to_stop)
                if signalled:
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
                stop_reason, _ = stopping(budget_spent(cfg, state, "epoch") or patience_spent(cfg, state) or asked_to_stop)

        # 5. Finish: validate unless the last step just did, and leave a final checkpoint.
        if not metrics or not just_validated(cfg, state):
            metrics = validate()
        monitor.message(f"finished: {stop_reason} at step {state.step}")
    return metrics


class Silent:
    """The monitor of ranks other than 0: they log nothing (their statistics reach rank 0's)."""

    writer = None

    def scalars(self, *args: Any) -> None: ...

    def update(self, *args: Any) -> None: ...

    def message(self, text: str) -> None: ...

    def histograms(self, *args: Any) -> None: ...

    def close(self) -> None: ...


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
