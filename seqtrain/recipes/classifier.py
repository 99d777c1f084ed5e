"""What the classifier recipes (sentiment, speech, and any plug-in classifier) share: the statistics their
steps return, the metrics made from them, the validation confusion matrix in TensorBoard, and an export
run in the model's place. `seqtrain evaluate` and `seqtrain sample` serve a classifier generically, one
run or an ensemble of several, through `classes`, `predict` and `prepare_inputs` (seqtrain/ensembles.py).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from seqtrain.data.collate import device_of, to_device
from seqtrain.data.sampler import BucketBatchSampler
from seqtrain.metrics import classification_metrics, confusion_image, confusion_matrix
from seqtrain.recipe import Prepared, Recipe, RunnableGraph
from seqtrain.task import Stats, evaluating

POOLED_EXAMPLES = 250  # validation examples in the projector: classes show apart, under 1% of a 3-min run


class ClassifierRecipe(Recipe):
    """A recipe whose model maps one input to one of a few classes. Its datasets have `labels`, a (N,)
    tensor of class ids (-1 = unlabelled), and its vocabulary holds the class names under "classes"."""

    def logits(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """(B, C) class logits in float32 whatever the autocast dtype (an export's: log-probabilities)."""
        raise NotImplementedError

    def prepare_inputs(self, vocab: dict, inputs: list[str]) -> Prepared:
        """Unlabelled inputs (texts, audio paths) for prediction, as one split named "inputs"."""
        raise NotImplementedError

    def pooled_and_logits(self, model: torch.nn.Module, batch: dict) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(B, D) the vector the classifier's head reads (a sentence's or an utterance's summary) and the (B, C)
        logits the head makes of it, from one forward pass. Optional: a recipe that leaves it as None shows
        only its embedding tables in the projector."""
        return None

    def classes(self, vocab: dict) -> list[str]:
        return list(vocab["classes"])

    def predict(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """(B, C) class probabilities."""
        return self.logits(model, batch).softmax(dim=-1)

    def summarize(self, totals: Stats) -> dict[str, float]:
        """Loss, accuracy, macro-F1, per-class precision/recall (classes by id: the trainer has no names)."""
        return {"loss": float(totals["loss_sum"] / totals["examples"]), **classification_metrics(totals["confusion"])}

    def resolution(self, totals: Stats) -> dict[str, float]:
        """One example of the scored split: the step by which accuracy (and, about, macro-F1) moves."""
        step = 1.0 / max(1.0, float(totals["examples"]))
        return {"accuracy": step, "macro_f1": step}

    def log_samples(self, model: torch.nn.Module, vocab: dict, writer: Any, step: int, totals: Stats) -> None:
        """The validation confusion matrix, as a picture."""
        writer.add_image(
            "confusion", confusion_image(totals["confusion"], self.classes(vocab)), step, dataformats="HWC"
        )

    @torch.no_grad()
    def log_embeddings(self, model: torch.nn.Module, prepared: Prepared, writer: Any, step: int) -> None:
        """The embedding tables, and the pooled vectors of the first validation examples labelled with their
        true and predicted class: in the projector, a classifier that works shows the classes apart. The
        examples go in batches of similar length, as validation's do, so the pass costs about one validation."""
        super().log_embeddings(model, prepared, writer, step)
        dataset, names = prepared.splits["valid"], self.classes(prepared.vocab)
        chosen = range(min(POOLED_EXAMPLES, len(dataset)))
        batches = BucketBatchSampler([dataset.lengths[i] for i in chosen], 64, shuffle=False)
        vectors, labels = [], []
        with evaluating(model):
            for indices in batches:
                batch = to_device(prepared.collate([dataset[i] for i in indices]), device_of(model))
                pooled = self.pooled_and_logits(model, batch)
                if pooled is None:  # the recipe has no summary vector to show
                    return
                vectors.append(pooled[0].float().cpu())
                predicted = pooled[1].argmax(-1).tolist()
                labels += [[names[int(t)], names[p]] for t, p in zip(batch["labels"].tolist(), predicted)]
        writer.add_embedding(
            torch.cat(vectors),
            metadata=labels,
            metadata_header=["true", "predicted"],
            tag="validation_examples",
            global_step=step,
        )

    def from_export(self, graphs: dict[str, RunnableGraph], state: dict) -> torch.nn.Module:
        return ExportedClassifier(graphs["model"])


def classifier_stats(logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> Stats:
    """The additive statistics every classifier step returns: the summed loss, the example count and
    the (C, C) confusion counts (row = true class), from which every metric is exact over any batching."""
    return {
        "loss_sum": loss_sum.detach(),
        "examples": torch.tensor(float(len(labels))),
        "confusion": confusion_matrix(labels, logits.argmax(dim=-1), logits.size(1)),
    }


class ExportedClassifier(torch.nn.Module):
    """An export in the place of a classifier: its inputs, positionally as the model takes them (None for an
    input the run does not have), go to the graph by name; it returns log-probabilities, so that `predict`'s
    softmax gives the export's probabilities back."""

    def __init__(self, graph: RunnableGraph):
        super().__init__()
        self.graph = graph

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        named = {name: value for name, value in zip(self.graph.inputs, inputs) if value is not None}
        return self.graph(**named)["probabilities"].log()
