"""Shared fixtures: a small corpus, an isolated cache, and the shared data sets when present."""

from __future__ import annotations

import os

# Test models are tiny: one thread is as fast, and OpenMP threads of parallel processes spinning on
# two cores slow everything by orders of magnitude. Set before torch loads OpenMP.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import random  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from seqtrain.cli import app  # noqa: E402

torch.set_num_threads(1)

RUNNER = CliRunner()
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EPS32 = torch.finfo(torch.float32).eps


def assert_float32_close(actual: torch.Tensor, expected: torch.Tensor, ulps: int = 128, msg: str | None = None) -> None:
    """Equal up to float32 rounding at the values' magnitude: within `ulps` units in the last place of
    the largest |expected|. Summing in another order (another batch size, BLAS build, AVX2 or AVX-512
    kernel) moves a result by a few ulps of its largest terms, not of itself, and a recurrent net
    chains hundreds of such sums; a fixed atol is too tight for large values and too loose for small."""
    expected = torch.as_tensor(expected)
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    tolerance = ulps * EPS32 * max(scale, torch.finfo(torch.float32).tiny)
    torch.testing.assert_close(torch.as_tensor(actual), expected, rtol=0, atol=tolerance, msg=msg)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own download/token cache, never the user's."""
    monkeypatch.setenv("SEQTRAIN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """About 40k characters of patterned text, enough for a tiny LM to learn something quickly."""
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red", "ball"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + "." for _ in range(1000)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_overrides(corpus: Path, *extra: str) -> list[str]:
    """A char_lm config that trains in a second or two."""
    return [
        "data=text",
        f"data.path={corpus}",
        "data.seq_len=32",
        "data.batch_size=16",
        "sched=constant",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.embedding_dim=16",
        "model.dropout=0.0",
        "trainer.max_time=null",
        "trainer.max_steps=30",
        "trainer.val_every_steps=10",
        "trainer.val_max_batches=5",
        "trainer.log_every_steps=5",
        *extra,
    ]


def seqtrain(*args):
    """`seqtrain ARGS...` run in this process, as a user types it; paths may be given as Path objects."""
    return RUNNER.invoke(app, [str(a) for a in args])


def write_wav(path: Path, seconds: float = 0.1, rate: int = 16000, seed: int = 0) -> Path:
    """A clip of white noise, as a stand-in for a recording."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.random.default_rng(seed).normal(0, 0.1, int(seconds * rate)).astype("float32"), rate)
    return path
