"""Distributed training on CPU with gloo and 2 processes: DDP's gradients (and the speech recipe's
feature statistics) are the global batch's, and `seqtrain fit ... trainer.devices=2`
(torch.distributed.run underneath) trains, validates on uneven shards, resumes, changes world size,
and saves and stops on SIGTERM, without hanging. Every subprocess has a timeout, so a hang
fails the test instead of blocking CI."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import seqtrain
from seqtrain import distributed
from seqtrain.config import compose
from seqtrain.data.audio import GlobalNormalizer
from seqtrain.data.sampler import BucketBatchSampler
from seqtrain.recipes.char_lm import CharLM
from seqtrain.recipes.forecast import Forecast
from seqtrain.recipes.sentiment import Sentiment

pytestmark = pytest.mark.slow  # processes and timeouts: deselect with -m 'not slow' while iterating

TIMEOUT = 180
RECIPES = {
    "char_lm": (
        CharLM(),
        ["data.seq_len=16", "model.hidden_size=16", "model.num_layers=1", "model.embedding_dim=8", "model.dropout=0"],
    ),
    "sentiment": (
        Sentiment(),
        [
            "data.n_train=64",
            "data.n_valid=16",
            "model.hidden_size=16",
            "model.embedding_dim=8",
            "model.dropout=0",
            "model.embedding_dropout=0",
            "model.label_smoothing=0.1",
            "model.class_weights=balanced",
        ],
    ),
    "forecast": (Forecast(), ["data.num_series=20", "model.hidden_size=8", "model.mlp_hidden=8", "model.dropout=0"]),
}


def global_batch(name: str, corpus: str) -> tuple[torch.nn.Module, list, object, object]:
    """A freshly seeded model of the recipe, 8 examples of equal weight (full char_lm windows), the
    recipe's collate and its step (with the loss settings of RECIPES)."""
    recipe, overrides = RECIPES[name]
    extra = ["data=text", f"data.path={corpus}"] if name == "char_lm" else []
    cfg = compose(name, [*overrides, *extra])
    prepared = recipe.prepare(cfg.data, None, ("train",))
    torch.manual_seed(0)
    model = recipe.build_model(cfg.model, prepared.vocab)
    return (
        model,
        [prepared.splits["train"][i] for i in range(8)],
        prepared.collate,
        recipe.loss(cfg.model, prepared.vocab),
    )


def gradients(
    step, model: torch.nn.Module, items: list, collate, through: torch.nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Gradients of `model`'s parameters after one step of the recipe run `through` a wrapper (or not)."""
    loss, _ = step(through or model, collate(items))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def ddp_worker(rank: int, port: int, corpus: str, out: str) -> None:
    """One rank as torchrun would start it: the environment names the world, `distributed.session` joins it."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    with distributed.session("cpu"):
        grads = {name: ddp_gradients(name, corpus, rank) for name in RECIPES}
        normalizer, half = GlobalNormalizer(3), slice(rank * 2, rank * 2 + 2)
        feats, frames = speech_features()
        grads["utterances"] = torch.tensor(normalizer.update(feats[half], frames[half]))
        grads["normalizer"] = normalizer.state_dict()
        grads["clock"] = torch.tensor(distributed.max_over_ranks(10.0 + rank))  # a schedule over time reads one clock
        torch.save(grads, f"{out}.{rank}")


def speech_features() -> tuple[torch.Tensor, torch.Tensor]:
    """4 padded feature sequences of different lengths, the same in every process."""
    return torch.randn(4, 7, 3, generator=torch.Generator().manual_seed(0)) * 3 + 1, torch.tensor([7, 2, 5, 3])


def ddp_gradients(name: str, corpus: str, rank: int) -> dict[str, torch.Tensor]:
    """This rank's half of the global batch through DDP; the wrapper dies with this frame, as in `trainer.fit`."""
    model, items, collate, step = global_batch(name, corpus)
    wrapped = distributed.wrap(model, torch.device("cpu"))
    return gradients(step, model, items[rank * 4 : rank * 4 + 4], collate, through=wrapped)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_ddp_step_has_the_gradients_and_feature_statistics_of_one_process_on_the_global_batch(corpus, tmp_path):
    out = str(tmp_path / "grads")
    mp.start_processes(ddp_worker, args=(free_port(), str(corpus), out), nprocs=2, start_method="spawn")
    for name in RECIPES:
        model, items, collate, step = global_batch(name, str(corpus))
        expected = gradients(step, model, items, collate)
        for rank in range(2):
            got = torch.load(f"{out}.{rank}", weights_only=True)[name]
            assert got.keys() == expected.keys()
            for key in expected:
                torch.testing.assert_close(
                    got[key], expected[key], rtol=1e-5, atol=1e-7, msg=f"{name} {key} rank {rank}"
                )
    whole = GlobalNormalizer(3)
    assert whole.update(*speech_features()) == 4
    for rank in range(2):  # each rank saw half the utterances, and holds the statistics of them all
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["utterances"] == 4 and got["clock"] == 11.0  # both ranks read the later clock
        for key, value in whole.state_dict().items():
            torch.testing.assert_close(got["normalizer"][key], value, msg=f"normalizer {key} rank {rank}")


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """A corpus whose training batches and validation batches both split unevenly over 2 ranks."""
    rng = random.Random(1)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    path = tmp_path_factory.mktemp("ddp") / "uneven.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(460)) + "\n")
    return path


def overrides(path, run_dir, *extra):
    return [
        "recipe=char_lm",
        "data=text",
        f"data.path={path}",
        "data.seq_len=32",
        "data.batch_size=16",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.embedding_dim=16",
        "trainer.max_time=null",
        "trainer.val_every_steps=5",
        "trainer.log_every_steps=2",
        f"run_dir={run_dir}",
        *extra,
    ]


def seqtrain_subprocess(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-m", "seqtrain", *args], capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"seqtrain {' '.join(args)} hung for {TIMEOUT}s: {e.stderr}")


def test_a_two_process_run_and_its_resume_finish_on_uneven_data(uneven, tmp_path):
    cfg = compose("char_lm", overrides(uneven, tmp_path / "x", "trainer.max_steps=1")[1:])
    prepared = CharLM().prepare(cfg.data, None, ("train", "valid"))
    batches = {s: len(BucketBatchSampler(prepared.splits[s].lengths, 16)) for s in ("train", "valid")}
    assert batches["train"] % 2 == 1 and batches["valid"] % 2 == 1, batches  # dropped / uneven shards

    run_dir = tmp_path / "run"
    first = seqtrain_subprocess("fit", *overrides(uneven, run_dir, "trainer.max_steps=12", "trainer.devices=2"))
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("run dir:") == 1 and first.stdout.count("\n") == 1  # rank 1 prints nothing
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["split"], r["step"]) for r in records]
    assert len(steps) == len(set(steps)) and ("valid", 12) in steps  # one writer
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["trainer"]["world_size"] == 2

    resumed = seqtrain_subprocess("fit", "recipe=char_lm", f"trainer.resume={run_dir}", "trainer.max_steps=20")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step 12" in resumed.stderr
    final = json.loads(resumed.stdout)
    # Validation sharded over 2 ranks (uneven: one rank has a batch more) equals one process scoring it all.
    scored = json.loads(seqtrain("evaluate", run_dir).stdout)
    assert scored == pytest.approx({k: v for k, v in final.items() if k != "run_dir"}, rel=1e-9)

    single = seqtrain_subprocess(
        "fit", "recipe=char_lm", f"trainer.resume={run_dir}", "trainer.max_steps=24", "trainer.devices=1"
    )
    assert single.returncode == 0, single.stderr
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["trainer"]["world_size"] == 1


def test_rescaling_the_sampler_position_repeats_no_batch_and_skips_fewer_than_the_new_world():
    lengths = [5] * 70
    order = list(BucketBatchSampler(lengths, 2, seed=3))  # 35 global batches, the same for every world size
    for saved, new in ((2, 1), (2, 3), (3, 2), (1, 4)):
        for consumed_per_rank in range(0, 35 // saved):
            seen = {tuple(b) for r in range(saved) for b in shard(lengths, r, saved)[:consumed_per_rank]}
            start = distributed.rescale_position(consumed_per_rank, saved, new)
            after = {tuple(b) for r in range(new) for b in shard(lengths, r, new)[start:]}
            assert not seen & after
            skipped = set(map(tuple, order[: (35 // new) * new])) - seen - after
            assert len(skipped) < new


def shard(lengths, rank, world):
    return list(BucketBatchSampler(lengths, 2, seed=3, rank=rank, world_size=world))


def test_sigterm_to_a_two_process_run_saves_says_how_to_resume_and_the_resume_finishes(uneven, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqtrain",
            "fit",
            *overrides(uneven, run_dir, "trainer.max_steps=100000", "trainer.devices=2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler would: torch.distributed.run passes it on
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"a SIGTERM'd 2-process run hung for {TIMEOUT}s")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"resume with: seqtrain fit recipe=char_lm trainer.resume={run_dir}" in err
    assert "terminate called" not in err and "Traceback" not in err, err  # the whole stderr: which finalizer raised
    stopped_at = torch.load(last, weights_only=True)["trainer"]["step"]
    assert stopped_at >= 5  # the first validation's checkpoint, or the one the signal asked for

    resumed = seqtrain_subprocess(
        "fit", "recipe=char_lm", f"trainer.resume={run_dir}", f"trainer.max_steps={stopped_at + 4}"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {stopped_at}" in resumed.stderr
    assert torch.load(last, weights_only=True)["trainer"]["step"] == stopped_at + 4


def test_a_bagged_run_trains_its_members_one_after_another_on_two_processes(tmp_path):
    run_dir = tmp_path / "bag"
    result = seqtrain_subprocess(
        "fit",
        "recipe=sentiment",
        *RECIPES["sentiment"][1],
        "data.batch_size=16",
        "trainer.max_time=null",
        "trainer.max_epochs=null",
        "trainer.max_steps=3",
        "trainer.bagging=2",
        "trainer.bagging_resample=bootstrap",
        "trainer.devices=2",
        f"run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("bagged run dir:") == 1 and result.stdout.count("\n") == 1  # rank 1 prints nothing
    assert len(json.loads(result.stdout)["members"]) == 2
    for i in range(2):
        assert (
            torch.load(run_dir / "members" / str(i) / "checkpoints" / "last.pt", weights_only=True)["trainer"][
                "world_size"
            ]
            == 2
        )
    assert [json.loads(line)["split"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [
        "member",
        "member",
        "ensemble",
    ]


def test_auto_bagging_on_two_processes_agrees_on_every_member_s_budget(tmp_path):
    """Rank 0 plans each member from the checkpoints it wrote; every rank trains the members it planned."""
    run_dir = tmp_path / "bag"
    stop_at_once = [
        "trainer.early_stopping.monitor=loss",
        "trainer.early_stopping.min_delta=10",
        "trainer.early_stopping.patience=1",
    ]
    result = seqtrain_subprocess(
        "fit",
        "recipe=sentiment",
        *RECIPES["sentiment"][1],
        "data.batch_size=16",
        "trainer.max_epochs=null",
        "trainer.max_time=12",
        "trainer.val_every_steps=2",
        *stop_at_once,
        "trainer.bagging=auto",
        "trainer.devices=2",
        f"run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    members = sorted((run_dir / "members").iterdir())
    assert len(json.loads(result.stdout)["members"]) == len(members) >= 2
    for member in members:
        assert torch.load(member / "checkpoints" / "last.pt", weights_only=True)["trainer"]["world_size"] == 2


def mixup_worker(rank: int, port: int, run_dir: str, out: str) -> None:
    """One rank of a sentiment run with sentence mixup, trained by the trainer itself; saves its weights."""
    from rich.console import Console

    from seqtrain import trainer

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    with distributed.session("cpu"):
        cfg = compose(
            "sentiment",
            [
                *RECIPES["sentiment"][1],
                "model.mixup_alpha=0.2",
                "data.batch_size=8",
                "optim=sgd",
                "optim.lr=0.5",
                "trainer.max_time=null",
                "trainer.max_steps=6",
                "trainer.val_every_steps=6",
                "trainer.ema_decay=null",
                "trainer.device=cpu",
            ],
        )
        recipe = Sentiment()
        prepared = recipe.prepare(cfg.data, None, ("train", "valid"))
        torch.manual_seed(0)
        task = recipe.task(recipe.build_model(cfg.model, prepared.vocab), cfg.model, prepared)
        meta = {"recipe": "sentiment", "config": cfg.resolved, "vocab": prepared.vocab}
        settings = trainer.Settings(cfg.trainer, cfg.optim, cfg.sched, cfg.data)
        sampler = trainer.preflight(
            task, prepared.splits["train"], prepared.splits["valid"], settings, shuffle_train=True
        )
        trainer.fit(
            task,
            prepared.splits["train"],
            prepared.splits["valid"],
            settings,
            Path(run_dir),
            meta,
            sampler=sampler,
            console=Console(quiet=True),
        )
        torch.save(task.model.state_dict(), f"{out}.{rank}")


def test_two_ranks_training_with_mixup_keep_identical_weights(tmp_path):
    """Mixup blends pooled vectors inside the model's forward, so DDP averages its gradients like any other:
    after a few updates on different data and different blends, both replicas hold the same weights."""
    out, run_dir = str(tmp_path / "weights"), tmp_path / "run"
    run_dir.mkdir()
    mp.start_processes(mixup_worker, args=(free_port(), str(run_dir), out), nprocs=2, start_method="spawn")
    first, second = (torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2))
    vocab = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["vocab"]
    initial = Sentiment().build_model(compose("sentiment", RECIPES["sentiment"][1]).model, vocab)
    assert any(not torch.equal(first[k], v) for k, v in initial.state_dict().items() if k in first)  # it trained
    for key in first:
        torch.testing.assert_close(
            second[key], first[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs between the ranks"
        )
