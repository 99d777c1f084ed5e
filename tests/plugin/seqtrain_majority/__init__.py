"""A seqtrain recipe in a package of its own: strings of 0s and 1s, labelled by whether most are 1s.

It is what ARCHITECTURE.md's "adding a recipe" asks for, and nothing more: config dataclasses, a
`ClassifierRecipe` subclass (so that `evaluate`, `sample`, ensembles and bagging work generically), its
YAML files under conf/, and an entry point in pyproject.toml.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from seqtrain.data.collate import batch_stats, pad
from seqtrain.data.sampler import BatchingConfig
from seqtrain.errors import DataError
from seqtrain.models.rnn import RecurrentStack
from seqtrain.recipe import Graph, Prepared
from seqtrain.recipes.classifier import ClassifierRecipe, classifier_stats

CLASSES = ["mostly0", "mostly1"]


@dataclass
class ModelConfig:
    hidden_size: int = 16


@dataclass
class DataConfig(BatchingConfig):
    n_train: int = 800
    n_valid: int = 200
    max_len: int = 12
    seed: int = 0


class Bits(torch.utils.data.Dataset):
    def __init__(self, strings: list[str], labels: list[int]):
        self.ids = [torch.tensor([1 + int(c) for c in s]) for s in strings]  # 0 is padding
        self.labels = torch.tensor(labels)
        self.lengths = [len(s) for s in strings]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.ids[i], int(self.labels[i])


def collate(items: list[tuple[torch.Tensor, int]]) -> dict:
    tokens, lengths = pad([ids for ids, _ in items])
    return {
        "tokens": tokens,
        "lengths": lengths,
        "labels": torch.tensor([label for _, label in items]),
        **batch_stats(lengths),
    }


class Voter(torch.nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(3, 8, padding_idx=0)
        self.rnn = RecurrentStack("gru", 8, hidden_size)
        self.head = torch.nn.Linear(hidden_size, len(CLASSES))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self.embedding(tokens), lengths)  # (B, T, H), zeros past each length
        return self.head(states.sum(1) / lengths[:, None].to(states))


class Probabilities(torch.nn.Module):
    def __init__(self, model: Voter):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, lengths).softmax(-1)


def step(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits, labels = model(batch["tokens"], batch["lengths"]).float(), batch["labels"]
    loss_sum = F.cross_entropy(logits, labels, reduction="sum")
    return loss_sum / len(labels), classifier_stats(logits, labels, loss_sum)


class Majority(ClassifierRecipe):
    """Is a bit string mostly ones? A toy recipe from a package of its own."""

    name = "majority"
    ModelConfig = ModelConfig
    DataConfig = DataConfig
    config_dir = Path(__file__).parent / "conf"

    def prepare(self, data: DataConfig, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        self.check_splits(splits)
        rng = random.Random(data.seed)
        sets = {}
        for split in splits:
            n = data.n_train if split == "train" else data.n_valid
            strings = [
                "".join(rng.choice("01") for _ in range(rng.randrange(1, data.max_len + 1, 2))) for _ in range(n)
            ]
            sets[split] = Bits(strings, [int(s.count("1") > len(s) / 2) for s in strings])
        return Prepared(vocab or {"classes": CLASSES}, sets, collate)

    def prepare_inputs(self, vocab: dict, inputs: list[str]) -> Prepared:
        bad = next((s for s in inputs if not s or set(s) - {"0", "1"}), None)
        if bad is not None:
            raise DataError(f"{bad!r} is not a string of 0s and 1s")
        return Prepared(vocab, {"inputs": Bits(inputs, [-1] * len(inputs))}, collate)

    def build_model(self, model: ModelConfig, vocab: dict) -> Voter:
        return Voter(model.hidden_size)

    def loss(self, model: ModelConfig, vocab: dict):
        return step

    def logits(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return model(batch["tokens"], batch["lengths"]).float()

    def export_graphs(self, model: Voter, vocab: dict, format: str) -> list[Graph]:
        lengths = torch.tensor([5, 2, 4])
        tokens = torch.randint(1, 3, (3, 5)) * (torch.arange(5)[None] < lengths[:, None])
        axes = {"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "probabilities": {0: "batch"}}
        return [Graph("model", Probabilities(model), {"tokens": tokens, "lengths": lengths}, ["probabilities"], axes)]
