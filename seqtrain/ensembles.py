"""Classifier runs, alone or as an ensemble: `seqtrain evaluate` and `seqtrain sample` for any recipe
that defines `recipes.Classifier`, from class probabilities. Several runs given together form an
ensemble whose probabilities are averaged (the lectures' bagging); each run reads the data through
its own vocabulary, so runs with different tokenizers can still be averaged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seqtrain.data.collate import device_of, to_device
from seqtrain.data.sampler import BatchingConfig, BucketBatchSampler
from seqtrain.data.text import iter_text
from seqtrain.errors import ConfigError, DataError
from seqtrain.metrics import classification_metrics, confusion_matrix
from seqtrain.recipe import SampleOptions
from seqtrain.recipes.classifier import ClassifierRecipe
from seqtrain.task import evaluating

Member = tuple[ClassifierRecipe, torch.nn.Module, dict]  # (recipe, model, checkpoint), as rundir.load_model returns


def evaluate(
    run_dirs: list[Path], members: list[Member], data: Any, split: str, device: torch.device
) -> dict[str, Any]:
    """Each run's report on `split` of `data`; for several runs, also their ensemble's."""
    recipe = members[0][0]
    names = shared_classes(run_dirs, members)
    reports, total = [], 0
    for run_dir, (_, model, state) in zip(run_dirs, members):
        prepared = recipe.prepare(data, state["vocab"], (split,))  # each run reads the data its own way
        dataset = prepared.splits[split]
        probabilities = class_probabilities(recipe, model.to(device), dataset, prepared.collate, data)
        reports.append({"run_dir": str(run_dir), **classifier_report(probabilities, dataset.labels, names)})
        total = total + probabilities
    if len(reports) == 1:
        return reports[0]
    return {"ensemble": classifier_report(total / len(reports), dataset.labels, names), "members": reports}


def predict(paths: list[Path], members: list[Member], options: SampleOptions, write: Callable[[str], None]) -> None:
    """One JSON line per input: the label and the class probabilities, averaged over the members."""
    recipe = members[0][0]
    names = shared_classes(paths, members)
    lines = classifier_inputs(options)
    total = 0
    for _, model, state in members:
        prepared = recipe.prepare_inputs(state["vocab"], lines)
        total = total + class_probabilities(
            recipe, model, prepared.splits["inputs"], prepared.collate, BatchingConfig(batch_size=64)
        )
    for line, probabilities in zip(lines, total / len(members)):
        label = names[int(probabilities.argmax())]
        rounded = {name: round(float(p), 4) for name, p in zip(names, probabilities)}
        write(json.dumps({"audio" if options.audio else "text": line, "label": label, "probabilities": rounded}) + "\n")


def shared_classes(paths: list[Path], members: list[Member]) -> list[str]:
    """The class names every member predicts, in the same order: averaging needs it."""
    recipe, _, first = members[0]
    names = recipe.classes(first["vocab"])
    for path, (_, _, state) in zip(paths, members):
        if state["recipe"] != first["recipe"]:
            raise ConfigError(
                f"{path} is a run of recipe {state['recipe']}, not {first['recipe']}; an ensemble's runs share one "
                "recipe"
            )
        if recipe.classes(state["vocab"]) != names:
            raise ConfigError(
                f"{path} predicts {recipe.classes(state['vocab'])}, not {names}; an ensemble's runs share their classes"
            )
    return names


def classifier_inputs(options: SampleOptions) -> list[str]:
    """The text of --text, the file of --audio, or the non-blank lines of --input-file."""
    given = [o for o in (options.text, options.audio, options.input_file) if o is not None]
    if options.prompt is not None or len(given) != 1:
        raise ConfigError(
            "a classifier predicts from --text TEXT (--audio FILE for speech) or --input-file FILE (one of them, no "
            "--prompt)"
        )
    if options.input_file is None:
        return given
    lines = [line.strip() for line in "".join(iter_text(Path(options.input_file))).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{options.input_file} has no text")
    return lines


@torch.no_grad()
def class_probabilities(
    recipe: ClassifierRecipe, model: torch.nn.Module, dataset: Any, collate: Callable, batching: BatchingConfig
) -> torch.Tensor:
    """(N, C) class probabilities in the dataset's order (batches go by length, with little padding)."""
    device = device_of(model)
    sampler = BucketBatchSampler(dataset.lengths, batching.batch_size, batching.max_tokens, shuffle=False)
    with evaluating(model):
        parts = [
            (indices, recipe.predict(model, to_device(collate([dataset[i] for i in indices]), device)).cpu())
            for indices in sampler
        ]
    probabilities = torch.empty(len(dataset), parts[0][1].size(1))
    for indices, part in parts:
        probabilities[indices] = part
    return probabilities


def classifier_report(probabilities: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall, NLL (nats, no label smoothing) and the confusion matrix."""
    confusion = confusion_matrix(labels, probabilities.argmax(dim=-1), len(names))  # (C, C), row = true class
    nll = -probabilities.gather(1, labels[:, None]).clamp(min=1e-12).log().mean()
    return {
        **classification_metrics(confusion, names),
        "nll": float(nll),
        "examples": len(labels),
        "classes": names,
        "confusion_matrix": confusion.tolist(),
    }
