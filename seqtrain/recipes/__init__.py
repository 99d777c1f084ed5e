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
    "sentiment": "seqtrain.recipes.sentiment",
    "seq2seq": "seqtrain.recipes.seq2seq",
    "speech": "seqtrain.recipes.speech",
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
    beam: int = 1  # seq2seq: beam size, 1 = greedy
    plot_attention: Optional[str] = None  # seq2seq: a PNG path for the --text input's alignment
    audio: Optional[str] = None


@dataclass
class Graph:
    """One computation `seqtrain export` writes (seqtrain/export.py): a module of tensors in, tensors out,
    and example inputs to trace it with. The examples hold rows of different lengths, so that tracing
    records the packed path of a recurrent stack, which serves any lengths. Graphs of one name are
    chained into one file, the outputs of each feeding the next (the speech front end, see export.py)."""

    name: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]  # in the order of module.forward's arguments
    outputs: list[str]
    axes: dict[str, dict[int, str]]  # the dynamic axes of each input and output, by label ("batch", "time")
    dynamo: bool = False  # ONNX: export with torch.export (the FFT) instead of the TorchScript exporter


class Recipe(Protocol):
    """What a recipe module defines."""

    ModelConfig: type
    DataConfig: type

    def prepare(self, data: Any, vocab: dict | None, splits: tuple[str, ...]) -> Prepared: ...

    def build_model(self, model: Any, vocab: dict) -> torch.nn.Module: ...

    def step(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def summarize(self, totals: dict[str, torch.Tensor]) -> dict[str, float]: ...

    def sample(self, model: torch.nn.Module, vocab: dict, options: SampleOptions, write: Callable[[str], None]) -> None: ...

    def log_samples(self, model: torch.nn.Module, vocab: dict, writer: Any, step: int) -> None: ...

    # `seqtrain export`: the graphs to write for a format, and a module that runs them back in place of
    # the model (`graphs` maps each name to a callable of named tensors, returning a dict of named tensors)
    def export_graphs(self, model: torch.nn.Module, vocab: dict, format: str) -> list[Graph]: ...

    def from_export(self, graphs: dict[str, Callable[..., dict[str, torch.Tensor]]], state: dict) -> torch.nn.Module: ...


class Classifier(Protocol):
    """What a classifier recipe defines instead of `sample`, so that `seqtrain sample` and `seqtrain
    evaluate` serve it generically, for one run or an ensemble averaging several runs' probabilities.

    Its datasets have `labels`, a (N,) tensor of class ids (-1 = unlabelled).
    """

    def classes(self, vocab: dict) -> list[str]: ...

    def predict(self, model: torch.nn.Module, batch: dict) -> torch.Tensor: ...  # (B, C) class probabilities

    def prepare_inputs(self, vocab: dict, lines: list[str]) -> Prepared: ...  # one split, "inputs", unlabelled


def is_classifier(module: Any) -> bool:
    return hasattr(module, "predict")


def get(name: str) -> Recipe | ModuleType:
    return importlib.import_module(REGISTRY[name])


def description(name: str) -> str:
    return (get(name).__doc__ or "").strip().splitlines()[0]
