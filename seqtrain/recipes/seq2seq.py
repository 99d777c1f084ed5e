"""Sequence to sequence with attention (many-to-many, unaligned): translate, or normalise dates to ISO.

What differs from the other recipes: pairs of texts (generated dates, parallel files, Multi30k),
source and target tokenizers learnt on the training split, a teacher-forced cross-entropy with label
smoothing, and decoding. Held-out batches carry their reference texts, and `step` then also decodes
them (greedy or beam, `data.beam_size`) and returns sacrebleu's BLEU/chrF counts and exact matches as
additive statistics: validation, `seqtrain evaluate` and early stopping (monitor=bleu) all get corpus
BLEU through the one generic trainer, and no hook is needed. Training batches carry no references.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from seqtrain.data import dates
from seqtrain.data.collate import device_of
from seqtrain.data.parallel import PairDataset, Pairs, collate_pairs, multi30k_files, read_lines, read_parallel
from seqtrain.data.sampler import BatchingConfig
from seqtrain.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    KINDS,
    PAD_ID,
    SP_MODEL_TYPES,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from seqtrain.data.vectors import Coverage
from seqtrain.errors import ConfigError, DataError, check_choices
from seqtrain.models.attention import ATTENTIONS
from seqtrain.models.decoding import Hypothesis, SearchOptions, decode
from seqtrain.models.init import RECURRENT_SCHEMES, SCHEMES, initialize
from seqtrain.models.pretrained import start_from_vectors
from seqtrain.models.seq2seq import DECODER_CELLS, DecoderState, Seq2Seq
from seqtrain.plots import attention_image, save_attention
from seqtrain.recipe import EmbeddingTable, Graph, Prepared, Recipe, SampleOptions
from seqtrain.task import Stats
from seqtrain.translation_metrics import translation_metrics, translation_stats

SOURCES = ("dates", "parallel", "multi30k")
MONITORED = 4  # validation pairs kept in the vocab, decoded into TensorBoard at every validation


@dataclass
class ModelConfig:
    cell: str = "gru"  # gru, lstm
    embedding_dim: int = 128  # token vector size (source and target)
    hidden_size: int = 128  # per encoder direction; the decoder has twice this
    num_layers: int = 1  # encoder and decoder alike
    attention: str = "additive"  # additive (Bahdanau), dot, general (Luong)
    dropout: float = 0.1  # on embeddings, between layers and before the output
    tie_embeddings: bool = True  # the output layer reuses the decoder's input embedding
    teacher_forcing: float = 1.0  # probability of feeding the gold token; < 1 is scheduled sampling
    label_smoothing: float = 0.1  # share of the target probability spread over the vocabulary
    init: str = "default"  # default, xavier, kaiming
    recurrent_init: str = "default"  # default, orthogonal, xavier
    # Transfer learning: start the source and target token vectors from a word2vec, GloVe or fastText .vec
    # file (its dimension is model.embedding_dim); freeze_embeddings keeps them (and a tied output layer) as they are
    pretrained_embeddings: Optional[str] = None
    freeze_embeddings: bool = False  # keep the pretrained vectors as they are

    def __post_init__(self):
        if self.freeze_embeddings and not self.pretrained_embeddings:
            raise ConfigError(
                "model.freeze_embeddings keeps pretrained vectors as they are: set model.pretrained_embeddings"
            )
        check_choices(
            "model",
            {
                "cell": (self.cell, tuple(DECODER_CELLS)),
                "attention": (self.attention, ATTENTIONS),
                "init": (self.init, SCHEMES),
                "recurrent_init": (self.recurrent_init, RECURRENT_SCHEMES),
            },
        )
        if not (0 <= self.dropout < 1 and 0 <= self.label_smoothing < 1 and 0 <= self.teacher_forcing <= 1):
            raise ConfigError(
                "model.dropout and model.label_smoothing must be in [0, 1), model.teacher_forcing in [0, 1]"
            )


@dataclass
class DataConfig(BatchingConfig):
    batch_size: Optional[int] = 64  # pairs per batch
    source: str = "dates"  # dates, parallel, multi30k
    n_train: int = 20000  # dates: pairs per split
    n_valid: int = 1000  # dates: pairs in the validation split
    n_test: int = 2000  # dates: pairs in the test split
    seed: int = 0  # dates: which days are held out, and the draws
    train_src: Optional[str] = None  # parallel: one sentence per line, .gz accepted
    train_tgt: Optional[str] = None  # parallel: the training targets, line by line
    valid_src: Optional[str] = None  # parallel: the validation sources
    valid_tgt: Optional[str] = None  # parallel: the validation targets
    test_src: Optional[str] = None  # parallel: the test sources (split=test)
    test_tgt: Optional[str] = None  # parallel: the test targets
    root: Optional[str] = None  # multi30k: the folder of the task-1 raw files
    source_lang: str = "de"  # multi30k: the source language's file suffix
    target_lang: str = "en"  # multi30k: the target language's file suffix
    test_set: str = "test_2016_flickr"  # multi30k: the file stem of split=test
    tokenizer: str = "char"  # char, sentencepiece, word
    joint_vocab: bool = False  # one tokenizer for both sides
    vocab_size: int = 8000  # sentencepiece
    sp_model_type: str = "unigram"  # sentencepiece: bpe or unigram
    min_freq: int = 1  # char, word
    max_len: Optional[int] = 100  # training pairs with more tokens on either side are dropped
    beam_size: int = 1  # decoding of held-out splits for bleu/chrf/exact_match; 1 = greedy

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
        if self.source == "parallel" and not all((self.train_src, self.train_tgt, self.valid_src, self.valid_tgt)):
            raise ConfigError("data=parallel needs data.train_src, data.train_tgt, data.valid_src and data.valid_tgt")
        if self.source == "multi30k" and not self.root:
            raise ConfigError("data=multi30k needs data.root=DIR (the task-1 raw files)")
        if self.beam_size < 1 or (self.max_len is not None and self.max_len < 1):
            raise ConfigError("data.beam_size and data.max_len must be >= 1")


def read_pairs(data: DataConfig, split: str) -> Pairs:
    if data.source == "dates":
        return dates.generate(
            split, {"train": data.n_train, "valid": data.n_valid, "test": data.n_test}[split], data.seed
        )
    if data.source == "multi30k":
        return read_parallel(*multi30k_files(data.root, split, data.test_set, data.source_lang, data.target_lang))
    files = {
        "train": (data.train_src, data.train_tgt),
        "valid": (data.valid_src, data.valid_tgt),
        "test": (data.test_src, data.test_tgt),
    }[split]
    if not all(files):
        raise ConfigError(f"split={split} needs data.{split}_src and data.{split}_tgt")
    return read_parallel(*files)


def learn_vocab(data: DataConfig, train: Pairs, valid: Pairs) -> dict:
    """Tokenizers learnt on the training split (one when joint, stored once), and a few validation pairs."""

    def learn(texts: list[str]) -> dict:
        return build_tokenizer(
            texts, data.tokenizer, data.vocab_size, data.min_freq, None, data.sp_model_type
        ).to_dict()

    sources, targets = train
    sides = (
        {"source": learn(sources + targets)}
        if data.joint_vocab
        else {"source": learn(sources), "target": learn(targets)}
    )
    return {"joint": data.joint_vocab, **sides, "monitored": [list(p) for p in zip(*valid)][:MONITORED]}


def tokenizers(vocab: dict) -> tuple[Tokenizer, Tokenizer]:
    source = tokenizer_from_dict(vocab["source"])
    return source, source if vocab["joint"] else tokenizer_from_dict(vocab["target"])


@dataclass(frozen=True)
class Scoring:
    """What `step` needs to decode and score a held-out batch; collate adds it to those batches."""

    tokenizer: Tokenizer  # the target side's, to detokenise hypotheses
    search: SearchOptions


class Seq2SeqLoss:
    """Teacher-forced cross-entropy with label smoothing; held-out batches are also decoded and scored.

    The smoothed loss, (1 - e) NLL + e * mean over the vocabulary of -log p, is F.cross_entropy's
    `label_smoothing` written out, so that the plain NLL (for loss and perplexity) comes from the
    same log-softmax.
    """

    def __init__(self, label_smoothing: float):
        self.label_smoothing = label_smoothing

    def __call__(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = batch["tgt_mask"]  # (B, T)
        logits = model(
            batch["src"], batch["src_lengths"], batch["tgt_in"], positions=mask
        )  # (N, V) real target positions only
        log_probs = logits.float().log_softmax(-1)
        gold = batch["tgt_out"][mask]  # (N,)
        nll = -log_probs.gather(1, gold[:, None]).sum()
        loss_sum = (1 - self.label_smoothing) * nll - self.label_smoothing * log_probs.mean(-1).sum()
        stats = {"nll_sum": nll.detach(), "tokens": mask.sum(), "correct": (log_probs.argmax(-1) == gold).sum()}
        if "references" in batch:
            scoring: Scoring = batch["scoring"]
            hypotheses = decode(model, batch["src"], batch["src_lengths"], BOS_ID, EOS_ID, scoring.search)
            stats |= translation_stats([scoring.tokenizer.decode(h.tokens) for h in hypotheses], batch["references"])
        return loss_sum / len(gold), stats


def translate(
    model: Seq2Seq, source: Tokenizer, texts: list[str], search: SearchOptions, batch_size: int = 64
) -> list[tuple[list[int], Hypothesis]]:
    """(source ids, best hypothesis) for each text, in order. Texts go in batches of similar length;
    an empty text gets an empty hypothesis without reaching the model."""
    encoded = [source.encode(t) for t in texts]
    results: list = [(ids, Hypothesis([], 0.0, 0.0, torch.zeros(0, 0), True)) for ids in encoded]
    device = device_of(model)
    order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate_pairs([(encoded[i], [], None) for i in chunk], BOS_ID, EOS_ID, PAD_ID)
        hypotheses = decode(model, batch["src"].to(device), batch["src_lengths"], BOS_ID, EOS_ID, search)
        for i, hypothesis in zip(chunk, hypotheses):
            results[i] = (encoded[i], hypothesis)
    return results


def pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Each token's text, for the axes of an attention picture (a space shows as ␣)."""
    return [tokenizer.decode([i]).replace(" ", "␣") or "␣" for i in ids]


STATE = ("h", "c", "feed", "memory", "keys", "mask")  # DecoderState's fields, as an export's tensors


class EncoderGraph(torch.nn.Module):
    """Source ids (B, S) and lengths (B,) -> the decoder's initial state, one tensor per field."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.model.encode(src, lengths)
        return tuple(getattr(state, name) for name in STATE if getattr(state, name) is not None)


class DecoderGraph(torch.nn.Module):
    """One decoder step: previous tokens (B,) and the state's tensors -> logits (B, V), the next h (and
    c), the next attentional vector, and the attention weights (B, S)."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, prev: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = [name for name in STATE if name != "c" or len(tensors) == len(STATE)]
        state = DecoderState(**{"c": None} | dict(zip(names, tensors)))
        logits, new, weights = self.model.step(state, prev)
        return logits, new.h, *(() if new.c is None else (new.c,)), new.feed, weights


class ExportedSeq2Seq(torch.nn.Module):
    """An export's encoder and decoder step in the place of `Seq2Seq`: `encode` and `step` for the same
    greedy and beam search (seqtrain/models/decoding.py), `forward` (teacher-forced) for `step` above."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> DecoderState:
        return DecoderState(**{"c": None} | self.encoder(src=src, lengths=lengths))

    def step(self, state: DecoderState, prev: torch.Tensor) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        out = self.decoder(prev=prev, **{n: getattr(state, n) for n in STATE if getattr(state, n) is not None})
        new = DecoderState(out["h_next"], out.get("c_next"), out["feed_next"], state.memory, state.keys, state.mask)
        return out["logits"], new, out["weights"]

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, S), (B,), (B, T) gold target input -> (B, T, V) logits (or (N, V) where `positions` is True),
        feeding the gold tokens as Seq2Seq does in evaluation."""
        state, logits = self.encode(src, src_lengths), []
        for t in range(tgt_in.size(1)):
            step_logits, state, _ = self.step(state, tgt_in[:, t])
            logits.append(step_logits)
        logits = torch.stack(logits, 1)
        return logits if positions is None else logits[positions]


class Seq2SeqRecipe(Recipe):
    """Sequence to sequence with attention (many-to-many, unaligned): translate, or normalise dates to ISO."""

    name = "seq2seq"
    ModelConfig = ModelConfig
    DataConfig = DataConfig
    splits = ("train", "valid", "test")

    def loss(self, model: ModelConfig, vocab: dict) -> Seq2SeqLoss:
        return Seq2SeqLoss(model.label_smoothing)

    def embeddings(self, model: Seq2Seq, vocab: dict) -> list[EmbeddingTable]:
        """The source and target token vectors (the target's are the output layer's too when tied)."""
        source, target = tokenizers(vocab)
        return [
            EmbeddingTable("source", model.encoder.embedding.weight, source.pieces()),
            EmbeddingTable("target", model.decoder.embedding.weight, target.pieces()),
        ]

    def resolution(self, totals: Stats) -> dict[str, float]:
        """One sentence of exact match, one token of teacher-forced accuracy (BLEU moves in no fixed step)."""
        steps = {"token_accuracy": 1.0 / max(1.0, float(totals["tokens"]))}
        if "sentences" in totals:
            steps["exact_match"] = 1.0 / max(1.0, float(totals["sentences"]))
        return steps

    def prepare(self, data: DataConfig, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        """Without `vocab`, learn the tokenizers from the training split; with one, encode through it."""
        self.check_splits(splits)
        pairs = {split: read_pairs(data, split) for split in splits}
        vocab = vocab or learn_vocab(data, pairs["train"], pairs["valid"])
        source, target = tokenizers(vocab)
        datasets = {}
        for split, (sources, targets) in pairs.items():
            src, tgt = [source.encode(s) for s in sources], [target.encode(t) for t in targets]
            if split == "train":
                limit = data.max_len or math.inf
                kept = [i for i in range(len(src)) if 0 < len(src[i]) <= limit and len(tgt[i]) <= limit]
                if not kept:
                    raise DataError(
                        f"no training pair is non-empty with at most data.max_len={data.max_len} tokens a side"
                    )
                datasets[split] = PairDataset([src[i] for i in kept], [tgt[i] for i in kept])
            else:
                empty = next((i for i, s in enumerate(src) if not s), None)
                if empty is not None:
                    raise DataError(f"the {split} split has an empty source sentence on line {empty + 1}")
                datasets[split] = PairDataset(src, tgt, targets)
        scoring = Scoring(target, SearchOptions(beam_size=data.beam_size))
        return Prepared(vocab, datasets, partial(collate_pairs, bos=BOS_ID, eos=EOS_ID, pad_id=PAD_ID, scoring=scoring))

    def build_model(self, model: ModelConfig, vocab: dict) -> Seq2Seq:
        source, target = tokenizers(vocab)
        seq2seq = Seq2Seq(
            len(source),
            len(target),
            model.cell,
            model.embedding_dim,
            model.hidden_size,
            model.num_layers,
            model.attention,
            model.dropout,
            model.tie_embeddings,
            model.teacher_forcing,
            PAD_ID,
        )
        initialize(seq2seq, model.init, model.recurrent_init)
        for embedding in (seq2seq.encoder.embedding, seq2seq.decoder.embedding):
            embedding.weight.requires_grad_(not model.freeze_embeddings)
        return seq2seq

    def load_pretrained(self, model: Seq2Seq, model_cfg: ModelConfig, prepared: Prepared) -> dict[str, Coverage]:
        """The source and the target token vectors from model.pretrained_embeddings, each side matched to its
        own vocabulary (one file for both: a multilingual file, or a joint vocabulary)."""
        if not model_cfg.pretrained_embeddings:
            return {}
        source, target = tokenizers(prepared.vocab)
        train, path = prepared.splits["train"], model_cfg.pretrained_embeddings
        return {
            "source": start_from_vectors(model.encoder.embedding, path, source, train.sources),
            "target": start_from_vectors(model.decoder.embedding, path, target, train.targets),
        }

    def summarize(self, totals: Stats) -> dict[str, float]:
        """loss (nats per target token, without smoothing), perplexity, token_accuracy (teacher-forced);
        bleu, chrf and exact_match where the batches were decoded."""
        loss = float(totals["nll_sum"] / totals["tokens"])
        metrics = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "token_accuracy": float(totals["correct"] / totals["tokens"]),
        }
        return metrics | (translation_metrics(totals) if "bleu" in totals else {})

    def sample(self, model: Seq2Seq, vocab: dict, options: SampleOptions, write: Callable[[str], None]) -> None:
        """One translation per input line; with --plot-attention, the --text input's alignment as a PNG."""
        if (options.text is None) == (options.input_file is None):
            raise ConfigError('seq2seq translates --text "..." or --input-file FILE (one of them)')
        if options.plot_attention and options.text is None:
            raise ConfigError("--plot-attention draws the alignment of one --text input")
        texts = [options.text] if options.text is not None else read_lines(options.input_file)
        source, target = tokenizers(vocab)
        results = translate(model, source, texts, SearchOptions(beam_size=options.beam))
        for _, hypothesis in results:
            write(target.decode(hypothesis.tokens) + "\n")
        if options.plot_attention:
            ids, hypothesis = results[0]
            if not hypothesis.tokens:
                raise DataError("the translation is empty: there is no alignment to draw")
            save_attention(
                hypothesis.attention,
                pieces(source, ids),
                pieces(target, hypothesis.tokens),
                Path(options.plot_attention),
            )

    def log_samples(self, model: Seq2Seq, vocab: dict, writer, step: int, totals: Stats) -> None:
        """The monitored validation pairs: greedy translations as a text table, attention as images."""
        source, target = tokenizers(vocab)
        monitored = vocab["monitored"]
        results = translate(model, source, [s for s, _ in monitored], SearchOptions(beam_size=1))
        rows = ["| source | reference | translation |", "|---|---|---|"]
        for i, ((text, reference), (ids, hypothesis)) in enumerate(zip(monitored, results)):
            rows.append(f"| {text} | {reference} | {target.decode(hypothesis.tokens)} |")
            if hypothesis.tokens:
                image = attention_image(hypothesis.attention, pieces(source, ids), pieces(target, hypothesis.tokens))
                writer.add_image(f"attention/{i}", image, step, dataformats="HWC")
        writer.add_text("translations", "\n".join(rows), step)

    def export_graphs(self, model: Seq2Seq, vocab: dict, format: str) -> list[Graph]:
        """The encoder and one decoder step, traced on rows of lengths 5, 2 and 4 (padded): the packed path."""
        source, _ = tokenizers(vocab)
        lengths = torch.tensor([5, 2, 4])
        src = torch.randint(4, len(source), (3, 5)) * (torch.arange(5)[None] < lengths[:, None])  # (B, S)
        state = model.encode(src, lengths)
        names = [name for name in STATE if getattr(state, name) is not None]
        batch_first = {
            "h": {1: "batch"},
            "c": {1: "batch"},
            "feed": {0: "batch"},
            "memory": {0: "batch", 1: "source"},
            "keys": {0: "batch", 1: "source"},
            "mask": {0: "batch", 1: "source"},
        }
        encoder_axes = {"src": {0: "batch", 1: "source"}, "lengths": {0: "batch"}} | {n: batch_first[n] for n in names}
        carried = [n for n in names if n in ("h", "c", "feed")]
        outputs = ["logits", *(f"{n}_next" for n in carried), "weights"]
        decoder_axes = {"prev": {0: "batch"}, "logits": {0: "batch"}, "weights": {0: "batch", 1: "source"}}
        decoder_axes |= {n: batch_first[n] for n in names} | {f"{n}_next": batch_first[n] for n in carried}
        prev = torch.full((3,), BOS_ID)
        return [
            Graph("encoder", EncoderGraph(model), {"src": src, "lengths": lengths}, names, encoder_axes),
            Graph(
                "decoder",
                DecoderGraph(model),
                {"prev": prev, **{n: getattr(state, n) for n in names}},
                outputs,
                decoder_axes,
            ),
        ]

    def from_export(self, graphs: dict, state: dict) -> ExportedSeq2Seq:
        return ExportedSeq2Seq(graphs["encoder"], graphs["decoder"])
