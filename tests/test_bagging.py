"""trainer.bagging=K (seqtrain/runs.py, the resample in seqtrain/data/sampler.py): K sentiment members on
bootstrap resamples (or, with trainer.bagging_resample=none, the whole split) in one run dir, which evaluate
and sample treat as one averaged ensemble; resume continues the member that was stopped; bad values and
recipes that cannot be bagged are one line."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import seqtrain
from seqtrain import checkpoint, runs
from seqtrain.config import compose
from seqtrain.data.sampler import bootstrap
from seqtrain.recipes import sentiment
from seqtrain.recipes.sentiment import Sentiment, SentimentLoss
from seqtrain.rundir import RunDir
from seqtrain.trainer_config import TrainerConfig

TINY = [
    "model.embedding_dim=16",
    "model.hidden_size=16",
    "data.batch_size=32",
    "data.n_train=400",
    "data.n_valid=100",
    "trainer.max_time=null",
    "trainer.max_epochs=null",
    "trainer.max_steps=6",
    "trainer.val_every_steps=3",
]


def fit(*overrides):
    result = seqtrain("fit", "recipe=sentiment", *TINY, *overrides)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


class Lengths:
    def __init__(self, n):
        self.lengths = [i % 7 + 1 for i in range(n)]

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return ("example", i)


def test_a_bootstrap_resample_is_seed_determined_as_large_as_the_split_drawn_with_replacement():
    data = Lengths(2000)
    first = bootstrap(data, seed=1234, member=0)
    assert first.indices == bootstrap(data, seed=1234, member=0).indices
    assert first.indices != bootstrap(data, seed=1234, member=1).indices != bootstrap(data, seed=7, member=1).indices
    assert len(first) == len(data) and all(0 <= i < len(data) for i in first.indices)
    assert 0.6 < len(set(first.indices)) / len(data) < 0.67  # 1 - 1/e of the examples, some several times
    assert [first[j] for j in range(3)] == [("example", i) for i in first.indices[:3]]
    assert first.lengths == [data.lengths[i] for i in first.indices]


def test_each_member_has_its_seed_and_an_even_share_of_the_time_budget():
    cfg = TrainerConfig(max_time=1200, bagging=5, seed=7)
    assert runs.member_overrides(cfg, 2, Path("bag/members/2"), resume=False) == [
        "run_dir=bag/members/2",
        "trainer.resume=null",
        "trainer.seed=9",
        "trainer.bagging=null",
        "trainer.max_time=240.0",
    ]
    assert "trainer.resume=bag/members/2" in runs.member_overrides(
        TrainerConfig(max_steps=9, bagging=5), 2, Path("bag/members/2"), resume=True
    )


def member_dirs(run_dir):
    return [member.path for member in RunDir(run_dir).members()]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A bagged run of 3 members; `trained_on` holds the training set each member's trainer.fit got."""
    run_dir, trained_on = tmp_path_factory.mktemp("bagging") / "bag", []
    real_fit = runs.trainer.fit

    def recording_fit(task, train_set, *args, **kwargs):
        trained_on.append(train_set)
        return real_fit(task, train_set, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs.trainer, "fit", recording_fit)
        final = fit("trainer.bagging=3", "trainer.bagging_resample=bootstrap", f"run_dir={run_dir}")
    return run_dir, final, trained_on


def test_a_bagged_run_trains_its_members_on_bootstrap_resamples_into_one_run_dir(bag):
    run_dir, final, trained_on = bag
    members = member_dirs(run_dir)
    assert members == [run_dir / "members" / str(i) for i in range(3)]
    assert member_dirs(members[1]) == [members[1]]  # a member, like any plain run, is itself
    full = Sentiment().prepare(compose("sentiment", TINY).data, None, ("train",)).splits["train"]
    assert [t.indices for t in trained_on] == [bootstrap(full, 1234, i).indices for i in range(3)]
    vocab = json.loads((run_dir / "vocab.json").read_text())
    for i, member in enumerate(members):
        state = checkpoint.load(member / "checkpoints" / "last.pt")
        assert state["trainer"]["step"] == 6 and state["vocab"] == vocab  # one vocabulary, from the whole split
        assert state["config"]["trainer"]["seed"] == 1234 + i and state["config"]["trainer"]["bagging"] is None
    assert final["run_dir"] == str(run_dir) and len(final["members"]) == 3 and 0 <= final["accuracy"] <= 1


def test_sentiment_members_train_on_the_whole_split_by_default_each_with_its_own_seed(tmp_path, monkeypatch):
    trained_on, real_fit = [], runs.trainer.fit

    def recording_fit(task, train_set, *args, **kwargs):
        trained_on.append(train_set)
        return real_fit(task, train_set, *args, **kwargs)

    monkeypatch.setattr(runs.trainer, "fit", recording_fit)
    final = fit("trainer.bagging=2", "trainer.max_steps=2", f"run_dir={tmp_path / 'bag'}")
    full = Sentiment().prepare(compose("sentiment", TINY).data, None, ("train",)).splits["train"]
    assert [type(t) for t in trained_on] == [sentiment.Encoded] * 2 and all(
        t.lengths == full.lengths for t in trained_on
    )
    members = [checkpoint.load(m / "checkpoints" / "last.pt") for m in member_dirs(tmp_path / "bag")]
    assert [m["config"]["trainer"]["seed"] for m in members] == [1234, 1235]
    assert not torch.equal(members[0]["model"]["head.1.weight"], members[1]["model"]["head.1.weight"])
    assert len(final["members"]) == 2


def test_the_bag_logs_each_member_and_the_ensemble(bag):
    run_dir, final, _ = bag
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("member", 0), ("member", 1), ("member", 2), ("ensemble", 3)]
    assert [r["accuracy"] for r in records] == [m["accuracy"] for m in final["members"]] + [final["accuracy"]]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("member/accuracy")] == [0, 1, 2]
    assert [e.value for e in events.Scalars("ensemble/nll")] == [pytest.approx(final["nll"])]


def test_evaluate_and_sample_treat_a_bagged_run_as_the_ensemble_of_its_members(bag):
    run_dir, final, _ = bag
    members = member_dirs(run_dir)
    report = json.loads(seqtrain("evaluate", run_dir).stdout)
    assert report == json.loads(seqtrain("evaluate", *members).stdout)
    assert [m["run_dir"] for m in report["members"]] == [str(m) for m in members]
    assert report["ensemble"]["accuracy"] == final["accuracy"] and report["ensemble"]["nll"] == pytest.approx(
        final["nll"]
    )
    text = "the story is somewhat dull and extremely charming"
    alone = [
        json.loads(seqtrain("sample", member, "--text", text).stdout)["probabilities"]["positive"] for member in members
    ]
    together = json.loads(seqtrain("sample", run_dir, "--text", text).stdout)
    assert together["probabilities"]["positive"] == pytest.approx(sum(alone) / 3, abs=2e-4)


def test_a_bagged_run_stopped_mid_member_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    common = ["trainer.bagging=2", "model.dropout=0.2"]
    fit(*common, f"run_dir={tmp_path / 'whole'}")

    real_step, calls = SentimentLoss.__call__, {"n": 0}

    def step_then_sigterm(loss, model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 8:  # member 1's second step
                os.kill(os.getpid(), signal.SIGTERM)
        return real_step(loss, model, batch)

    monkeypatch.setattr(SentimentLoss, "__call__", step_then_sigterm)
    stopped = seqtrain("fit", "recipe=sentiment", *TINY, *common, f"run_dir={tmp_path / 'stopped'}")
    assert stopped.exit_code == 130
    assert f"resume with: seqtrain fit recipe=sentiment trainer.resume={tmp_path / 'stopped'}\n" in stopped.stderr
    monkeypatch.setattr(SentimentLoss, "__call__", real_step)
    resumed = seqtrain("fit", "recipe=sentiment", f"trainer.resume={tmp_path / 'stopped'}")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from step 6" in resumed.stderr and "resumed from step 2" in resumed.stderr  # member 0 was done
    for i in range(2):
        whole = checkpoint.load(tmp_path / "whole" / "members" / str(i) / "checkpoints" / "last.pt")["model"]
        again = checkpoint.load(tmp_path / "stopped" / "members" / str(i) / "checkpoints" / "last.pt")["model"]
        assert whole.keys() == again.keys() and all(torch.equal(v, again[k]) for k, v in whole.items())


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["recipe=sentiment", "trainer.bagging=0"],
            "trainer.bagging must be the number of members, at least 2, auto or null; got 0",
        ),
        (
            ["recipe=sentiment", "trainer.bagging=-3"],
            "trainer.bagging must be the number of members, at least 2, auto or null; got -3",
        ),
        (
            ["recipe=speech", "trainer.bagging=1"],
            "trainer.bagging must be the number of members, at least 2, auto or null; got 1",
        ),
        (
            ["recipe=char_lm", "trainer.bagging=3"],
            "trainer.bagging averages class probabilities, so only a classifier recipe's runs can be bagged; char_lm "
            "is not one",
        ),
        (["recipe=seq2seq", "trainer.bagging=3"], "seq2seq is not one"),
        (
            ["recipe=sentiment", "trainer.bagging=3", "trainer.bagging_resample=half"],
            "trainer.bagging_resample must be bootstrap or none, got 'half'",
        ),
    ],
)
def test_bad_bagging_is_one_line_exit_2_and_creates_nothing(tmp_path, args, message):
    result = seqtrain("fit", *args, f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_bagged_run_is_resumed_and_fine_tuned_from_as_a_whole_or_refused_in_one_line(bag, tmp_path):
    run_dir, _, _ = bag
    for args, message in [
        (
            [f"trainer.resume={run_dir / 'members' / '1'}"],
            f"is a member of the bagged run {run_dir}, which resumes as a whole: trainer.resume={run_dir}",
        ),
        ([f"trainer.resume={run_dir}", "trainer.bagging=4"], "trainer.bagging cannot change when a run resumes"),
        (
            [f"trainer.resume={run_dir}", "trainer.bagging_resample=none"],
            "trainer.bagging_resample cannot change when a run resumes",
        ),
        (
            [f"trainer.init_from={run_dir}", f"run_dir={tmp_path / 'new'}"],
            f"start from one member, e.g. trainer.init_from={run_dir / 'members' / '0'}",
        ),
        (
            ["trainer.bagging=2", f"trainer.init_from={run_dir / 'members' / '0'}"],
            "does not combine with trainer.init_from",
        ),
    ]:
        result = seqtrain("fit", "recipe=sentiment", *args)
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_bagged_run_exports_each_member_and_the_export_predicts_as_the_ensemble(bag, tmp_path):
    run_dir, _, _ = bag
    out = tmp_path / "export"
    result = seqtrain("export", run_dir, "--format", "torchscript", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "members").iterdir()) == ["0", "1", "2"]
    assert all((out / "members" / i / "manifest.json").is_file() for i in "012")
    text = "the story is somewhat dull and extremely charming"
    exported = json.loads(seqtrain("sample", out, "--text", text).stdout)["probabilities"]
    original = json.loads(seqtrain("sample", run_dir, "--text", text).stdout)["probabilities"]
    assert exported == pytest.approx(original, abs=1e-6)


def fake_member(bag: Path, i: int, elapsed: float, max_time: float) -> None:
    """A member dir as far as the budget planner reads it: its config and its last checkpoint's clock."""
    member = bag / "members" / str(i)
    (member / "checkpoints").mkdir(parents=True)
    (member / "config.yaml").write_text("recipe: sentiment\n")
    (member / "overrides.yaml").write_text(f"- trainer.max_time={max_time}\n")
    torch.save(
        {"format_version": 1, "recipe": "sentiment", "trainer": {"elapsed": elapsed}},
        member / "checkpoints" / "last.pt",
    )


def test_auto_bagging_shares_the_time_left_among_members_as_long_as_the_first(tmp_path):
    cfg = TrainerConfig(max_time=1000, bagging="auto")
    bag = RunDir(tmp_path / "bag")
    assert runs.member_budget(cfg, bag, 0, started=False) == 1000  # the first runs as a run without bagging would
    fake_member(bag.path, 0, elapsed=400, max_time=1000)  # early-stopped after 400 s
    assert runs.member_budget(cfg, bag, 1, started=False) == 300  # 600 s left: two more members (300 >= 0.75 x 400)
    fake_member(bag.path, 1, elapsed=100, max_time=300)  # stopped early: its rest goes to those after it
    assert runs.member_budget(cfg, bag, 2, started=False) == 500  # 500 s left, one member (two would get < 300)
    fake_member(bag.path, 2, elapsed=500, max_time=500)
    assert runs.member_budget(cfg, bag, 3, started=False) == 0  # spent
    assert runs.member_budget(cfg, bag, 1, started=True) == 300  # a resumed member keeps the budget it was given
    lone = RunDir(tmp_path / "lone")
    fake_member(lone.path, 0, elapsed=1000, max_time=1000)  # the budget, not early stopping, ended the first
    assert runs.member_budget(cfg, lone, 1, started=False) == 0
    fixed = TrainerConfig(max_time=1000, bagging=4)
    assert [runs.member_budget(fixed, bag, i, started=False) for i in range(5)] == [250, 250, 250, 250, 0]


@pytest.mark.slow
def test_auto_bagging_trains_members_until_the_time_budget_is_spent_and_acts_as_one_ensemble(tmp_path):
    run_dir = tmp_path / "bag"
    final = fit(
        "trainer.bagging=auto",
        "trainer.max_steps=null",
        "trainer.max_time=8",
        "trainer.val_every_steps=2",
        "trainer.early_stopping.patience=1",
        "trainer.early_stopping.monitor=loss",
        "trainer.early_stopping.mode=min",
        "trainer.early_stopping.min_delta=10",  # no validation after the first improves: each member stops at once
        f"run_dir={run_dir}",
    )
    members = member_dirs(run_dir)
    assert len(final["members"]) == len(members) >= 2
    clocks = [checkpoint.load(m / "checkpoints" / "last.pt")["trainer"]["elapsed"] for m in members]
    budgets = [checkpoint.load(m / "checkpoints" / "last.pt")["config"]["trainer"]["max_time"] for m in members]
    assert (
        budgets[0] == 8 and all(b < 8 for b in budgets[1:]) and sum(clocks) <= 8 + len(members)
    )  # one step's slack each
    report = json.loads(seqtrain("evaluate", run_dir).stdout)
    assert report["ensemble"]["accuracy"] == final["accuracy"] and len(report["members"]) == len(members)
    assert json.loads(seqtrain("sample", run_dir, "--text", "a moving film").stdout)["label"] in (
        "positive",
        "negative",
    )
