"""Character language model (many-to-many): predict each next character; sample text from a prompt."""

from __future__ import annotations

import math
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from seqtrain.data.collate import device_of
from seqtrain.data.download import cache_dir, fetch
from seqtrain.data.sampler import BatchingConfig
from seqtrain.data.text import CharVocab, atomic_write, corpus_stats, token_file
from seqtrain.data.windows import IGNORE, StreamDataset, WindowDataset, collate_windows
from seqtrain.errors import ConfigError, DataError, check_choices
from seqtrain.models.init import RECURRENT_SCHEMES, SCHEMES, initialize
from seqtrain.models.language_model import RecurrentLM
from seqtrain.models.rnn import CELLS, onednn_off, weight_drop_problem
from seqtrain.models.sampling import sample_next
from seqtrain.recipe import EmbeddingTable, Graph, Prepared, Recipe, SampleOptions
from seqtrain.task import Stats, Step, evaluating

SOURCES = ("stdlib", "text", "tinyshakespeare")


@dataclass
class ModelConfig:
    cell: str = "lstm"  # rnn_tanh, rnn_relu, gru, lstm
    hidden_size: int = 512  # units per recurrent layer
    num_layers: int = 1  # stacked recurrent layers
    embedding_dim: int = 64  # 0 = one-hot input
    dropout: float = 0.35  # on the embedding and the output
    weight_drop: float = 0.0  # DropConnect on the recurrent (hidden-to-hidden) weights; rnn, gru and lstm
    tie_weights: bool = False  # the output layer reuses the input embedding (needs embedding_dim = hidden_size)
    init: str = "default"  # default, xavier, kaiming
    recurrent_init: str = "default"  # default, orthogonal, xavier

    def __post_init__(self):
        check_choices(
            "model",
            {
                "cell": (self.cell, CELLS),
                "init": (self.init, SCHEMES),
                "recurrent_init": (self.recurrent_init, RECURRENT_SCHEMES),
            },
        )
        if self.tie_weights and self.embedding_dim == 0:
            raise ConfigError("model.tie_weights needs model.embedding_dim > 0 (one-hot input has no embedding to tie)")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if problem := weight_drop_problem(self.cell, self.weight_drop):
            raise ConfigError(problem)


@dataclass
class DataConfig(BatchingConfig):
    batch_size: Optional[int] = 16  # windows per batch: many small updates learn the most text per second
    source: str = "stdlib"  # stdlib, text, tinyshakespeare
    path: Optional[str] = None  # source=text: any UTF-8 file
    # source=tinyshakespeare: where it is downloaded from
    url: str = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    # source=tinyshakespeare: the download's SHA-256
    sha256: str = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    cache_dir: Optional[str] = None  # default: $SEQTRAIN_CACHE or ~/.cache/seqtrain
    max_chars: int = 2_000_000  # source=stdlib: how much of the standard library's source to read
    valid_fraction: float = 0.1  # the last 10% is validation (nanoGPT's contiguous split)
    seq_len: int = 64  # characters per training window (the BPTT length)
    # Characters per scoring window of validation and `evaluate` (None: seq_len). Each character is
    # scored given the text before it in its window, so a window longer than the training one scores
    # the model as it is used, with the long context that sampling carries in its hidden state.
    eval_seq_len: Optional[int] = 1024
    stateful: bool = False  # carry the hidden state across consecutive windows (truncated BPTT)

    def __post_init__(self):
        super().__post_init__()
        check_choices("data", {"source": (self.source, SOURCES)})
        if not 0 < self.valid_fraction < 1 or self.seq_len < 1 or (self.eval_seq_len or 1) < 1:
            raise ConfigError("data.valid_fraction must be in (0, 1), data.seq_len and data.eval_seq_len >= 1")
        if self.source == "text" and not self.path:
            raise ConfigError("data=text needs data.path=FILE")
        if self.stateful and self.batch_size is None:
            raise ConfigError("data.stateful needs data.batch_size (the number of parallel streams)")


def corpus_path(data: DataConfig) -> Path:
    cache = cache_dir(data.cache_dir)
    if data.source == "text":
        return Path(data.path)
    if data.source == "tinyshakespeare":
        return fetch(
            data.url,
            data.sha256,
            "tinyshakespeare.txt",
            cache,
            hint="download input.txt yourself and run with data=text data.path=FILE",
        )
    return stdlib_corpus(cache, data.max_chars)


def stdlib_corpus(cache: Path, max_chars: int) -> Path:
    """The installed Python standard library's own source, concatenated in path order: real text, no download."""
    target = cache / f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}-{max_chars}.txt"
    if target.is_file():
        return target
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for file in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests", "idle_test"} & set(file.relative_to(root).parts):
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(target, "".join(parts)[:max_chars].encode("utf-8"))
    return target


def step(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits, _ = model(batch["tokens"], batch["lengths"], stream=batch.get("stream"))  # (B, T, V)
    loss_sum = F.cross_entropy(
        logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=IGNORE, reduction="sum"
    )
    tokens = batch["num_tokens"]
    return loss_sum / tokens, {"loss_sum": loss_sum.detach(), "tokens": torch.tensor(float(tokens))}


def generate(
    model: RecurrentLM,
    vocab: CharVocab,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Characters one at a time (the prompt is checked at once, before any is produced). The hidden
    state carries the context, so each character costs the same however long the text grows."""
    unseen = vocab.unseen(prompt)
    if unseen:
        raise DataError(
            f"the prompt has characters never seen in training: {' '.join(map(repr, unseen))} "
            f"(the model knows {len(vocab) - 1} characters)"
        )
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    device = device_of(model)

    def characters() -> Iterator[str]:
        with evaluating(model), torch.no_grad(), onednn_off():
            logits, state = model(torch.as_tensor(vocab.encode(prompt), device=device)[None])
            last = logits[:, -1]
            for _ in range(length):
                last[:, 0] = float("-inf")  # never emit <unk>
                token = sample_next(last.cpu(), temperature, top_k, top_p, generator)
                yield vocab.chars[int(token)]
                logits, state = model(token.to(device)[:, None], state=state)
                last = logits[:, -1]

    return characters()


def default_prompt(chars: CharVocab) -> str:
    return "\n" if "\n" in chars.index else chars.chars[1]


class StepGraph(torch.nn.Module):
    """The LM with its state made explicit, as an export needs: tokens (B, T) and the state in, logits
    (B, T, V) and the next state out. A caller primes with the prompt (T = its length, zero state),
    then feeds one character at a time (T = 1) with the state it got back."""

    def __init__(self, lm: RecurrentLM):
        super().__init__()
        # Held outside the module tree: the tracers read every state_dict entry as a tensor, and the LM's
        # extra state (the carried training state) is a dict. Its weights are traced as constants.
        object.__setattr__(self, "lm", lm.eval().requires_grad_(False))

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, new = self.lm(tokens, state=state if len(state) == 2 else state[0])
        return logits, *(new if isinstance(new, tuple) else (new,))


class ExportedLM(torch.nn.Module):
    """An export's step in the place of `RecurrentLM`, for `generate` and `step`. `lengths` is not
    needed: the model reads left to right, so padding after a row's end never changes its logits."""

    def __init__(self, step):
        super().__init__()
        self.graph = step
        self.names = [name for name in step.inputs if name != "tokens"]

    def forward(self, tokens: torch.Tensor, lengths=None, state=None, stream=None) -> tuple[torch.Tensor, object]:
        if state is None:
            state = tuple(self.graph.zeros(name, tokens.size(0)) for name in self.names)
        out = self.graph(tokens=tokens, **dict(zip(self.names, state if isinstance(state, tuple) else (state,))))
        new = tuple(out[f"{name}_next"] for name in self.names)
        return out["logits"], new if len(new) == 2 else new[0]


class CharLM(Recipe):
    """Character language model (many-to-many): predict each next character; sample text from a prompt."""

    name = "char_lm"
    ModelConfig = ModelConfig
    DataConfig = DataConfig
    splits = ("train", "valid", "all")

    def loss(self, model: ModelConfig, vocab: dict) -> Step:
        return step

    def prepare(self, data: DataConfig, vocab: dict | None, splits: tuple[str, ...]) -> Prepared:
        self.check_splits(splits)
        path = corpus_path(data)
        cache = cache_dir(data.cache_dir) / "tokens"
        total, train_chars = corpus_stats(path, 1 - data.valid_fraction, cache)
        chars = CharVocab.from_dict(vocab) if vocab else CharVocab(train_chars)
        tokens = token_file(path, chars, cache)
        n_train = int(total * (1 - data.valid_fraction))
        parts = {"train": tokens[:n_train], "valid": tokens[n_train:], "all": tokens}
        datasets = {}
        for split in splits:
            if len(parts[split]) < 2:
                raise DataError(f"the {split} split of {path} is too short ({len(parts[split])} characters)")
            if split != "train":
                datasets[split] = WindowDataset(parts[split], data.eval_seq_len or data.seq_len)
            elif data.stateful:
                datasets[split] = StreamDataset(parts[split], data.seq_len, data.batch_size)
            else:
                datasets[split] = WindowDataset(parts[split], data.seq_len)
        return Prepared(chars.to_dict(), datasets, collate_windows, shuffle_train=not data.stateful)

    def build_model(self, model: ModelConfig, vocab: dict) -> RecurrentLM:
        lm = RecurrentLM(
            len(CharVocab.from_dict(vocab)),
            model.cell,
            model.hidden_size,
            model.num_layers,
            model.embedding_dim,
            model.dropout,
            model.tie_weights,
            model.weight_drop,
        )
        initialize(lm, model.init, model.recurrent_init)
        return lm

    def summarize(self, totals: Stats) -> dict[str, float]:
        loss = float(totals["loss_sum"] / totals["tokens"])
        return {"loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(min(loss, 700.0))}

    def sample(self, model: RecurrentLM, vocab: dict, options: SampleOptions, write: Callable[[str], None]) -> None:
        if options.text is not None or options.input_file is not None:
            raise ConfigError("char_lm generates from --prompt; --text and --input-file do not apply")
        chars = CharVocab.from_dict(vocab)
        prompt = options.prompt if options.prompt is not None else default_prompt(chars)
        generated = generate(
            model, chars, prompt, options.length, options.temperature, options.top_k, options.top_p, options.seed
        )
        write(prompt)
        for char in generated:
            write(char)
        write("\n")

    def log_samples(self, model: RecurrentLM, vocab: dict, writer, step: int, totals: Stats) -> None:
        """300 characters sampled from the model at each validation."""
        chars = CharVocab.from_dict(vocab)
        prompt = default_prompt(chars)
        text = prompt + "".join(generate(model, chars, prompt, 300, temperature=0.8, seed=0))
        writer.add_text("sample", "```\n" + text + "\n```", step)

    def embeddings(self, model: RecurrentLM, vocab: dict) -> list[EmbeddingTable]:
        """The character vectors (none with one-hot input), `<unk>` first."""
        if model.embedding is None:
            return []
        return [
            EmbeddingTable(
                "characters",
                model.embedding.weight,
                [{" ": "␣"}.get(c, repr(c)[1:-1]) for c in CharVocab.from_dict(vocab).chars],
            )
        ]

    def export_graphs(self, model: RecurrentLM, vocab: dict, format: str) -> list[Graph]:
        tokens = torch.randint(1, model.vocab_size, (2, 3))  # (B, T)
        _, state = model(tokens)
        names = ["h", "c"] if isinstance(state, tuple) else ["h"]  # each (layers, B, H); c for LSTM only
        zeros = {name: torch.zeros_like(s) for name, s in zip(names, state if isinstance(state, tuple) else (state,))}
        axes = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
        axes |= {name: {1: "batch"} for name in names} | {f"{name}_next": {1: "batch"} for name in names}
        return [
            Graph(
                "model", StepGraph(model), {"tokens": tokens, **zeros}, ["logits", *(f"{n}_next" for n in names)], axes
            )
        ]

    def from_export(self, graphs: dict, state: dict) -> ExportedLM:
        return ExportedLM(graphs["model"])
