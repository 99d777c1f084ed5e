"""The recipe contract: what a task must say for seqtrain to train, evaluate, sample and export it.

A recipe is a subclass of `Recipe` plus its YAML files. It declares its config schemas and splits,
reads its data (`prepare`), builds its model (`build_model`), and says how the model is trained and
scored (`loss`, `summarize`); `sample` and `export_graphs` / `from_export` are optional. Everything else
(the loop, checkpoints, resume, DDP, early stopping, sweeps, tune, ensembles) is seqtrain's and the same
for every recipe. ARCHITECTURE.md walks through adding one, in seqtrain or in a package of your own
(registered through the `seqtrain.recipes` entry point group; see seqtrain/recipes/__init__.py).

Classifier recipes extend `seqtrain.recipes.classifier.ClassifierRecipe` instead, which adds what the
generic `evaluate` / `sample` and ensembles need (classes, probabilities) and the statistics they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Protocol

import torch

from seqtrain.errors import ConfigError
from seqtrain.task import Stats, Step, Task


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
    plot: Optional[str] = None  # forecast: a PNG path for the first series' forecasts
    layout: str = "long"  # forecast: how --input-file holds its series (long, rows, columns)


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


@dataclass
class EmbeddingTable:
    """A learnt table of vectors with one label per row, most frequent rows first: TensorBoard's projector
    shows it at the end of a run, and `seqtrain export --format vectors` writes it as word2vec text."""

    name: str
    vectors: torch.Tensor  # (N, D)
    labels: list[str]  # (N,)


PROJECTED_ROWS = 10_000  # rows of a table the projector gets: the most frequent


class RunnableGraph(Protocol):
    """One graph of an export, run by onnxruntime or TorchScript (seqtrain/exported.py)."""

    inputs: dict[str, Any]  # input name -> its spec, in the order the graph takes them

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]: ...


class Recipe:
    """A task seqtrain can train. Subclass it, set the class attributes, implement the methods that raise.

    `config_dir` is for recipes that live outside seqtrain: a folder holding `<name>.yaml` (the recipe's
    YAML, composing groups) and its own `model/` and `data/` group folders. Built-in recipes keep theirs in
    seqtrain's `recipes/` and `conf/<name>/`.
    """

    name: ClassVar[str]
    ModelConfig: ClassVar[type]  # a dataclass: the `model.*` keys (a model's __init__ takes plain values)
    DataConfig: ClassVar[type]  # a dataclass extending seqtrain.data.sampler.BatchingConfig: the `data.*` keys
    splits: ClassVar[tuple[str, ...]] = ("train", "valid")  # those `seqtrain evaluate RUN split=NAME` takes
    config_dir: ClassVar[Optional[Path]] = None

    # -- what every recipe says -------------------------------------------------------------------------

    def prepare(self, data: Any, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        """Read `splits` of `data`. Without `vocab`, learn the vocabulary (tokenizer, classes, ...) from the
        training split; with one (resume, evaluate, init_from), read every split through it."""
        raise NotImplementedError

    def build_model(self, model: Any, vocab: dict) -> torch.nn.Module:
        """A freshly initialised model for the `model.*` config and the vocabulary."""
        raise NotImplementedError

    def loss(self, model: Any, vocab: dict) -> Step:
        """The step the trainer calls on every batch, holding the loss settings of `model.*` (label
        smoothing, ...): (model, batch) -> (loss to minimise, additive statistics). It must run every
        forward that trains through the model it is given, which may be a DDP wrapper."""
        raise NotImplementedError

    def summarize(self, totals: Stats) -> dict[str, float]:
        """Summed statistics -> metrics (one of them named `loss`, which breaks ties in model selection)."""
        raise NotImplementedError

    # -- what a recipe may refine ------------------------------------------------------------------------

    def resolution(self, totals: Stats) -> dict[str, float]:
        """The smallest change each stepped metric can show on the scored split (see `Task.resolution`)."""
        return {}

    def sizes(self, batch: dict) -> tuple[int, int]:
        """A batch's real and padded elements, as `seqtrain.data.collate.batch_stats` counts them."""
        return batch.get("num_tokens", 0), batch.get("padded_tokens", 0)

    def log_samples(self, model: torch.nn.Module, vocab: dict, writer: Any, step: int, totals: Stats) -> None:
        """Pictures and text for TensorBoard at each validation (samples, attention, confusion)."""

    def load_pretrained(self, model: torch.nn.Module, model_cfg: Any, prepared: Prepared) -> dict[str, Any]:
        """Start a fresh model's embeddings from pretrained vectors, where `model_cfg` names a file; return each
        table's coverage (seqtrain.data.vectors.Coverage) by name. Resumed runs keep their own weights."""
        return {}

    def embeddings(self, model: torch.nn.Module, vocab: dict) -> list[EmbeddingTable]:
        """The model's input embedding tables with their tokens, for the projector and `export --format vectors`."""
        return []

    def log_embeddings(self, model: torch.nn.Module, prepared: Prepared, writer: Any, step: int) -> None:
        """The embedding tables (their most frequent rows) in TensorBoard's projector."""
        for table in self.embeddings(model, prepared.vocab):
            rows = min(PROJECTED_ROWS, len(table.labels))
            writer.add_embedding(
                table.vectors[:rows].detach().float().cpu(),
                metadata=table.labels[:rows],
                tag=table.name,
                global_step=step,
            )

    def sample(self, model: torch.nn.Module, vocab: dict, options: SampleOptions, write: Callable[[str], None]) -> None:
        raise ConfigError(f"the {self.name} recipe has no `seqtrain sample`")

    def export_graphs(self, model: torch.nn.Module, vocab: dict, format: str) -> list[Graph]:
        """The graphs `seqtrain export` writes for a format."""
        raise ConfigError(f"the {self.name} recipe cannot be exported")

    def from_export(self, graphs: dict[str, RunnableGraph], state: dict) -> torch.nn.Module:
        """A module that runs an export's graphs (each a callable of named tensors returning a dict of
        named tensors) in the place of the model, for `sample` and `evaluate`."""
        raise ConfigError(f"the {self.name} recipe cannot be exported")

    # -- what seqtrain builds from the above ---------------------------------------------------------------

    def task(self, model: torch.nn.Module, model_cfg: Any, prepared: Prepared) -> Task:
        vocab = prepared.vocab
        return Task(
            model,
            self.loss(model_cfg, vocab),
            self.summarize,
            prepared.collate,
            self.sizes,
            self.resolution,
            log_samples=lambda m, writer, step, totals: self.log_samples(m, vocab, writer, step, totals),
            log_embeddings=lambda m, writer, step: self.log_embeddings(m, prepared, writer, step),
        )

    def check_splits(self, splits: tuple[str, ...]) -> None:
        unknown = [split for split in splits if split not in self.splits]
        if unknown:
            raise ConfigError(f"split={unknown[0]} is not a split of {self.name}; valid: {', '.join(self.splits)}")

    @classmethod
    def description(cls) -> str:
        """The first line of the recipe's docstring, for `seqtrain recipes`."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
