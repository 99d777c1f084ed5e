"""The trainer's settings (`trainer.*`), checked as a whole when the config is composed.

`LoopConfig` is what the training loop itself reads (seqtrain/trainer.py); `TrainerConfig` adds how a run
is started around the loop (resume, init_from, bagging, devices), which seqtrain/runs.py reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from seqtrain.errors import ConfigError

# What each member of a bagged run trains on: its own bootstrap resample (Breiman's bagging), or the
# whole split with only its seed differing (a deep ensemble, Lakshminarayanan et al. 2017).
BAGGING_RESAMPLES = ("bootstrap", "none")


@dataclass
class EarlyStoppingConfig:
    monitor: str = "loss"  # the validation metric that selects best.pt, counts patience and drives NewBob
    mode: str = "min"  # min or max
    patience: Optional[int] = None  # validations without improvement before stopping; None = never stop early
    min_delta: float = 0.0  # an improvement must exceed this (and the metric's resolution on the split)

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ConfigError(f"trainer.early_stopping.mode must be min or max, got {self.mode!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"trainer.early_stopping.patience must be >= 1 or null, got {self.patience}")


@dataclass
class LoopConfig:
    max_epochs: Optional[int] = None  # epochs of training (a budget)
    max_steps: Optional[int] = None  # optimiser updates (a budget)
    max_time: Optional[float] = None  # seconds of training, summed over resumes
    val_every_steps: Optional[int] = None  # None = validate at the end of each epoch
    val_max_batches: Optional[int] = None  # score only the first N validation batches
    checkpoint_every_steps: Optional[int] = None  # last.pt between validations too
    grad_accum: int = 1  # micro-batches per optimiser update
    clip_grad_norm: Optional[float] = 1.0  # clip the gradients' global norm to this (null: no clipping)
    clip_grad_value: Optional[float] = None  # clip each gradient element to ±this
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    device: str = "auto"  # auto (cuda when present), cpu, cuda, cuda:1, ...
    compile: bool = False  # torch.compile the model
    seed: int = 1234  # initialisation, dropout and batch order
    ema_decay: Optional[float] = None  # validate, keep and use a moving average of the weights (e.g. 0.999)
    log_every_steps: int = 50  # a line of training metrics every N steps
    log_histograms_every: int = 0  # weight and gradient histograms every N steps; 0 = never
    log_gradient_flow_every: int = 0  # ‖∂loss/∂h_t‖ through time in every recurrent layer, every N steps; 0 = never
    log_embeddings: bool = True  # at the end of a run: embedding tables and pooled vectors in TensorBoard's projector
    scale_lr_with_world: str = "none"  # none, linear or sqrt: multiply optim.lr by the world size or its root
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self):
        if self.max_epochs is None and self.max_steps is None and self.max_time is None:
            raise ConfigError("set a budget: trainer.max_epochs, trainer.max_steps or trainer.max_time")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"trainer.precision must be fp32 or bf16, got {self.precision!r}")
        if self.grad_accum < 1 or self.log_every_steps < 1:
            raise ConfigError("trainer.grad_accum and trainer.log_every_steps must be >= 1")
        if self.log_histograms_every < 0 or self.log_gradient_flow_every < 0:
            raise ConfigError(
                "trainer.log_histograms_every and trainer.log_gradient_flow_every must be >= 0 (0 = never)"
            )
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"trainer.ema_decay must be between 0 and 1 (e.g. 0.999) or null, got {self.ema_decay}")
        if self.scale_lr_with_world not in ("none", "linear", "sqrt"):
            raise ConfigError(
                f"trainer.scale_lr_with_world must be none, linear or sqrt, got {self.scale_lr_with_world!r}"
            )


@dataclass
class TrainerConfig(LoopConfig):
    resume: Optional[str] = None  # a run dir to continue in
    init_from: Optional[str] = None  # a run dir whose weights (matching names and shapes) start a new run
    # K: K members in one run dir, averaged as an ensemble (classifier recipes); auto: members one after another,
    # each early-stopped, until trainer.max_time is spent (seqtrain/runs.py says how the budget is shared)
    bagging: Optional[str] = None
    bagging_resample: str = "bootstrap"  # bootstrap, or none: every member on the whole split, differing by seed only
    devices: int = 1  # worker processes on this machine, launched through torch.distributed.run

    def __post_init__(self):
        super().__post_init__()
        self.bagging = None if self.bagging is None else str(self.bagging)
        if self.resume and self.init_from:
            raise ConfigError("trainer.resume continues a run and trainer.init_from starts a new one; give one")
        if (
            self.bagging is not None
            and self.bagging != "auto"
            and not (self.bagging.lstrip("-").isdigit() and int(self.bagging) >= 2)
        ):
            raise ConfigError(
                f"trainer.bagging must be the number of members, at least 2, auto or null; got {self.bagging}"
            )
        if self.bagging == "auto" and self.max_time is None:
            raise ConfigError(
                "trainer.bagging=auto trains members until trainer.max_time is spent: set trainer.max_time"
            )
        if self.bagging_resample not in BAGGING_RESAMPLES:
            raise ConfigError(
                f"trainer.bagging_resample must be {' or '.join(BAGGING_RESAMPLES)}, got {self.bagging_resample!r}"
            )
        if self.bagging and self.init_from:
            raise ConfigError(
                "trainer.bagging trains its members from scratch; it does not combine with trainer.init_from"
            )
        if self.devices < 1:
            raise ConfigError(f"trainer.devices must be >= 1, got {self.devices}")

    @property
    def members(self) -> int | None:
        """trainer.bagging's number of members; None when it is off or auto (then the budget decides)."""
        return int(self.bagging) if self.bagging not in (None, "auto") else None
