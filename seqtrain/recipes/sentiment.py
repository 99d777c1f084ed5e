"""Sentence sentiment (many-to-one): read a whole text, predict one label; any number of classes.

What differs from other recipes: labelled texts (generated, SST-2, any TSV/CSV, folder per class), a
word or sentencepiece tokenizer learnt from the training split, and a cross-entropy loss with label
smoothing, class weights and optional sentence mixup. The vocabulary saved with a run holds the
tokenizer and the class names, so evaluation data and `seqtrain sample` inputs are read exactly as
training was. As a classifier recipe it provides `classes`, `predict` and `prepare_inputs`, which
`seqtrain sample` and `seqtrain evaluate` use for one run or an ensemble of several.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from seqtrain.data.collate import batch_stats, device_of, pad, to_device
from seqtrain.data.download import cache_dir
from seqtrain.data.sampler import BatchingConfig
from seqtrain.data.subwords import ngram_buckets, pad_buckets
from seqtrain.data.synthetic_sentiment import make_splits
from seqtrain.data.tables import Table, class_names, download_sst2, read_folders, read_sst2, read_table
from seqtrain.data.tokenizers import KINDS, PAD_ID, SP_MODEL_TYPES, build_tokenizer, tokenizer_from_dict
from seqtrain.data.vectors import Coverage
from seqtrain.errors import ConfigError, DataError, check_choices
from seqtrain.models.classifier import POOLINGS, SequenceClassifier
from seqtrain.models.init import RECURRENT_SCHEMES, SCHEMES, initialize
from seqtrain.models.pretrained import start_from_vectors
from seqtrain.models.rnn import CELLS, weight_drop_problem
from seqtrain.recipe import EmbeddingTable, Graph, Prepared
from seqtrain.recipes.classifier import ClassifierRecipe, classifier_stats
from seqtrain.task import evaluating

SOURCES = ("synthetic", "sst2", "tsv", "folder")
CLASS_WEIGHTS = ("none", "balanced")

# Sentences whose predictions go to TensorBoard at each validation: negation, contrast, intensity.
PROBES = (
    "not bad at all , actually quite moving",
    "the film is dull at first , but brilliant in the end",
    "the story is very dull and slightly funny",
    "it 's a charming and often affecting journey .",
)


@dataclass
class ModelConfig:
    cell: str = "lstm"  # rnn_tanh, rnn_relu, gru, lstm
    embedding_dim: int = 300  # word vector size
    hidden_size: int = 256  # per direction
    num_layers: int = 2  # stacked recurrent layers
    bidirectional: bool = True  # read each text both ways
    pooling: str = "attention"  # last, mean, max, attention
    attention_size: int = 128  # pooling=attention: the scorer's hidden size
    mlp_hidden: int = 0  # 0 = a linear head
    dropout: float = 0.5  # between recurrent layers and before the head
    embedding_dropout: float = 0.1  # drops whole words
    weight_drop: float = 0.0  # DropConnect on the recurrent (hidden-to-hidden) weights; rnn, gru and lstm
    init: str = "xavier"  # default, xavier, kaiming
    recurrent_init: str = "orthogonal"  # default, orthogonal, xavier (non-default also sets LSTM forget biases to 1)
    # The loss's settings (the recipe's loss reads them; the model never does)
    label_smoothing: float = 0.1
    class_weights: str = "none"  # none, or balanced: each class weighs n / (classes * its count)
    mixup_alpha: float = 0.0  # > 0: train on blends of two sentences' pooled vectors, weight ~ Beta(alpha, alpha)
    # Transfer learning: start the word vectors from a word2vec, GloVe or fastText .vec file (its dimension is
    # model.embedding_dim); freeze_embeddings keeps them as they are (Kim's static, against non-static)
    pretrained_embeddings: Optional[str] = None
    freeze_embeddings: bool = False  # keep the pretrained vectors as they are (Kim's static)

    def __post_init__(self):
        check_choices(
            "model",
            {
                "cell": (self.cell, CELLS),
                "pooling": (self.pooling, POOLINGS),
                "init": (self.init, SCHEMES),
                "recurrent_init": (self.recurrent_init, RECURRENT_SCHEMES),
                "class_weights": (self.class_weights, CLASS_WEIGHTS),
            },
        )
        if not (0 <= self.dropout < 1 and 0 <= self.embedding_dropout < 1 and 0 <= self.label_smoothing < 1):
            raise ConfigError("model.dropout, model.embedding_dropout and model.label_smoothing must be in [0, 1)")
        if problem := weight_drop_problem(self.cell, self.weight_drop):
            raise ConfigError(problem)
        if self.freeze_embeddings and not self.pretrained_embeddings:
            raise ConfigError(
                "model.freeze_embeddings keeps pretrained vectors as they are: set model.pretrained_embeddings"
            )
        if self.mixup_alpha < 0:
            raise ConfigError(f"model.mixup_alpha={self.mixup_alpha} must be >= 0 (0 = off)")


@dataclass
class DataConfig(BatchingConfig):
    batch_size: Optional[int] = 64  # texts per batch
    source: str = "synthetic"  # synthetic, sst2, tsv, folder
    n_train: int = 10000  # synthetic: sentences per split
    n_valid: int = 1000  # synthetic: sentences in the validation split
    seed: int = 0  # synthetic generation, and the held-out split when data.valid is null
    root: Optional[str] = None  # sst2: folder with train.tsv and dev.tsv; null = download into the cache
    train: Optional[str] = None  # tsv: a .tsv/.csv file; folder: a folder of class folders
    valid: Optional[str] = None  # same kind as train; null = hold out valid_fraction of train
    valid_fraction: float = 0.1  # tsv and folder without data.valid: the share of train held out
    text_column: str = "text"  # tsv
    label_column: str = "label"  # tsv
    delimiter: Optional[str] = None  # tsv: null = from the extension (.tsv tab, .csv comma)
    classes: Optional[list[str]] = None  # folder: the class folders to read; null = every one with .txt files
    max_rows: Optional[int] = None  # read at most this many examples of each split
    tokenizer: str = "word"  # word, sentencepiece, char
    min_freq: int = 1  # word, char
    max_vocab: Optional[int] = None  # word, char: most frequent symbols kept, specials included
    vocab_size: int = 8000  # sentencepiece
    sp_model_type: str = "unigram"  # sentencepiece: bpe or unigram
    max_len: Optional[int] = None  # keep only the first max_len tokens of a text
    subword_buckets: int = 0  # word: > 0 also reads each word's character 3-5-grams, hashed into this many vectors
    cache_dir: Optional[str] = None  # default: $SEQTRAIN_CACHE or ~/.cache/seqtrain

    def __post_init__(self):
        super().__post_init__()
        check_choices(
            "data",
            {
                "source": (self.source, SOURCES),
                "tokenizer": (self.tokenizer, KINDS),
                "sp_model_type": (self.sp_model_type, SP_MODEL_TYPES),
            },
        )
        if not 0 < self.valid_fraction < 1:
            raise ConfigError("data.valid_fraction must be in (0, 1)")
        if self.subword_buckets and (self.tokenizer != "word" or self.subword_buckets < 2):
            raise ConfigError(
                f"data.subword_buckets={self.subword_buckets} reads the character n-grams of words: it needs "
                f"data.tokenizer=word and at least 2 buckets; with data.tokenizer={self.tokenizer} add "
                "data.subword_buckets=0"
            )


def read_splits(data: DataConfig, splits: tuple[str, ...]) -> dict[str, Table]:
    """(texts, labels) of each requested split, as strings."""
    if data.source == "synthetic":
        return make_splits(data.n_train, data.n_valid, data.seed)
    if data.source == "sst2":
        root = Path(data.root) if data.root else download_sst2(cache_dir(data.cache_dir) / "sst2")
        return {split: read_sst2(root / ("train.tsv" if split == "train" else "dev.tsv")) for split in splits}

    if not data.train and ("train" in splits or not data.valid):
        raise ConfigError(f"data={data.source} needs data.train={'FILE' if data.source == 'tsv' else 'FOLDER'}")

    def read(path: str) -> Table:
        if data.source == "folder":
            return read_folders(path, data.classes)
        return read_table(path, data.text_column, data.label_column, data.delimiter)

    if data.valid:
        return {split: read(data.train if split == "train" else data.valid) for split in splits}
    texts, labels = read(data.train)
    order = list(range(len(texts)))
    random.Random(data.seed).shuffle(order)
    cut = max(1, int(len(order) * data.valid_fraction))
    if cut >= len(order):
        raise DataError(
            f"{data.train} has too few examples ({len(order)}) to hold out a validation split; give data.valid"
        )
    parts = {"valid": sorted(order[:cut]), "train": sorted(order[cut:])}
    return {split: ([texts[i] for i in parts[split]], [labels[i] for i in parts[split]]) for split in splits}


class Encoded(torch.utils.data.Dataset):
    """Token ids with class ids; `lengths` for bucketing, `labels` (N,) for ensembles (-1 = unlabelled).
    When the run reads subwords, each token also names its word's row in `ngrams`, the (W, K) n-gram
    buckets of the W distinct words of the split: memory grows with the vocabulary, not the corpus."""

    def __init__(
        self,
        ids: list[list[int]],
        labels: list[int],
        spellings: list[list[int]] | None = None,
        ngrams: torch.Tensor | None = None,
    ):
        self.ids = [torch.tensor(x, dtype=torch.long) for x in ids]
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.lengths = [len(x) for x in ids]
        self.spellings = None if spellings is None else [torch.tensor(x, dtype=torch.long) for x in spellings]
        self.ngrams = ngrams

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """Token ids (T,), class id, and (T, K) n-gram buckets or None."""
        return self.ids[i], int(self.labels[i]), None if self.ngrams is None else self.ngrams[self.spellings[i]]


def encode(vocab: dict, texts: list[str], labels: list[int], source: str, max_len: int | None = None) -> Encoded:
    """Tokenize; a text with no tokens cannot be packed, so it is an error naming the example. The
    n-grams come from the words as written, so a word the vocabulary maps to <unk> keeps its spelling."""
    tokenizer = tokenizer_from_dict(vocab["tokenizer"])
    ids = [tokenizer.encode(text)[:max_len] for text in texts]
    empty = next((i for i, x in enumerate(ids) if not x), None)
    if empty is not None:
        raise DataError(f"{source}: example {empty + 1} ({texts[empty]!r}) has no tokens")
    buckets = vocab.get("subword_buckets", 0)
    if not buckets:
        return Encoded(ids, labels)
    rows: dict[str, int] = {}  # each distinct word -> its row of n-grams
    spellings = [[rows.setdefault(word, len(rows)) for word in tokenizer.split(text)[:max_len]] for text in texts]
    return Encoded(ids, labels, spellings, ngram_buckets(list(rows), buckets))


def collate(items: list[tuple[torch.Tensor, int, torch.Tensor | None]]) -> dict:
    tokens, lengths = pad([ids for ids, _, _ in items], PAD_ID)  # (B, T), (B,)
    batch = {
        "tokens": tokens,
        "lengths": lengths,
        "labels": torch.tensor([label for _, label, _ in items]),
        **batch_stats(lengths),
    }
    if items[0][2] is not None:
        batch["subwords"] = pad_buckets([subwords for _, _, subwords in items])  # (B, T, K)
    return batch


class Sentiment(ClassifierRecipe):
    """Sentence sentiment (many-to-one): read a whole text, predict one label; any number of classes."""

    name = "sentiment"
    ModelConfig = ModelConfig
    DataConfig = DataConfig

    def prepare(self, data: DataConfig, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        """Without `vocab`, learn the tokenizer and the classes from the training split; with one (resume,
        evaluate, init_from), read every split through it, and refuse labels the model does not know."""
        self.check_splits(splits)
        tables = {
            split: (texts[: data.max_rows], labels[: data.max_rows])
            for split, (texts, labels) in read_splits(data, splits).items()
        }
        if vocab is None:
            train_texts, train_labels = tables["train"]
            names = class_names(train_labels)
            tokenizer = build_tokenizer(
                train_texts, data.tokenizer, data.vocab_size, data.min_freq, data.max_vocab, data.sp_model_type
            )
            vocab = {
                "tokenizer": tokenizer.to_dict(),
                "classes": names,
                "class_counts": [train_labels.count(name) for name in names],
                "subword_buckets": data.subword_buckets,
            }
        index = {name: i for i, name in enumerate(vocab["classes"])}
        datasets = {}
        for split, (texts, labels) in tables.items():
            class_names(vocab["classes"], labels, valid_source=f"the {split} split")
            datasets[split] = encode(
                vocab, texts, [index[label] for label in labels], f"the {split} split", data.max_len
            )
        return Prepared(vocab, datasets, collate)

    def prepare_inputs(self, vocab: dict, texts: list[str]) -> Prepared:
        """Unlabelled texts for prediction, as one split named "inputs"."""
        return Prepared(vocab, {"inputs": encode(vocab, texts, [-1] * len(texts), "the input")}, collate)

    def build_model(self, model: ModelConfig, vocab: dict) -> SequenceClassifier:
        classifier = SequenceClassifier(
            len(tokenizer_from_dict(vocab["tokenizer"])),
            len(vocab["classes"]),
            model.embedding_dim,
            model.cell,
            model.hidden_size,
            model.num_layers,
            model.bidirectional,
            model.pooling,
            model.dropout,
            model.embedding_dropout,
            model.mlp_hidden,
            model.attention_size,
            PAD_ID,
            vocab.get("subword_buckets", 0),
            model.weight_drop,
        )
        initialize(classifier, model.init, model.recurrent_init)
        classifier.embedding.weight.requires_grad_(not model.freeze_embeddings)
        return classifier

    def load_pretrained(
        self, model: SequenceClassifier, model_cfg: ModelConfig, prepared: Prepared
    ) -> dict[str, Coverage]:
        """The word vectors from model.pretrained_embeddings. With subword n-grams, their vectors start at zero, so
        a word's input starts as its pretrained vector exactly and the n-grams learn a correction from the
        spelling (and carry words the file does not have)."""
        if not model_cfg.pretrained_embeddings:
            return {}
        train = prepared.splits["train"]
        tokenizer = tokenizer_from_dict(prepared.vocab["tokenizer"])
        coverage = start_from_vectors(model.embedding, model_cfg.pretrained_embeddings, tokenizer, train.ids)
        if model.subwords is not None:
            torch.nn.init.zeros_(model.subwords.weight)
        return {"words": coverage}

    def loss(self, model: ModelConfig, vocab: dict) -> SentimentLoss:
        counts = torch.tensor(vocab["class_counts"], dtype=torch.float)
        weights = counts.sum() / (len(counts) * counts.clamp(min=1)) if model.class_weights == "balanced" else None
        return SentimentLoss(model.label_smoothing, weights, model.mixup_alpha)

    def logits(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return class_logits(model, batch)

    def pooled_and_logits(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = model.features(batch["tokens"], batch["lengths"], batch.get("subwords"))
        return vectors, model.head(vectors)

    def embeddings(self, model: torch.nn.Module, vocab: dict) -> list[EmbeddingTable]:
        """The word (or piece) vectors, most frequent first, as the tokenizer orders them."""
        return [EmbeddingTable("words", model.embedding.weight, tokenizer_from_dict(vocab["tokenizer"]).pieces())]

    @torch.no_grad()
    def log_samples(
        self, model: torch.nn.Module, vocab: dict, writer, step: int, totals: dict[str, torch.Tensor]
    ) -> None:
        """The confusion matrix, and the probe sentences' predictions as a table, to watch negation and
        contrast being learnt."""
        super().log_samples(model, vocab, writer, step, totals)
        inputs = self.prepare_inputs(vocab, list(PROBES))
        batch = to_device(inputs.collate(list(inputs.splits["inputs"])), device_of(model))
        with evaluating(model):
            probabilities = self.predict(model, batch)
        names = vocab["classes"]
        rows = [
            f"| {text} | {names[int(p.argmax())]} | {float(p.max()):.2f} |" for text, p in zip(PROBES, probabilities)
        ]
        writer.add_text("predictions", "| text | label | probability |\n|---|---|---|\n" + "\n".join(rows), step)

    def export_graphs(self, model: SequenceClassifier, vocab: dict, format: str) -> list[Graph]:
        """Rows of lengths 5, 2 and 4, padded: tracing then records the packed path, which serves any lengths.
        With `data.subword_buckets` the n-gram buckets are a third input (seqtrain.data.subwords computes them)."""
        lengths = torch.tensor([5, 2, 4])
        real = torch.arange(5)[None] < lengths[:, None]  # (B, T)
        inputs = {
            "tokens": torch.randint(4, len(tokenizer_from_dict(vocab["tokenizer"])), (3, 5)) * real,
            "lengths": lengths,
        }
        axes = {"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "probabilities": {0: "batch"}}
        if vocab.get("subword_buckets", 0):
            inputs["subwords"] = (
                torch.randint(1, vocab["subword_buckets"], (3, 5, 4)) * real[..., None]
            ).int()  # as collated
            axes["subwords"] = {0: "batch", 1: "time", 2: "ngrams"}
        return [Graph("model", ProbabilitiesGraph(model), inputs, ["probabilities"], axes)]


class SentimentLoss:
    """Cross-entropy with class weights and label smoothing, and optional sentence mixup in training.

    Sentence mixup (Zhang et al. 2018; Guo et al. 2019 for text): each example's pooled vector is blended
    with another example's of the same batch, lam * a + (1 - lam) * b with lam ~ Beta(alpha, alpha) per
    example, and the loss is the same blend of the two labels' losses. Blending the pooled vectors rather
    than the inputs sidesteps the different lengths, and the model is asked to be linear between training
    sentences, a regulariser that costs a permutation and a blend per step. The blend happens inside the
    model's forward (`mix=`), so under DDP it trains through the wrapper like any other step.
    """

    def __init__(self, label_smoothing: float, class_weights: torch.Tensor | None, mixup_alpha: float):
        self.label_smoothing, self.class_weights, self.mixup_alpha = label_smoothing, class_weights, mixup_alpha

    def __call__(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch["labels"]
        if model.training and self.mixup_alpha > 0:
            logits, loss_sum = self.mixup(model, batch)
        else:
            logits = class_logits(model, batch)
            loss_sum = self.example_losses(logits, labels).sum()
        return loss_sum / len(labels), classifier_stats(logits, labels, loss_sum)

    def mixup(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (B, C) of the blended sentences and the summed blended loss."""
        labels = batch["labels"]
        lam = (
            torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample((len(labels),)).to(labels.device)
        )  # (B,)
        partner = torch.randperm(len(labels), device=labels.device)
        logits = model(batch["tokens"], batch["lengths"], batch.get("subwords"), mix=(lam, partner)).float()
        losses = lam * self.example_losses(logits, labels) + (1 - lam) * self.example_losses(logits, labels[partner])
        return logits, losses.sum()

    def example_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) cross-entropy of each example, with the class weights and label smoothing."""
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, targets, weight=weights, label_smoothing=self.label_smoothing, reduction="none")


def class_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """(B, C), in float32 whatever the autocast dtype."""
    return model(batch["tokens"], batch["lengths"], batch.get("subwords")).float()


class ProbabilitiesGraph(torch.nn.Module):
    """Token ids (B, T), lengths (B,) [, n-gram buckets (B, T, K)] -> class probabilities (B, C)."""

    def __init__(self, classifier: SequenceClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, subwords: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.classifier(tokens, lengths, subwords).softmax(dim=-1)
