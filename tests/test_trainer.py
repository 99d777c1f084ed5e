import io
import json
import math
import os
import signal
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim.optimizer import register_optimizer_step_post_hook

from conftest import assert_float32_close, tiny_overrides
from seqtrain import checkpoint, config, progress, runs, trainer
from seqtrain.data.sampler import BatchingConfig
from seqtrain.errors import ConfigError, Interrupted, TrainingError
from seqtrain.optim import OptimConfig, SchedConfig
from seqtrain.recipes import char_lm
from seqtrain.rundir import RunDir
from seqtrain.trainer_config import EarlyStoppingConfig, LoopConfig


class Regression(torch.utils.data.Dataset):
    """Sequences of 3-d vectors whose target is a fixed linear function of their mean."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 5, 3, generator=g)
        self.y = self.x.mean(1) @ torch.tensor([1.0, -2.0, 0.5])
        self.lengths = [5] * n

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def regression_task(summarize=None):
    def step(model, batch):
        err = (model(batch["x"]).mean(1).squeeze(-1) - batch["y"]) ** 2
        return err.mean(), {"sq": err.sum().detach(), "n": torch.tensor(float(len(err)))}

    def collate(items):
        return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}

    torch.manual_seed(0)
    return trainer.Task(
        torch.nn.Linear(3, 1), step, summarize or (lambda t: {"loss": float(t["sq"] / t["n"])}), collate
    )


def fit_regression(tmp_path, task=None, shuffle=True, batch_size=8, sched=None, resume=None, **overrides):
    cfg = LoopConfig(**{"max_steps": 40, "log_every_steps": 5, "val_every_steps": 10, **overrides})
    meta = {"recipe": "toy", "config": {"model": {}}, "vocab": {}}
    task = task or regression_task()
    settings = trainer.Settings(
        cfg, OptimConfig(name="sgd", lr=0.1), sched or SchedConfig(), BatchingConfig(batch_size=batch_size)
    )
    train, valid = Regression(64, 1), Regression(32, 2)
    sampler = trainer.preflight(task, train, valid, settings, shuffle_train=shuffle)
    resume_from = checkpoint.load(RunDir(resume).find_checkpoint("last")) if resume else None
    metrics = trainer.fit(task, train, valid, settings, tmp_path, meta, sampler=sampler, resume_from=resume_from)
    return task.model, metrics


def test_training_reduces_validation_loss_and_logs(tmp_path):
    _, metrics = fit_regression(tmp_path)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    valid = [r["loss"] for r in records if r["split"] == "valid"]
    assert valid[-1] < valid[0] / 5 and metrics["loss"] == valid[-1]
    train = [r for r in records if r["split"] == "train"]
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= train[0].keys()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and (tmp_path / "checkpoints" / "last.pt").is_file()


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    big, _ = fit_regression(tmp_path / "a", shuffle=False, batch_size=16, max_steps=8)
    accumulated, _ = fit_regression(tmp_path / "b", shuffle=False, batch_size=8, grad_accum=2, max_steps=8)
    assert_float32_close(big.weight, accumulated.weight, ulps=64)


def test_ema_validates_and_keeps_the_moving_average_and_saves_the_raw_weights_for_resume(tmp_path):
    raw_after_each_step = []
    task = regression_task()
    record = register_optimizer_step_post_hook(
        lambda *_: raw_after_each_step.append(
            torch.cat([p.detach().clone().flatten() for p in task.model.parameters()])
        )
    )
    try:
        _, metrics = fit_regression(tmp_path, task=task, shuffle=False, ema_decay=0.95)
    finally:
        record.remove()
    # Debiased: update s of t weighs 0.95^(t-s), normalised, and nothing is left of the start.
    t = len(raw_after_each_step)
    weights = torch.tensor([0.95 ** (t - s) for s in range(1, t + 1)], dtype=torch.float64)
    expected = (weights[:, None] * torch.stack(raw_after_each_step).double()).sum(0) / weights.sum()
    biased = raw_after_each_step[0]  # torch's own EMA keeps 0.95^39 = 13.5% of the first weights
    for raw in raw_after_each_step[1:]:
        biased = 0.95 * biased + 0.05 * raw
    saved = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    averaged = torch.cat([saved["model"]["weight"].flatten(), saved["model"]["bias"]])
    raw = torch.cat([saved["training_model"]["weight"].flatten(), saved["training_model"]["bias"]])
    assert_float32_close(averaged, expected.float(), ulps=64)
    assert not torch.allclose(averaged, biased, rtol=1e-2)
    assert not torch.allclose(averaged, raw, atol=1e-3)
    assert torch.equal(raw, raw_after_each_step[-1]) and saved["ema_updates"] == 40
    check = torch.nn.Linear(3, 1)
    check.load_state_dict(saved["model"])
    x, y = Regression(32, 2).x, Regression(32, 2).y
    with torch.no_grad():
        assert metrics["loss"] == pytest.approx(float(((check(x).mean(1).squeeze(-1) - y) ** 2).mean()), rel=1e-5)


def test_tokens_per_s_counts_training_time_only(tmp_path, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    task = regression_task()
    real_step = task.step

    def timed_step(model, batch):
        clock["now"] += 1.0 if model.training else 50.0  # a training step takes 1 s, a validation batch 50 s
        return real_step(model, batch)

    task.step = timed_step
    task.sizes = lambda batch: (5 * len(batch["x"]), 0)
    fit_regression(tmp_path, task=task, log_every_steps=5, val_every_steps=7)  # windows and validations interleave
    rates = [r["tokens_per_s"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
    assert rates == [40.0] * 8  # 8 examples of 5 tokens per 1-second step, whatever validation took


def test_a_time_budget_alone_sets_the_length_of_a_cosine_schedule(tmp_path, monkeypatch):
    """trainer.max_time with no step or epoch budget: the LR follows the training clock and reaches its
    floor when the budget ends (here each training step takes 1 s of a 40 s budget)."""
    clock = {"now": 0.0}
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    task = regression_task()
    real_step = task.step

    def timed_step(model, batch):
        clock["now"] += 1.0 if model.training else 0.0
        return real_step(model, batch)

    task.step = timed_step
    fit_regression(tmp_path, task=task, sched=SchedConfig(name="cosine"), max_steps=None, max_time=40.0)
    logged = {r["step"]: r["lr"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["split"] == "train"}
    assert max(logged) == 40  # the budget ended the run
    for step, lr in logged.items():  # the LR for the step after `step`, at `step` seconds of 40
        assert lr == pytest.approx(0.1 * (1 + math.cos(math.pi * step / 40)) / 2, abs=1e-12)
    assert logged[40] == pytest.approx(0.0, abs=1e-12)


def test_early_stopping_stops_after_patience_and_keeps_the_best(tmp_path):
    metrics_seen = iter([9.9, 3.0, 2.0, 2.5, 2.4, 2.6, 1.0, 1.0])  # the first answers the start-up metric check
    task = regression_task(summarize=lambda totals: {"loss": next(metrics_seen)})
    cfg_stop = EarlyStoppingConfig(monitor="loss", mode="min", patience=2)
    fit_regression(tmp_path, task=task, max_steps=1000, early_stopping=cfg_stop, log_every_steps=1000)
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    last = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert best["metrics"]["loss"] == 2.0 and best["trainer"]["step"] == 20
    assert last["trainer"]["step"] == 40  # validations at 10, 20 (best), 30, 40: two without improvement


def test_a_non_finite_loss_stops_clearly_and_keeps_the_last_good_checkpoint(tmp_path):
    task = regression_task()
    good_step = task.step
    calls = {"n": 0}

    def exploding(model, batch):
        calls["n"] += model.training
        loss, stats = good_step(model, batch)
        return (loss * float("nan"), stats) if calls["n"] > 25 else (loss, stats)

    task.step = exploding
    with pytest.raises(TrainingError, match="loss became nan at step 26"):
        fit_regression(tmp_path, task=task)
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["trainer"]["step"] == 20


def test_a_spent_budget_on_resume_trains_no_further(tmp_path):
    fit_regression(tmp_path, max_steps=10)
    model, _ = fit_regression(tmp_path, max_steps=10, resume=str(tmp_path))
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["trainer"]["step"] == 10


def fit_char_lm(corpus, *extra):
    return runs.fit(config.for_fit("char_lm", tiny_overrides(corpus, *extra)), Console(file=io.StringIO()))


# mid-epoch, and in the second epoch (70 batches per epoch) with a moving average of the weights
@pytest.mark.parametrize("stop_at, ema", [(13, []), (75, ["trainer.ema_decay=0.9"])])
def test_a_run_stopped_by_sigterm_and_resumed_ends_with_the_same_weights(corpus, tmp_path, monkeypatch, stop_at, ema):
    common = [
        "model.dropout=0.2",
        "sched=cosine",
        "sched.warmup_steps=5",
        "trainer.max_steps=90",
        "trainer.val_every_steps=30",
        *ema,
    ]
    fit_char_lm(corpus, *common, f"run_dir={tmp_path / 'whole'}")

    real_step, calls = char_lm.step, {"n": 0}

    def step_then_sigterm(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_step(model, batch)

    monkeypatch.setattr(char_lm, "step", step_then_sigterm)
    with pytest.raises(
        Interrupted, match=f"stopped at step {stop_at}; .*resume with: seqtrain fit recipe=char_lm trainer.resume="
    ):
        fit_char_lm(corpus, *common, f"run_dir={tmp_path / 'stopped'}")
    monkeypatch.setattr(char_lm, "step", real_step)
    fit_char_lm(corpus, *common, f"trainer.resume={tmp_path / 'stopped'}")

    whole = checkpoint.load(tmp_path / "whole" / "checkpoints" / "last.pt")
    resumed = checkpoint.load(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert resumed["trainer"]["step"] == whole["trainer"]["step"] == 90
    for weights in ("model", "training_model") if ema else ("model",):
        tensors = {k: v for k, v in whole[weights].items() if torch.is_tensor(v)}
        assert tensors and all(torch.equal(v, resumed[weights][k]) for k, v in tensors.items())


@pytest.mark.parametrize(
    "switches",
    [
        ["trainer.precision=bf16"],
        ["trainer.log_histograms_every=5", "trainer.clip_grad_norm=null", "trainer.clip_grad_value=0.5"],
        ["data.stateful=true", "optim=sgd", "optim.lr=0.05", "optim.momentum=0.9", "optim.nesterov=true"],
        ["data.max_tokens=256", "trainer.grad_accum=2", "optim=rmsprop", "optim.l1=1e-5"],
        [
            "sched=newbob",
            "sched.warmup_steps=0",
            "optim=adagrad",
            "model.cell=rnn_tanh",
            "model.init=xavier",
            "model.recurrent_init=orthogonal",
        ],
    ],
)
def test_trainer_switches_train_end_to_end(corpus, tmp_path, switches):
    run_dir, metrics = fit_char_lm(corpus, "trainer.max_steps=12", f"run_dir={tmp_path / 'run'}", *switches)
    assert metrics["loss"] < 2.9  # below a uniform guess over the 17-character vocabulary
    records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert any(r["split"] == "train" for r in records)


def test_bf16_on_a_cpu_without_native_bf16_trains_with_onednn_off_and_says_so(corpus, tmp_path, monkeypatch):
    # An AVX2 CPU's oneDNN has no bf16 LSTM and refuses it; pretend to be one on any CPU.
    monkeypatch.setattr(trainer, "native_bf16", lambda device: False)
    real_step, onednn_during_steps = char_lm.step, []  # under bf16 autocast

    def recording_step(model, batch):
        if torch.is_autocast_enabled("cpu"):  # training and validation; preflight's check runs in fp32
            onednn_during_steps.append(torch.backends.mkldnn.enabled)
        return real_step(model, batch)

    monkeypatch.setattr(char_lm, "step", recording_step)
    out = io.StringIO()
    overrides = tiny_overrides(corpus, "trainer.max_steps=12", "trainer.precision=bf16", f"run_dir={tmp_path / 'run'}")
    _, metrics = runs.fit(config.for_fit("char_lm", overrides), Console(file=out, width=200))
    assert onednn_during_steps and not any(onednn_during_steps)
    assert torch.backends.mkldnn.enabled  # switched back on after the run
    assert "this CPU has no native bf16, so it is emulated" in out.getvalue()
    assert metrics["loss"] < 2.9


def test_a_monitor_that_is_not_a_metric_fails_before_training(tmp_path):
    watch = EarlyStoppingConfig(monitor="accuracy", mode="max", patience=2)
    with pytest.raises(ConfigError, match="monitor='accuracy' is not a metric; valid: loss"):
        fit_regression(tmp_path, early_stopping=watch)
    assert not (tmp_path / "checkpoints").exists()


def test_a_non_finite_gradient_stops_before_the_update(tmp_path):
    task = regression_task()
    good_step, calls = task.step, {"n": 0}

    def infinite_gradient(model, batch):
        loss, stats = good_step(model, batch)
        calls["n"] += model.training
        if calls["n"] == 3:
            loss.register_hook(lambda grad: grad * float("inf"))  # the loss stays finite, its gradient does not
        return loss, stats

    task.step = infinite_gradient
    with pytest.raises(TrainingError, match="gradient norm became (inf|nan) at step 3; stopped before the update"):
        fit_regression(tmp_path, task=task)
    assert torch.isfinite(task.model.weight).all()


class Separable(torch.utils.data.Dataset):
    """Two classes a linear model separates with a margin: accuracy saturates at once, the loss goes on falling."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 1, 3, generator=g) * 0.3
        self.x[:, 0, 0] += torch.where(self.y == 1, 1.0, -1.0)
        self.lengths = [1] * n

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def separable_task():
    def step(model, batch):
        logits = model(batch["x"]).squeeze(1)  # (B, 2)
        loss_sum = torch.nn.functional.cross_entropy(logits, batch["y"], reduction="sum")
        correct = (logits.argmax(-1) == batch["y"]).sum().float()
        return loss_sum / len(batch["y"]), {
            "loss_sum": loss_sum.detach(),
            "correct": correct,
            "n": torch.tensor(float(len(batch["y"]))),
        }

    def summarize(t):
        return {"loss": float(t["loss_sum"] / t["n"]), "accuracy": float(t["correct"] / t["n"])}

    def collate(items):
        return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}

    torch.manual_seed(0)
    return trainer.Task(
        torch.nn.Linear(3, 2), step, summarize, collate, resolution=lambda t: {"accuracy": 1 / float(t["n"])}
    )


def test_a_saturated_accuracy_hands_model_selection_and_newbob_to_the_validation_loss(tmp_path):
    """Accuracy reaches 1.0 at the first validations and stays; the loss keeps falling. best.pt must follow
    the loss past the first 100%, and NewBob must not anneal while the loss improves."""
    task = separable_task()
    cfg = LoopConfig(
        max_steps=60,
        log_every_steps=5,
        val_every_steps=5,
        early_stopping=EarlyStoppingConfig(monitor="accuracy", mode="max", patience=3),
    )
    settings = trainer.Settings(
        cfg, OptimConfig(name="sgd", lr=0.2), SchedConfig(name="newbob", patience=0), BatchingConfig(batch_size=16)
    )
    train, valid = Separable(256, 1), Separable(64, 2)
    sampler = trainer.preflight(task, train, valid, settings, shuffle_train=True)
    trainer.fit(
        task, train, valid, settings, tmp_path, {"recipe": "toy", "config": {"model": {}}, "vocab": {}}, sampler=sampler
    )
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    valid_records = [r for r in records if r["split"] == "valid"]
    first_saturated = next(r["step"] for r in valid_records if r["accuracy"] == 1.0)
    losses = [r["loss"] for r in valid_records]
    assert first_saturated <= 10 and all(later < earlier for earlier, later in zip(losses, losses[1:]))
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best["trainer"]["step"] == 60 > first_saturated  # the last, lowest-loss validation, not the first 100%
    assert [r["lr"] for r in records if r["split"] == "train"] == [0.2] * 12  # never annealed; no early stop either


def test_gradient_flow_is_logged_every_n_steps_and_never_changes_training(corpus, tmp_path):
    """Measuring (a step-by-step forward and backward in eval mode) leaves the weights, the RNG and the
    optimiser exactly as training alone would."""
    common = ["model.dropout=0.2", "trainer.max_steps=12", "trainer.val_every_steps=6"]
    fit_char_lm(corpus, *common, f"run_dir={tmp_path / 'plain'}")
    fit_char_lm(corpus, *common, "trainer.log_gradient_flow_every=5", f"run_dir={tmp_path / 'flow'}")
    plain = checkpoint.load(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    flow = checkpoint.load(tmp_path / "flow" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(v, flow[k]) for k, v in plain.items() if torch.is_tensor(v))
    events = EventAccumulator(str(tmp_path / "flow"))
    events.Reload()
    assert [e.step for e in events.Scalars("gradient_flow/rnn/layer0/forward")] == [5, 10]
    assert [e.step for e in events.Images("gradient_flow")] == [5, 10]
    assert 0 < events.Scalars("gradient_flow/rnn/layer0/forward")[0].value


def test_gradient_flow_needs_a_recurrent_model(tmp_path):
    with pytest.raises(ConfigError, match="log_gradient_flow_every measures recurrent layers, and this model has none"):
        fit_regression(tmp_path, log_gradient_flow_every=5)
    assert not (tmp_path / "checkpoints").exists()
