"""What the commands do with run dirs: fit a config (one run, or a bagged one of several members), sweep,
evaluate, sample.

Classifier recipes (`seqtrain.recipes.classifier.ClassifierRecipe`) are evaluated and sampled generically,
alone or as an ensemble, by seqtrain/ensembles.py; other recipes evaluate with their own step and sample
their own way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from seqtrain import checkpoint, distributed, ensembles, monitor, recipes, trainer
from seqtrain.config import RunConfig, compose, expand_sweeps, load_run_config, saved_overrides
from seqtrain.data.sampler import bootstrap
from seqtrain.errors import ConfigError, Interrupted, SeqtrainError
from seqtrain.evaluation import score
from seqtrain.exported import home as export_home
from seqtrain.overrides import Overrides
from seqtrain.recipe import Prepared, Recipe, SampleOptions
from seqtrain.resume import seed_everything
from seqtrain.rundir import RunDir, load_checkpoint, load_model
from seqtrain.task import SizedDataset, Task
from seqtrain.trainer_config import TrainerConfig


def fit(
    cfg: RunConfig, console: Console, on_validation: trainer.OnValidation | None = None
) -> tuple[Path, dict[str, Any]]:
    """Train one run, as one process or as every rank of a distributed one; with trainer.bagging, its
    members one after another (see `_fit_bagged`). Data, model, batching and the monitored metric are
    checked before the run dir exists, so bad input leaves nothing behind. `on_validation` is passed to
    the trainer (see `trainer.fit`), for every member of a bagged run."""
    with distributed.session(cfg.trainer.device) as world:
        return _fit(cfg, console if world.main else Console(quiet=True), world, on_validation)


def _fit(
    cfg: RunConfig, console: Console, world: distributed.World, on_validation: trainer.OnValidation | None
) -> tuple[Path, dict[str, Any]]:
    recipe = recipes.get(cfg.recipe)
    prepared, source = _prepare(cfg, recipe)
    if cfg.trainer.bagging:
        return _fit_bagged(cfg, recipe, prepared, console, world, on_validation)
    return _train(cfg, recipe, prepared, prepared.splits["train"], console, world, on_validation, source)


def dry_run(cfg: RunConfig) -> dict[str, Any]:
    """What `fit` would do, checked as `fit` checks it (the data read, the model built, the batching and the
    monitored metric tried on a validation batch, the run dir free), with nothing created or trained."""
    recipe = recipes.get(cfg.recipe)
    prepared, _ = _prepare(cfg, recipe)
    task, sampler, coverage = _task(cfg, recipe, prepared, prepared.splits["train"])
    if cfg.trainer.resume:
        where = cfg.trainer.resume
    else:
        where = str(RunDir.free(cfg.run_dir) if cfg.run_dir else f"runs/{cfg.recipe}/<YYYYmmdd-HHMMSS>")
    return {
        "dry_run": True,
        "run_dir": where,
        "recipe": cfg.recipe,
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "train_examples": len(prepared.splits["train"]),
        "valid_examples": len(prepared.splits["valid"]),
        "batches_per_epoch": len(sampler),
        "members": cfg.trainer.bagging,
        **{f"pretrained_{name}": report.word_share for name, report in coverage.items()},
    }


def _prepare(cfg: RunConfig, recipe: Recipe) -> tuple[Prepared, dict[str, Any] | None]:
    """The recipe's training and validation splits, read through the vocabulary of the run resumed or of
    the run whose weights start this one; that run's checkpoint too for init_from."""
    vocab, source = None, None
    if cfg.trainer.resume:
        run_dir = RunDir(cfg.trainer.resume)
        if bag := run_dir.bag():
            raise ConfigError(
                f"{run_dir.path} is a member of the bagged run {bag.path}, which resumes as a whole: "
                f"trainer.resume={bag.path}"
            )
        vocab = load_checkpoint(run_dir.members()[0].path, cfg.recipe, prefer="last")["vocab"]
    elif cfg.trainer.init_from:
        source = init_source(RunDir(cfg.trainer.init_from), cfg.recipe)
        vocab = source["vocab"]  # as fine-tuning keeps a pretrained model's tokenizer: token ids must mean the same
    return recipe.prepare(cfg.data, vocab, ("train", "valid")), source


def _train(
    cfg: RunConfig,
    recipe: Recipe,
    prepared: Prepared,
    train_set: SizedDataset,
    console: Console,
    world: distributed.World,
    on_validation: trainer.OnValidation | None,
    source: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, float]]:
    """Train one model on `train_set`, in a new run dir or in the one trainer.resume continues."""
    task, sampler, coverage = _task(cfg, recipe, prepared, train_set)
    resume_from = _resume_state(cfg) if cfg.trainer.resume else None
    run_dir = _run_dir(cfg, prepared.vocab, world)
    console.print(f"run dir: {run_dir.path}  ({sum(p.numel() for p in task.model.parameters()):,} parameters)")
    if coverage:
        if world.main:
            (run_dir.path / "pretrained.json").write_text(
                json.dumps({k: c.to_dict() for k, c in coverage.items()}, indent=1)
            )
        for name, report in coverage.items():
            console.print(f"{name}: {report.line()}")
    if source is not None:
        loaded, new = load_matching(task.model, source["model"])
        if world.main:
            (run_dir.path / "init_from.json").write_text(
                json.dumps({"from": cfg.trainer.init_from, "loaded": loaded, "new": new}, indent=1)
            )
        console.print(
            f"init_from {cfg.trainer.init_from}: loaded {len(loaded)} tensors ({', '.join(loaded) or 'none'}); "
            f"new {len(new)} ({', '.join(new) or 'none'})"
        )
    meta = {"recipe": cfg.recipe, "config": cfg.resolved, "vocab": prepared.vocab}
    try:
        metrics = trainer.fit(
            task,
            train_set,
            prepared.splits["valid"],
            settings(cfg),
            run_dir.path,
            meta,
            sampler=sampler,
            resume_from=resume_from,
            on_validation=on_validation,
            console=console,
        )
    except Interrupted as e:
        raise Interrupted(
            f"{e}; resume with: seqtrain fit recipe={cfg.recipe} trainer.resume={(run_dir.bag() or run_dir).path}"
        ) from e
    return run_dir.path, metrics


def settings(cfg: RunConfig) -> trainer.Settings:
    return trainer.Settings(cfg.trainer, cfg.optim, cfg.sched, cfg.data)


def _task(
    cfg: RunConfig, recipe: Recipe, prepared: Prepared, train_set: SizedDataset
) -> tuple[Task, Any, dict[str, Any]]:
    """A freshly seeded model as the trainer's task (its embeddings from pretrained vectors unless it resumes),
    the training sampler that preflight checked, and the pretrained vectors' coverage of each table."""
    seed_everything(cfg.trainer.seed)
    model = recipe.build_model(cfg.model, prepared.vocab)
    coverage = {} if cfg.trainer.resume else recipe.load_pretrained(model, cfg.model, prepared)
    task = recipe.task(model, cfg.model, prepared)
    return (
        task,
        trainer.preflight(task, train_set, prepared.splits["valid"], settings(cfg), prepared.shuffle_train),
        coverage,
    )


def _resume_state(cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint trainer.resume continues: last.pt of that run, which must be of this recipe and model."""
    saved = load_checkpoint(Path(cfg.trainer.resume), cfg.recipe, prefer="last")
    checkpoint.check_architecture(saved["config"]["model"], cfg.resolved["model"])
    return saved


def _run_dir(cfg: RunConfig, vocab: dict, world: distributed.World) -> RunDir:
    """Rank 0 makes the run dir (or takes the one resumed) and writes the config and vocabulary there."""
    if world.main:
        run_dir = RunDir(cfg.trainer.resume) if cfg.trainer.resume else RunDir.create(cfg.recipe, cfg.run_dir)
        run_dir.write(cfg.resolved, saved_overrides(cfg), vocab)
    return distributed.broadcast(run_dir if world.main else None)


def _fit_bagged(
    cfg: RunConfig,
    recipe: Recipe,
    prepared: Prepared,
    console: Console,
    world: distributed.World,
    on_validation: trainer.OnValidation | None,
) -> tuple[Path, dict[str, Any]]:
    """trainer.bagging=K or auto: members trained one after another (on every rank), member i an ordinary
    run in members/<i> on bootstrap resample i of the training split, or on the whole split with
    trainer.bagging_resample=none (then only the seed tells members apart). All share the vocabulary, built
    once from the whole split, so their class probabilities average like those of any ensemble. On resume
    every member that has a dir continues in it, so the one interrupted goes on where it stopped and those
    done train no further (or up to a budget raised now); the rest start afresh. Returns the ensemble's
    validation metrics and, under "members", each member's, as `evaluate` reports them."""
    _task(cfg, recipe, prepared, prepared.splits["train"])  # bad input fails before any file is written
    bag = _run_dir(cfg, prepared.vocab, world)
    count = (
        f"{cfg.trainer.members} members"
        if cfg.trainer.members
        else f"members until {cfg.trainer.max_time:g} s are spent"
    )
    console.print(f"bagged run dir: {bag.path}  ({count})")
    started = distributed.broadcast([d.path.name for d in bag.members() if d != bag])  # rank 0's, before it adds any
    i = 0
    while (
        budget := distributed.broadcast(member_budget(cfg.trainer, bag, i, str(i) in started) if world.main else None)
    ) != 0:
        of = f"/{cfg.trainer.members}" if cfg.trainer.members else f" ({budget:.0f} s)" if budget else ""
        console.print(f"[bold]member {i + 1}{of}[/bold]")
        member = member_config(cfg, i, bag.member(i), str(i) in started, budget)
        train_set = prepared.splits["train"]
        if cfg.trainer.bagging_resample == "bootstrap":
            train_set = bootstrap(train_set, cfg.trainer.seed, i)
        _train(member, recipe, prepared, train_set, console, world, on_validation)
        i += 1
    if not world.main:
        return bag.path, {}
    report = evaluate([bag.path], [])
    members, ensemble = [scalars(m) for m in report.get("members", [report])], scalars(report.get("ensemble", report))
    monitor.log_ensemble(bag.path, members, ensemble)
    return bag.path, {**ensemble, "members": members}


AUTO_SHARE = 0.75  # trainer.bagging=auto: a member starts only with at least this share of the first member's time


def member_budget(cfg: TrainerConfig, bag: RunDir, i: int, started: bool) -> float | None:
    """Member i's trainer.max_time, None to keep the run's step or epoch budgets alone, or 0 when member i is
    not to be trained: past K members, or with trainer.bagging=auto when the budget left is too small.

    auto: the first member trains as a run without bagging would, with the whole trainer.max_time, until
    early stopping ends it after t0 seconds (or the budget does: then it is the only member). Each further
    member gets an equal share of the time left, R / n with n = floor(R / (AUTO_SHARE * t0)) members still
    to come, recomputed after every member from the training time they really took (one that stops early
    leaves its rest to the others): so about as many members as took the first one's time fit, none gets
    less than AUTO_SHARE of it, and the budget is spent. A member already started keeps the budget it
    was given (its own overrides.yaml holds it), so a resumed bag continues as it was planned."""
    if cfg.members is not None:
        return 0 if i >= cfg.members else (cfg.max_time / cfg.members if cfg.max_time else None)
    if started:
        return load_run_config(bag.member(i)).trainer.max_time
    assert cfg.max_time is not None  # bagging=auto needs it (TrainerConfig checks)
    if i == 0:
        return cfg.max_time
    spent = [load_checkpoint(bag.member(j).path, prefer="last")["trainer"]["elapsed"] for j in range(i)]
    left = cfg.max_time - sum(spent)
    still = math.floor(left / (AUTO_SHARE * spent[0])) if spent[0] > 0 else 0
    return left / still if still >= 1 else 0


def member_overrides(
    cfg: TrainerConfig, i: int, member_dir: Path, resume: bool, max_time: float | None = None
) -> list[str]:
    """What makes member i of a bagged run a run of its own: its dir, trainer.seed + i (initialisation,
    dropout, batch order), and its share of trainer.max_time (`max_time`; by default the even share of K
    members); step and epoch budgets apply to each member as they stand, so a member trains as long as the
    same command without bagging would."""
    max_time = (
        max_time if max_time is not None else (cfg.max_time / cfg.members if cfg.max_time and cfg.members else None)
    )
    share = {"trainer.max_time": max_time} if max_time else {}
    values = {
        "run_dir": str(member_dir),
        "trainer.resume": str(member_dir) if resume else None,
        "trainer.seed": cfg.seed + i,
        "trainer.bagging": None,
        **share,
    }
    return Overrides().with_values(values).as_list()


def member_config(cfg: RunConfig, i: int, member_dir: RunDir, resume: bool, max_time: float | None) -> RunConfig:
    """Member i's config: the bag's overrides updated by `member_overrides`, composed (its run dir's
    overrides.yaml then re-composes the member alone)."""
    overrides = member_overrides(cfg.trainer, i, member_dir.path, resume, max_time)
    return compose(cfg.recipe, cfg.overrides.updated(Overrides.of(overrides)))


def scalars(report: dict[str, Any]) -> dict[str, float]:
    """The numbers of a classifier report (not its class names or confusion matrix), for logs and fit's last line."""
    return {k: v for k, v in report.items() if isinstance(v, (int, float))}


def sweep(recipe: str, overrides: Overrides, console: Console) -> tuple[Path, list[dict[str, Any]]]:
    """One run per combination, each in its own numbered dir under one sweep dir; a failed run does not
    stop the others. Every combination is composed first, so a bad override fails before any training."""
    combos = expand_sweeps(overrides)
    parent_dir = combos[0].value("run_dir")
    combos = [combo.without("run_dir") for combo in combos]
    for combo in combos:
        compose(recipe, combo)
    swept = [i for i in range(len(combos[0])) if len({c.lines[i] for c in combos}) > 1]
    parent = RunDir.create(recipe, parent_dir)
    results = []
    for i, combo in enumerate(combos):
        label = " ".join(combo.lines[j] for j in swept)
        console.print(f"[bold]sweep run {i + 1}/{len(combos)}[/bold]: {label}")
        result: dict[str, Any] = {"run_dir": str(parent.path / str(i)), "overrides": label}
        try:
            run_dir, result["metrics"] = fit(
                compose(recipe, combo.with_values({"run_dir": str(parent.path / str(i))})), console
            )
            varied = Overrides.of([combo.lines[j] for j in swept])
            monitor.log_hparams(run_dir, {o.key_or_group: o.value() for o in varied.parsed}, result["metrics"])
        except SeqtrainError as e:
            result["error"] = str(e)
            console.print(f"[red]run {i} failed:[/red] {e}")
        results.append(result)
    (parent.path / "sweep.json").write_text(json.dumps(results, indent=2))
    return parent.path, results


def evaluate(paths: list[Path], overrides: list[str] | Overrides) -> dict[str, Any]:
    """Score trained runs on the first run's validation split, or on other data / another split given as
    overrides. Several runs of a classifier recipe are scored alone and as an ensemble."""
    overrides = Overrides.of(overrides)
    if overrides.touches("model"):
        raise ConfigError("evaluate scores the trained model as it is; model.* cannot be overridden")
    cfg = load_run_config(export_home(paths[0]) or paths[0], overrides)  # an export keeps its run's config
    paths = [member.path for path in paths for member in RunDir(path).members()]
    members = [load_model(path) for path in paths]
    recipe, model, state = members[0]
    device = trainer.pick_device(cfg.trainer.device)
    if not recipes.is_classifier(recipe):
        only_one(paths, cfg.recipe)
        prepared = recipe.prepare(cfg.data, state["vocab"], (cfg.split,))
        task = recipe.task(model.to(device), recipe.ModelConfig(**state["config"]["model"]), prepared)
        return recipe.summarize(score(task, task.model, prepared.splits[cfg.split], cfg.data, device))
    return ensembles.evaluate(paths, members, cfg.data, cfg.split, device)


def sample(paths: list[Path], options: SampleOptions, write: Callable[[str], None]) -> None:
    """Generate with one run; or predict with one classifier run or an ensemble, a JSON line per input."""
    paths = [member.path for path in paths for member in RunDir(path).members()]
    members = [load_model(path) for path in paths]
    recipe, model, state = members[0]
    if not recipes.is_classifier(recipe):
        only_one(paths, state["recipe"])
        recipe.sample(model, state["vocab"], options, write)
        return
    ensembles.predict(paths, members, options, write)


def init_source(run_dir: RunDir, recipe: str) -> dict[str, Any]:
    if not run_dir.path.is_dir():
        raise ConfigError(f"trainer.init_from={run_dir.path}: no such run dir")
    if run_dir.is_bagged():
        raise ConfigError(
            f"trainer.init_from={run_dir.path} is a bagged run, whose members' weights do not average into one model; "
            f"start from one member, e.g. trainer.init_from={run_dir.member(0).path}"
        )
    return load_checkpoint(run_dir.path, recipe)


def load_matching(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy the tensors whose names and shapes match into `model`; return (loaded, new) names. A new
    head for other classes, or a pooling the other run did not have, keeps its fresh initialisation."""
    own = model.state_dict()
    loaded = [name for name, tensor in weights.items() if name in own and own[name].shape == tensor.shape]
    model.load_state_dict({name: weights[name] for name in loaded}, strict=False)
    return loaded, [name for name in own if name not in set(loaded)]


def only_one(paths: list[Path], recipe: str) -> None:
    if len(paths) > 1:
        raise ConfigError(f"only runs of a classifier recipe can be ensembled; {recipe} is not one, give one run")
