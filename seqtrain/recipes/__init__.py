"""Recipes: one module per task saying only what differs — data, model, loss, metrics, sampling.

Every recipe module provides the names in `Recipe` below. The registry maps recipe names to seqtrain's
own modules only: a config can choose among them but never name arbitrary code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional, Protocol

import torch

REGISTRY = {
    "char_lm": "seqtrain.recipes.char_lm",
}


@dataclass
class Prepared:
    """A recipe's data, ready for the trainer: splits with `.lengths`, a collate function, and the
    vocabulary as plain data (it goes into checkpoints and vocab.json)."""

    vocab: dict
    splits: dict[str, Any]
    collate: Callable[[list], dict]
    shuffle_train: bool = True  # False when batch order carries meaning (stateful truncated BPTT)


@dataclass
class SampleOptions:
    """Every option of `seqtrain sample`; each recipe uses those that apply to it."""

    prompt: Optional[str] = None
    length: int = 500
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    text: Optional[str] = None
    input_file: Optional[str] = None


class Recipe(Protocol):
    """What a recipe module defines."""

    ModelConfig: type
    DataConfig: type
    GROUP_CHOICES: dict[str, tuple[str, ...]]  # the config-group options that belong to this recipe

    def prepare(self, data: Any, vocab: dict | None, splits: tuple[str, ...]) -> Prepared: ...

    def build_model(self, model: Any, vocab: dict) -> torch.nn.Module: ...

    def step(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def summarize(self, totals: dict[str, torch.Tensor]) -> dict[str, float]: ...

    def sample(self, model: torch.nn.Module, vocab: dict, options: SampleOptions, write: Callable[[str], None]) -> None: ...

    def log_samples(self, model: torch.nn.Module, vocab: dict, writer: Any, step: int) -> None: ...


def get(name: str) -> Recipe | ModuleType:
    return importlib.import_module(REGISTRY[name])


def description(name: str) -> str:
    return (get(name).__doc__ or "").strip().splitlines()[0]
