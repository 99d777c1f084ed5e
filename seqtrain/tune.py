"""`seqtrain tune`: a hyper-parameter search with Optuna over ordinary seqtrain runs.

Each trial is a run dir under the study dir, trained by `runs.fit`; the trainer knows nothing of Optuna
but one callback per validation, through which the pruner stops a hopeless trial as early stopping
would. Optuna keeps the study in a database (SQLite in the study dir, or any SQLAlchemy URL), so
several `seqtrain tune` processes with the same study share its trials: each trial is taken by one
worker, a worker that dies stops beating its heartbeat and its trial is failed and queued again, and
together they run `--trials` trials. The table, best.json and plots are in `seqtrain/study_report.py`.
"""

from __future__ import annotations

import json
import shlex
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError

from seqtrain import checkpoint, monitor, runs, search_space
from seqtrain.config import compose
from seqtrain.errors import ConfigError, Interrupted, SeqtrainError
from seqtrain.overrides import Overrides
from seqtrain.rundir import RunDir

MAX_RETRIES = 2  # a trial that loses its worker this often stays failed: it may be what kills them


@dataclass
class TuneOptions:
    trials: int = 20  # in the whole study: over all its workers and restarts
    study: str | None = None  # None: a new study named by the time
    storage: str | None = None  # None: SQLite in the study dir
    sampler: str = "tpe"  # tpe, random or grid
    pruner: str = "median"  # median, hyperband or none
    prune_after: int = 5  # median: trials that finish before any is pruned
    seed: int = 0  # the sampler of the worker that creates the study
    heartbeat: int = 60  # seconds; a trial silent for twice this long lost its worker
    timeout: float | None = None  # seconds after which this worker starts no new trial


class TrialFailed(Exception):
    """This trial failed (its error is kept with it); the study goes on."""


def tune(recipe: str, overrides: Overrides | list[str], options: TuneOptions, console: Console) -> Path:
    """Run trials of the study until it holds `options.trials`; returns the study dir. Everything a
    user can get wrong is checked before the study dir or its database is made."""
    overrides = Overrides.of(overrides)
    plain, params = search_space.parse(overrides)
    study_dir_given = plain.value("run_dir")
    plain = plain.without("run_dir")
    first = search_space.check(recipe, plain, params)
    goal = first.trainer.early_stopping
    sampler = _sampler(options, params)
    trials = min(options.trials, _grid_size(params)) if options.sampler == "grid" else options.trials
    name = options.study or time.strftime("%Y%m%d-%H%M%S")
    study_dir = Path(study_dir_given if study_dir_given else Path("runs") / recipe / f"tune-{name}")
    url = options.storage or f"sqlite:///{(study_dir / 'study.db').absolute()}"
    identity = {
        "recipe": recipe,
        "overrides": sorted(overrides.without("run_dir")),
        "metric": goal.monitor,
        "mode": goal.mode,
    }
    with quiet_optuna():
        if not options.storage:
            study_dir.mkdir(parents=True, exist_ok=True)  # for SQLite's file; a named database is reached first
        storage = open_storage(url, options.heartbeat)
        study_dir.mkdir(parents=True, exist_ok=True)
        study = _open_study(storage, name, identity, sampler, _pruner(options))
        (study_dir / "study.json").write_text(json.dumps({"study": name, "storage": _shown(url)}, indent=1))
        command = _continue_command(recipe, overrides, options, name)
        objective = Objective(
            study, study_dir, recipe, plain, params, goal.monitor, options.pruner, trials, command, console
        )
        _work(study, objective, trials, options, console)
    return study_dir


def _continue_command(recipe: str, overrides: Overrides, options: TuneOptions, name: str) -> str:
    """This worker's command line, naming its study: it joins the study where it stands."""
    args, defaults = ["seqtrain", "tune", f"recipe={recipe}", *overrides, "--study", name], TuneOptions()
    for f in fields(TuneOptions):
        value = getattr(options, f.name)
        if f.name != "study" and value != getattr(defaults, f.name):
            args += [f"--{f.name.replace('_', '-')}", _shown(value) if f.name == "storage" else str(value)]
    return shlex.join(args)


def open_storage(url: str, heartbeat: int | None) -> RDBStorage:
    """The study's database; SQLite waits for a busy database rather than failing when workers write at
    once. Workers that start together on a new database race to create its tables: the losers try again."""
    for _ in range(3):
        try:
            return RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                heartbeat_interval=heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
                if heartbeat
                else None,
            )
        except (SQLAlchemyError, ImportError, ValueError) as e:
            error = e
            # PostgreSQL reports the lost race as a duplicate or missing table, SQLite as a table that exists
            if not isinstance(e, (IntegrityError, ProgrammingError)) and "already exists" not in str(e):
                break
            time.sleep(1)
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ConfigError(f"cannot open the study storage {_shown(url)}: {reason}") from error


class Objective:
    """One trial: draw its values, train its run dir, report each validation to the pruner, and return
    the monitored metric of its best checkpoint (the value the run keeps)."""

    def __init__(
        self,
        study: optuna.Study,
        study_dir: Path,
        recipe: str,
        plain: Overrides,
        params: list[search_space.Param],
        metric: str,
        pruner: str,
        trials: int,
        command: str,
        console: Console,
    ):
        self.study, self.study_dir, self.recipe, self.plain, self.params = study, study_dir, recipe, plain, params
        self.metric, self.pruner, self.trials, self.command, self.console = metric, pruner, trials, command, console

    def __call__(self, trial: optuna.Trial) -> float:
        if self._surplus(trial):
            trial.set_user_attr("surplus", True)
            raise TrialFailed("another worker took the last place of the study at the same moment")
        drawn = [p.suggest(trial) for p in self.params]
        run_dir = self.study_dir / str(trial.number)
        trial.set_user_attr("overrides", [*self.plain, *drawn])
        trial.set_user_attr("run_dir", str(run_dir))
        self.console.print(f"[bold]trial {trial.number}[/bold]: {' '.join(drawn)}")
        validations, pruned = 0, None

        def on_validation(step: int, metrics: dict[str, float]) -> str | None:
            nonlocal validations, pruned
            validations += 1  # the pruner's step: comparable between trials that take steps of other sizes
            trial.report(metrics[self.metric], validations)
            if trial.should_prune():
                value = metrics[self.metric]
                pruned = f"pruned by the {self.pruner} pruner at validation {validations} ({self.metric} {value:.4g})"
            return pruned

        try:
            trial_overrides = (self.plain + drawn).with_values({"run_dir": str(run_dir)})
            _, metrics = runs.fit(compose(self.recipe, trial_overrides), self.console, on_validation)
        except Interrupted as e:
            RetryHeartbeatStaleTrialCallback()(self.study, self._frozen(trial))
            raise Interrupted(
                f"{e}; or continue the study, where trial {trial.number} runs again, with: {self.command}"
            ) from e
        except SeqtrainError as e:
            trial.set_user_attr("error", str(e))
            raise TrialFailed(str(e)) from e
        best = checkpoint.load(RunDir(run_dir).checkpoint("best.pt"))["metrics"][self.metric]
        trial.set_user_attr("best", best)
        trial.set_user_attr("metrics", metrics)
        monitor.log_hparams(run_dir, trial.params, {**metrics, f"best_{self.metric}": best})
        if pruned:
            raise optuna.TrialPruned(pruned)
        return best

    def _surplus(self, trial: optuna.Trial) -> bool:
        """A new trial when the study's places are taken: two workers saw the last one free at once."""
        trials = self.study.get_trials(deepcopy=False)
        if RetryHeartbeatStaleTrialCallback.retried_trial_number(self._frozen(trial, trials)) is not None:
            return False  # a retry takes the place of the trial it repeats
        return sum(t.number < trial.number for t in places(trials)) >= self.trials

    def _frozen(self, trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> FrozenTrial:
        return next(t for t in trials or self.study.get_trials(deepcopy=False) if t.number == trial.number)


def places(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that take one of the study's places: all but those a retry repeats and the surplus."""
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]


def _work(study: optuna.Study, objective: Objective, trials: int, options: TuneOptions, console: Console) -> None:
    """Take trials until the study has `trials` finished ones. While the last ones run on other workers,
    wait: one of them may lose its worker, and its retry is then run here."""
    deadline = None if options.timeout is None else time.monotonic() + options.timeout

    def announce(_: optuna.Study, t: FrozenTrial) -> None:
        if not t.user_attrs.get("surplus"):
            value = t.user_attrs.get("best")
            detail = f"{objective.metric} {value:.4g}" if value is not None else t.user_attrs.get("error", "")
            console.print(f"trial {t.number} {t.state.name.lower()}: {detail}")

    while deadline is None or time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        taken = places(study.get_trials(deepcopy=False))
        if sum(t.state.is_finished() for t in taken) >= trials:
            return
        if len(taken) < trials or any(t.state == TrialState.WAITING for t in taken):
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[announce])
        else:
            time.sleep(min(options.heartbeat, 5))  # soon after the last trial ends, this worker ends too
    console.print(f"--timeout {options.timeout:g}s reached: this worker starts no more trials")


def _open_study(
    storage: RDBStorage,
    name: str,
    identity: dict,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or join it when it exists. A joining worker draws with its own unseeded sampler
    (with the creator's seed it would draw the creator's values), and must search the same space."""
    direction = "maximize" if identity["mode"] == "max" else "minimize"
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner
        )
    except DuplicatedStudyError:
        sampler.reseed_rng()
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    started = study.user_attrs.get("seqtrain")
    if started is None:
        study.set_user_attr("seqtrain", identity)
    elif started != identity:
        raise ConfigError(
            f"study {name} was started with other settings ({_describe(started)}); "
            f"give the same ones, or another --study"
        )
    return study


def _describe(identity: dict) -> str:
    overrides = " ".join(identity["overrides"])
    return f"recipe={identity['recipe']} {overrides}, objective {identity['mode']} {identity['metric']}"


def _sampler(options: TuneOptions, params: list[search_space.Param]) -> optuna.samplers.BaseSampler:
    if options.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in params}, seed=options.seed)
    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=options.seed)
    return optuna.samplers.TPESampler(seed=options.seed)


def _pruner(options: TuneOptions) -> optuna.pruners.BasePruner:
    if options.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if options.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=options.prune_after)


def _grid_size(params: list[search_space.Param]) -> int:
    size = 1
    for p in params:
        size *= len(p.grid())
    return size


def _shown(url: str) -> str:
    """The URL without its password, for messages and commands."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """seqtrain says what happens to each trial itself, in one line: Optuna's own log would repeat it
    with tracebacks, and its ExperimentalWarnings are about APIs seqtrain pins a version of."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
