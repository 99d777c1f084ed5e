"""Optimisers and learning-rate schedules, from `torch.optim` pieces chosen by config."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.optim import lr_scheduler

from seqtrain.errors import ConfigError

OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "linear", "cosine", "exponential", "step", "inverse_sqrt", "newbob")


@dataclass
class OptimConfig:
    name: str = "adam"  # sgd, adagrad, rmsprop, adam, adamw
    lr: float = 1e-3  # learning rate (after warmup, before decay)
    weight_decay: float = 0.0  # on weight matrices only (decoupled for adamw)
    l1: float = 0.0  # L1 penalty added to the loss: l1 * sum |w| over weight matrices
    momentum: float = 0.0  # sgd, rmsprop
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    alpha: float = 0.99  # rmsprop smoothing
    eps: float = 1e-8  # the optimiser's epsilon
    fused: bool = True  # sgd, adagrad, adam, adamw: PyTorch's one-kernel update (5x faster on this CPU for 17M weights)

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name={self.name!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.l1 < 0 or self.momentum < 0:
            raise ConfigError("optim.weight_decay, optim.l1 and optim.momentum must not be negative")
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ConfigError("optim.nesterov needs optim=sgd with optim.momentum > 0")


@dataclass
class SchedConfig:
    name: str = "constant"  # constant, linear, cosine, exponential, step, inverse_sqrt, newbob
    warmup_steps: int = 0  # linear warmup from ~0 to optim.lr, then the schedule below
    min_lr_ratio: float = 0.0  # linear, cosine: final LR; newbob: the LR's floor (fractions of optim.lr)
    gamma: float = 0.5  # exponential: factor per step_size steps; step: factor at each step_size
    step_size: int = 1000  # exponential and step: steps per factor gamma
    factor: float = 0.5  # newbob: LR factor when validation stops improving
    patience: int = 0  # newbob: validations in a row without improvement before annealing

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(f"sched.name={self.name!r} is unknown; valid: {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0 or self.step_size < 1 or self.patience < 0:
            raise ConfigError("sched.warmup_steps and sched.patience must be >= 0, sched.step_size >= 1")
        if not 0 < self.factor <= 1:
            raise ConfigError(f"sched.factor must be in (0, 1], got {self.factor}")


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Weight decay applies to weight matrices only, not to biases and norm gains (standard practice)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "rmsprop":  # PyTorch has no fused RMSprop
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    fused = cfg.fused or None  # False would also turn off the multi-tensor (foreach) path on GPUs
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps, fused=fused)
    optimizer = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps, fused=fused)


def l1_penalty(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Sum of absolute weights over weight matrices (biases are not sparsified)."""
    return torch.stack([p.abs().sum() for p in params if p.ndim >= 2]).sum()


class TimeBudgetFactor:
    """The LR factor of a linear or cosine schedule when `trainer.max_time` may be the budget that ends the
    run: linear warmup over steps, then a decay over the share of the time budget left after warmup, so the
    LR reaches its floor as the budget runs out on a fast machine or a slow one.

    Progress is read from the trainer's training clock at every step rather than fixed by timing a few
    steps up front: a calibration is wrong whenever the step rate changes (validation, bucketed batches
    of other lengths, a busy machine). With a step or epoch budget as well (`total_steps`), the budget
    that ends first sets the decay: the rate at the end of warmup (at least DECIDE_AFTER steps in)
    predicts when the steps would run out, and the schedule follows time only if that is after the time
    budget; until then, and from then on if not, it follows steps exactly as the step schedule does. The
    state (`elapsed`, `warmup_end`, `by_time`) is plain attributes, which LambdaLR checkpoints."""

    DECIDE_AFTER = 10  # steps: the first steps' rate includes setup and says little

    def __init__(
        self, name: str, warmup_steps: int, min_lr_ratio: float, budget_s: float, total_steps: int | None = None
    ):
        self.name, self.warmup_steps, self.min_lr_ratio, self.budget_s = name, warmup_steps, min_lr_ratio, budget_s
        self.total_steps = total_steps
        self.elapsed = 0.0  # training seconds so far, over all resumes (set by Schedule.step)
        self.warmup_end: Optional[float] = None  # training seconds when warmup ended
        self.by_time: Optional[bool] = True if total_steps is None else None  # None: not decided yet

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:  # as LinearLR(1 / (w + 1), 1, total_iters=w) in the step-based schedule
            start = 1.0 / (self.warmup_steps + 1)
            return start + (1.0 - start) * step / self.warmup_steps
        if self.warmup_end is None:
            self.warmup_end = self.elapsed
        total = self.total_steps
        if self.by_time is None and total is not None and step >= min(max(self.warmup_steps, self.DECIDE_AFTER), total):
            self.by_time = step > 0 and self.elapsed / step * total > self.budget_s
        if self.by_time or total is None:
            left = self.budget_s - self.warmup_end
            progress = 1.0 if left <= 0 else (self.elapsed - self.warmup_end) / left
        else:
            progress = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
        progress = min(1.0, max(0.0, progress))
        if self.name == "linear":
            return 1.0 + (self.min_lr_ratio - 1.0) * progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 + math.cos(math.pi * progress)) / 2


class NewBob:
    """Anneal on plateaus: multiply the LR by `factor` once `patience` + 1 validations in a row have not
    improved. What counts as improving is the trainer's one rule (seqtrain.progress.Selection), the same
    that keeps best.pt and counts early stopping's patience, so the LR follows the validation loss while
    a saturated accuracy ties. `min_lr_ratio` of each group's starting LR is a floor: without one, a long
    budget that has stopped improving halves the LR every few validations until no step moves a weight."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int, min_lr_ratio: float = 0.0):
        self.optimizer, self.factor, self.patience = optimizer, factor, patience
        # "initial_lr" is the LR before warmup, which the per-step scheduler built first records
        self.floors = [group.get("initial_lr", group["lr"]) * min_lr_ratio for group in optimizer.param_groups]
        self.bad_validations = 0

    def validated(self, improved: bool) -> None:
        self.bad_validations = 0 if improved else self.bad_validations + 1
        if self.bad_validations > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.floors):
                group["lr"] = max(group["lr"] * self.factor, floor)
            self.bad_validations = 0

    def state_dict(self) -> dict:
        return {"bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        # checkpoints before NewBob had its own rule held torch's ReduceLROnPlateau state
        self.bad_validations = state.get("bad_validations", state.get("num_bad_epochs", 0))


class Schedule:
    """A per-step LR schedule (warmup then decay) plus, for NewBob, an anneal on validation plateaus.

    The per-step part is a `torch.optim.lr_scheduler` object, so its state checkpoints with it. Linear and
    cosine decay run over `total_steps` when the run has only a step or epoch budget; with a time budget
    (`time_budget_s`) they run over the training time when that budget ends the run (TimeBudgetFactor).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: SchedConfig,
        total_steps: int | None,
        time_budget_s: float | None = None,
    ):
        self.time_factor: Optional[TimeBudgetFactor] = None
        self.on_plateau: Optional[NewBob] = None
        decay_steps = None if total_steps is None else max(1, total_steps - cfg.warmup_steps)
        if cfg.name in ("linear", "cosine") and (decay_steps is None or time_budget_s is not None):
            if time_budget_s is None:
                raise ConfigError(
                    f"sched={cfg.name} needs a known length: set trainer.max_steps, trainer.max_epochs or "
                    "trainer.max_time"
                )
            self.time_factor = TimeBudgetFactor(
                cfg.name, cfg.warmup_steps, cfg.min_lr_ratio, time_budget_s, total_steps
            )
            self.per_step: lr_scheduler.LRScheduler = lr_scheduler.LambdaLR(optimizer, self.time_factor)
            return
        main: lr_scheduler.LRScheduler
        length = decay_steps or 1  # linear and cosine reach here with a step budget only (see above)
        if cfg.name == "linear":
            main = lr_scheduler.LinearLR(optimizer, 1.0, cfg.min_lr_ratio, total_iters=length)
        elif cfg.name == "cosine":
            eta_min = [g["lr"] * cfg.min_lr_ratio for g in optimizer.param_groups][0]
            main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=length, eta_min=eta_min)
        elif cfg.name == "exponential":
            main = lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma ** (1 / cfg.step_size))
        elif cfg.name == "step":
            main = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        elif cfg.name == "inverse_sqrt":
            # Continuous with warmup: 1 at the end of warmup, then sqrt(warmup / step).
            offset = max(1, cfg.warmup_steps)
            main = lr_scheduler.LambdaLR(optimizer, lambda s: math.sqrt(offset / (offset + s)))
        else:
            main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        if cfg.warmup_steps > 0:
            warmup = lr_scheduler.LinearLR(optimizer, 1.0 / (cfg.warmup_steps + 1), 1.0, total_iters=cfg.warmup_steps)
            main = lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[cfg.warmup_steps])
        self.per_step = main
        if cfg.name == "newbob":
            self.on_plateau = NewBob(optimizer, cfg.factor, cfg.patience, cfg.min_lr_ratio)

    @property
    def reads_clock(self) -> bool:
        """Whether the LR still depends on the training clock (a time budget not yet ruled out by steps)."""
        return self.time_factor is not None and self.time_factor.by_time is not False

    def step(self, elapsed: float = 0.0) -> None:
        """After each optimiser step; `elapsed` is the run's training time so far (time budgets read it)."""
        if self.time_factor is not None:
            self.time_factor.elapsed = elapsed
        self.per_step.step()

    def validated(self, improved: bool) -> None:
        if self.on_plateau is not None:
            self.on_plateau.validated(improved)

    def state_dict(self) -> dict:
        return {
            "per_step": self.per_step.state_dict(),
            "on_plateau": None if self.on_plateau is None else self.on_plateau.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.per_step.load_state_dict(state["per_step"])
        if self.on_plateau is not None and state["on_plateau"] is not None:
            self.on_plateau.load_state_dict(state["on_plateau"])


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
