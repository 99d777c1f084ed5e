"""`seqtrain tune` end to end: a small study on a tiny corpus (trials, the best, best.json, pruning),
workers sharing one study on SQLite and on a real PostgreSQL server, a worker killed mid-trial, and
bad input."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import seqtrain, tiny_overrides
from seqtrain.config import compose
from seqtrain.study_report import load

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),  # retry_history and co.
    pytest.mark.slow,  # studies of several trials, a PostgreSQL server
]
SPACE = ["optim.lr=choice(1e-2, 1e-7)", "model.dropout=interval(0.0, 0.2)"]


def tune_args(corpus: Path, study_dir: Path, *extra: str, steps: int = 20) -> list[str]:
    return [
        "tune",
        "recipe=char_lm",
        *tiny_overrides(corpus, f"trainer.max_steps={steps}", "trainer.val_every_steps=5"),
        f"run_dir={study_dir}",
        *SPACE,
        *extra,
    ]


def start_worker(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "seqtrain", *args], cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def trained_by(stderr: str) -> list[int]:
    """The trials a worker started, from its `trial N: key=value ...` lines."""
    return [
        int(line.split()[1].rstrip(":"))
        for line in stderr.splitlines()
        if line.startswith("trial ") and line.split()[1].endswith(":")
    ]


@pytest.fixture(scope="module")
def small_study(corpus, tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("tune") / "study"
    result = seqtrain(*tune_args(corpus, study_dir, "--trials", "4", "--prune-after", "1"))
    assert result.exit_code == 0, result.output
    return study_dir, result


def test_a_study_runs_its_trials_as_run_dirs_and_reports_the_best(small_study):
    study_dir, result = small_study
    trials = load(study_dir).get_trials()
    assert len(trials) == 4 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:
        for name in ("config.yaml", "overrides.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl"):
            assert (study_dir / str(t.number) / name).is_file()
    best = json.loads((study_dir / "best.json").read_text())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert best["value"] == min(t.value for t in complete) and best["metric"] == "loss"
    assert f"best: trial {best['trial']}, loss" in result.stderr and best["command"] in result.stderr
    for name in ("history", "importances", "parallel_coordinates"):
        assert (study_dir / f"{name}.png").stat().st_size > 1000
    assert "pruned" in result.stdout and str(study_dir / str(best["trial"])) in result.stdout  # the table


def test_best_json_reproduces_the_best_trial_s_config(small_study):
    study_dir, _ = small_study
    best = json.loads((study_dir / "best.json").read_text())
    assert best["command"].startswith("seqtrain fit recipe=char_lm ")
    trial_config = yaml.safe_load((study_dir / str(best["trial"]) / "config.yaml").read_text())
    again = compose("char_lm", best["overrides"]).resolved
    assert {**again, "run_dir": None} == {**trial_config, "run_dir": None}


def test_a_pruned_trial_stops_at_that_validation_keeps_its_checkpoint_and_says_so(small_study):
    study_dir, result = small_study
    pruned = [t for t in load(study_dir).get_trials() if t.state == TrialState.PRUNED]
    assert pruned, "the seeded study prunes its 1e-7 trials after the first 1e-2 trial"
    for t in pruned:
        steps = [
            json.loads(line)["step"] for line in (study_dir / str(t.number) / "metrics.jsonl").read_text().splitlines()
        ]
        assert max(steps) < 20 and (study_dir / str(t.number) / "checkpoints" / "last.pt").is_file()
        assert f"trial {t.number} pruned" in result.stderr
    assert "finished: pruned by the median pruner at validation 1" in result.stderr


def test_every_trial_logs_its_values_and_final_metrics_for_tensorboard_s_hparams(small_study):
    study_dir, _ = small_study
    events = EventAccumulator(str(study_dir / "0"))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert {"hparams/loss", "hparams/best_loss"} <= set(events.Tags()["scalars"])


def test_report_prints_a_study_again_without_training(small_study):
    study_dir, first = small_study
    result = seqtrain("tune", "--report", study_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout == first.stdout  # the table
    assert len(load(study_dir).get_trials()) == 4


def run_workers(args: list[str], cwd: Path, count: int = 2) -> list[subprocess.CompletedProcess]:
    workers = [start_worker(args, cwd) for _ in range(count)]
    outputs = [w.communicate(timeout=240) for w in workers]
    return [subprocess.CompletedProcess(w.args, w.returncode, out, err) for w, (out, err) in zip(workers, outputs)]


def assert_shared_exactly(study: optuna.Study, done: list[subprocess.CompletedProcess], trials: int) -> None:
    for worker in done:
        assert worker.returncode == 0, worker.stderr[-3000:]
    started = [trained_by(worker.stderr) for worker in done]
    assert not set(started[0]) & set(started[1]), started  # no trial trained twice
    finished = [t for t in study.get_trials() if t.state.is_finished() and not t.user_attrs.get("surplus")]
    assert len(finished) == trials and sorted(t.number for t in finished) == sorted(sum(started, []))


def test_two_workers_on_one_sqlite_study_run_exactly_the_trials_it_asks_for(corpus, tmp_path):
    args = [
        *tune_args(
            corpus,
            tmp_path / "study",
            "--trials",
            "3",
            "--study",
            "shared",
            "--heartbeat",
            "1",
            "--pruner",
            "none",
            steps=10,
        )
    ]
    done = run_workers(args, tmp_path)
    assert_shared_exactly(load(tmp_path / "study"), done, 3)


def test_a_killed_worker_s_trial_fails_by_its_heartbeat_and_runs_again(corpus, tmp_path):
    args = [
        "tune",
        "recipe=char_lm",
        *tiny_overrides(corpus, "trainer.max_steps=300", "trainer.val_every_steps=20", "trainer.val_max_batches=1"),
        f"run_dir={tmp_path / 'study'}",
        *SPACE,
        "--trials",
        "2",
        "--study",
        "killed",
        "--heartbeat",
        "1",
        "--pruner",
        "none",
    ]
    doomed = start_worker(args, tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until its first trial has reported a validation
        time.sleep(0.2)
        if (tmp_path / "study" / "study.json").is_file() and any(
            t.state == TrialState.RUNNING and t.intermediate_values for t in load(tmp_path / "study").get_trials()
        ):
            break
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    [survivor] = run_workers(args, tmp_path, count=1)
    assert survivor.returncode == 0, survivor.stderr[-3000:]
    trials = load(tmp_path / "study").get_trials()
    [lost] = [t for t in trials if t.number == 0]
    [retry] = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert lost.state == TrialState.FAIL and retry.state == TrialState.COMPLETE and retry.params == lost.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert f"fail, retried as {retry.number}" in survivor.stdout


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL server of its own on 127.0.0.1 and a free port, for as long as the test runs. The
    server refuses to run as root, so as root it runs as the `postgres` user in a dir that user owns."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        pytest.skip("no PostgreSQL server binaries (Debian's postgresql package; .ci/run installs it)")
    pytest.importorskip("psycopg", reason="psycopg (the dev extra) talks to PostgreSQL")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="seqtrain-pg-"))
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root and there is no postgres user to run the server as")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(binaries[-1])
    run = lambda *command: subprocess.run([*as_user, *command], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "seqtrain", "--auth=trust", "-E", "UTF8")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data / "db"),
        "-l",
        str(data / "log"),
        "-w",
        "start",
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
    )
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "seqtrain", "tune")
        yield f"postgresql://seqtrain@127.0.0.1:{port}/tune"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_a_study_on_a_postgresql_server(corpus, tmp_path, postgres):
    args = [
        *tune_args(
            corpus,
            tmp_path / "study",
            "--trials",
            "3",
            "--study",
            "pg",
            "--storage",
            postgres,
            "--heartbeat",
            "1",
            steps=10,
        )
    ]
    done = run_workers(args, tmp_path)
    assert_shared_exactly(optuna.load_study(study_name="pg", storage=postgres), done, 3)
    assert json.loads((tmp_path / "study" / "study.json").read_text())["storage"] == postgres


@pytest.mark.parametrize(
    "space, options, message",
    [
        (["optim.lrr=interval(1e-4, 1e-2)"], [], "unknown key optim.lrr; valid keys there: name, lr,"),
        (["model.cell=interval(0, 1)"], [], "model.cell is a string field: search its values with choice(...)"),
        (["optim=interval(0, 1)"], [], "optim is a config group: search its options with choice(...)"),
        (["model.dropout=interval(0.4, 0.1)"], [], "model.dropout: interval(0.4, 0.1) is empty"),
        (
            ["model.hidden_size=interval(16, 64)"],
            [],
            "model.hidden_size is an integer: search it with int(interval(...))",
        ),
        (["optim.lr=3e-3"], [], "nothing to search"),
        (SPACE, ["--sampler", "grid"], "model.dropout: --sampler grid needs a discrete space"),
        (
            SPACE,
            ["--storage", "postgresql://nobody@127.0.0.1:1/none"],
            "cannot open the study storage postgresql://nobody@127.0.0.1:1/none",
        ),
        (
            SPACE,
            ["--storage", "sqlite:////no/such/dir/study.db"],
            "cannot open the study storage sqlite:////no/such/dir/study.db",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(space, options, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = seqtrain("tune", "recipe=char_lm", "trainer.max_steps=5", *space, *options)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bagged_trial_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = seqtrain("tune", "recipe=sentiment", "trainer.bagging=3", "optim.lr=interval(1e-4, 1e-2)")
    assert result.exit_code == 2 and result.stderr.startswith("error: a trial is one run: drop trainer.bagging")
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_dir_that_holds_no_study_is_one_line(tmp_path):
    result = seqtrain("tune", "--report", tmp_path)
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path} is not a study dir (no study.json)\n"


def test_a_worker_that_loses_the_race_to_create_sqlite_tables_opens_the_study_on_retry(monkeypatch):
    from sqlalchemy.exc import OperationalError

    from seqtrain import tune

    attempts = []

    def storage(url, **kwargs):
        attempts.append(url)
        if len(attempts) == 1:  # what SQLite says when another worker created the tables first
            raise OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return "opened"

    monkeypatch.setattr(tune, "RDBStorage", storage)
    monkeypatch.setattr(tune.time, "sleep", lambda s: None)
    assert tune.open_storage("sqlite:///study.db", None) == "opened" and len(attempts) == 2
