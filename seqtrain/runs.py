"""What the commands do with run dirs: fit a config (one run, or a bagged one of several members), sweep,
load a trained model, evaluate, sample.

Classifier recipes (see `recipes.Classifier`) are evaluated and sampled generically, alone or as an
ensemble, by `seqtrain/ensembles.py`; other recipes evaluate with their own step and sample their own way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

from seqtrain import checkpoint, distributed, ensembles, exported, monitor, recipes, trainer
from seqtrain.config import RunConfig, compose, expand_sweeps, load_run_config, new_run_dir, override_values, run_recipe, save_run_config
from seqtrain.data.sampler import BucketBatchSampler, bootstrap
from seqtrain.errors import CheckpointError, ConfigError, Interrupted, SeqtrainError
from seqtrain.metrics import confusion_image
from seqtrain.recipes import SampleOptions
from seqtrain.trainer_config import TrainerConfig

MEMBERS = "members"  # a bagged run's members/0, members/1, ...: each an ordinary run dir


def fit(cfg: RunConfig, console: Console, on_validation: trainer.OnValidation | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one run, as one process or as every rank of a distributed one; with trainer.bagging, its
    members one after another (see `_fit_bagged`). Data, model, batching and the monitored metric are
    checked before the run dir exists, so bad input leaves nothing behind. `on_validation` is passed to
    the trainer (see `trainer.fit`), for every member of a bagged run."""
    with distributed.session(cfg.trainer.device) as world:
        return _fit(cfg, console if world.main else Console(quiet=True), world, on_validation)


def _fit(cfg: RunConfig, console: Console, world: distributed.World, on_validation: trainer.OnValidation | None) -> tuple[Path, dict[str, Any]]:
    module = recipes.get(cfg.recipe)
    vocab, source = None, None
    if cfg.trainer.resume:
        run_dir = Path(cfg.trainer.resume)
        if bag := bag_of(run_dir):
            raise ConfigError(f"{run_dir} is a member of the bagged run {bag}, which resumes as a whole: trainer.resume={bag}")
        vocab = checkpoint.load(checkpoint.find(member_run_dirs(run_dir)[0], prefer="last"), recipe=cfg.recipe)["vocab"]
    elif cfg.trainer.init_from:
        source = init_source(Path(cfg.trainer.init_from), cfg.recipe)
        vocab = source["vocab"]  # as fine-tuning keeps a pretrained model's tokenizer: token ids must mean the same
    prepared = module.prepare(cfg.data, vocab, ("train", "valid"))
    if cfg.trainer.bagging:
        return _fit_bagged(cfg, module, prepared, console, world, on_validation)
    return _train(cfg, module, prepared, prepared.splits["train"], console, world, on_validation, source)


def _train(cfg: RunConfig, module: Any, prepared: recipes.Prepared, train_set: trainer.SizedDataset, console: Console,
           world: distributed.World, on_validation: trainer.OnValidation | None, source: dict[str, Any] | None = None) -> tuple[Path, dict[str, float]]:
    """Train one model on `train_set`, in a new run dir or in the one trainer.resume continues."""
    task, sampler = _task(cfg, module, prepared, train_set)
    run_dir = _run_dir(cfg, prepared.vocab, world)
    console.print(f"run dir: {run_dir}  ({sum(p.numel() for p in task.model.parameters()):,} parameters)")
    if source is not None:
        loaded, new = load_matching(task.model, source["model"])
        if world.main:
            (run_dir / "init_from.json").write_text(json.dumps({"from": cfg.trainer.init_from, "loaded": loaded, "new": new}, indent=1))
        console.print(f"init_from {cfg.trainer.init_from}: loaded {len(loaded)} tensors ({', '.join(loaded) or 'none'}); "
                      f"new {len(new)} ({', '.join(new) or 'none'})")

    def log_samples(m: torch.nn.Module, writer: Any, step: int, stats: dict[str, torch.Tensor]) -> None:
        module.log_samples(m, prepared.vocab, writer, step)
        if recipes.is_classifier(module):  # the validation confusion matrix, as a picture
            image = confusion_image(stats["confusion"], module.classes(prepared.vocab))
            writer.add_image("confusion", image, step, dataformats="HWC")

    task.log_samples = log_samples
    meta = {"recipe": cfg.recipe, "config": cfg.resolved, "vocab": prepared.vocab}
    try:
        metrics = trainer.fit(
            task, train_set, prepared.splits["valid"], cfg.trainer, cfg.optim, cfg.sched,
            cfg.data, run_dir, meta, console, shuffle_train=prepared.shuffle_train, sampler=sampler, on_validation=on_validation,
        )
    except Interrupted as e:
        raise Interrupted(f"{e}; resume with: seqtrain fit recipe={cfg.recipe} trainer.resume={bag_of(run_dir) or run_dir}") from e
    return run_dir, metrics


def _task(cfg: RunConfig, module: Any, prepared: recipes.Prepared, train_set: trainer.SizedDataset) -> tuple[trainer.Task, BucketBatchSampler]:
    """A freshly seeded model as the trainer's task, and the training sampler that preflight checked."""
    trainer.seed_everything(cfg.trainer.seed)
    model = module.build_model(cfg.model, prepared.vocab)
    task = trainer.Task(model, module.step, module.summarize, prepared.collate)
    return task, trainer.preflight(task, train_set, prepared.splits["valid"], cfg.trainer, cfg.data, prepared.shuffle_train)


def _run_dir(cfg: RunConfig, vocab: dict, world: distributed.World) -> Path:
    """Rank 0 makes the run dir (or takes the one resumed) and writes the config and vocabulary there."""
    if world.main:
        run_dir = Path(cfg.trainer.resume) if cfg.trainer.resume else new_run_dir(cfg.recipe, cfg.run_dir)
        save_run_config(cfg, run_dir)
        (run_dir / "vocab.json").write_text(json.dumps(vocab))
    return distributed.broadcast(run_dir if world.main else None)


def _fit_bagged(cfg: RunConfig, module: Any, prepared: recipes.Prepared, console: Console, world: distributed.World,
                on_validation: trainer.OnValidation | None) -> tuple[Path, dict[str, Any]]:
    """trainer.bagging=K: K members trained one after another (on every rank), member i an ordinary run
    in members/<i> on bootstrap resample i of the training split, or on the whole split with
    trainer.bagging_resample=none (then only the seed tells members apart). All share the vocabulary, built once
    from the whole split, so their class probabilities average like those of any ensemble. On resume
    every member that has a dir continues in it, so the one interrupted goes on where it stopped and
    those done train no further (or up to a budget raised now); the rest start afresh. Returns the
    ensemble's validation metrics and, under "members", each member's, as `evaluate` reports them."""
    _task(cfg, module, prepared, prepared.splits["train"])  # bad input fails before any file is written
    bag = _run_dir(cfg, prepared.vocab, world)
    console.print(f"bagged run dir: {bag}  ({cfg.trainer.bagging} members)")
    started = distributed.broadcast([d.name for d in member_run_dirs(bag) if d != bag])  # rank 0's view, before it adds any
    for i in range(cfg.trainer.bagging):
        console.print(f"[bold]member {i + 1}/{cfg.trainer.bagging}[/bold]")
        member = compose(cfg.recipe, [*cfg.overrides, *member_overrides(cfg.trainer, i, bag / MEMBERS / str(i), str(i) in started)])
        train_set = prepared.splits["train"]
        if cfg.trainer.bagging_resample == "bootstrap":
            train_set = bootstrap(train_set, cfg.trainer.seed, i)
        _train(member, module, prepared, train_set, console, world, on_validation)
    if not world.main:
        return bag, {}
    report = evaluate([bag], [])
    members, ensemble = [scalars(m) for m in report["members"]], scalars(report["ensemble"])
    monitor.log_ensemble(bag, members, ensemble)
    return bag, {**ensemble, "members": members}


def member_overrides(cfg: TrainerConfig, i: int, member_dir: Path, resume: bool) -> list[str]:
    """What makes member i of a bagged run a run of its own: its dir, trainer.seed + i (initialisation,
    dropout, batch order), and its even share of trainer.max_time; step and epoch budgets apply to each
    member as they stand, so a member trains as long as the same command without bagging would."""
    share = [f"trainer.max_time={cfg.max_time / cfg.bagging!r}"] if cfg.max_time else []
    return [f"run_dir={member_dir}", f"trainer.resume={member_dir if resume else 'null'}", f"trainer.seed={cfg.seed + i}",
            "trainer.bagging=null", *share]


def member_run_dirs(run_dir: Path) -> list[Path]:
    """The run dirs whose models make up a run's predictions: a bagged run's members in order, or a
    plain run (or checkpoint, or export) itself. `evaluate`, `sample` and `export` see runs through this."""
    members = run_dir / MEMBERS
    found = sorted((d for d in members.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)) if members.is_dir() else []
    return found or [run_dir]


def bag_of(run_dir: Path) -> Path | None:
    """The bagged run that `run_dir` is a member of, if it is one."""
    bag = run_dir.parent.parent
    return bag if run_dir.parent.name == MEMBERS and (bag / "config.yaml").is_file() else None


def scalars(report: dict[str, Any]) -> dict[str, float]:
    """The numbers of a classifier report (not its class names or confusion matrix), for logs and fit's last line."""
    return {k: v for k, v in report.items() if isinstance(v, (int, float))}


def sweep(recipe: str, overrides: list[str], console: Console) -> tuple[Path, list[dict[str, Any]]]:
    """One run per combination, each in its own numbered dir under one sweep dir; a failed run does not
    stop the others. Every combination is composed first, so a bad override fails before any training."""
    combos = expand_sweeps(overrides)
    parents = [o.split("=", 1)[1] for o in combos[0] if o.startswith("run_dir=")]
    combos = [[o for o in combo if not o.startswith("run_dir=")] for combo in combos]
    for combo in combos:
        compose(recipe, combo)
    swept = [i for i in range(len(combos[0])) if len({c[i] for c in combos}) > 1]
    parent = new_run_dir(recipe, parents[0] if parents else None)
    results = []
    for i, combo in enumerate(combos):
        label = " ".join(combo[j] for j in swept)
        console.print(f"[bold]sweep run {i + 1}/{len(combos)}[/bold]: {label}")
        result: dict[str, Any] = {"run_dir": str(parent / str(i)), "overrides": label}
        try:
            run_dir, result["metrics"] = fit(compose(recipe, [*combo, f"run_dir={parent / str(i)}"]), console)
            monitor.log_hparams(run_dir, override_values([combo[j] for j in swept]), result["metrics"])
        except SeqtrainError as e:
            result["error"] = str(e)
            console.print(f"[red]run {i} failed:[/red] {e}")
        results.append(result)
    (parent / "sweep.json").write_text(json.dumps(results, indent=2))
    return parent, results


def load_model(path: Path) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(recipe module, model in eval mode, checkpoint) from a run dir (its best checkpoint) or a .pt file;
    or an export (its dir or a model file in it), run through onnxruntime or TorchScript."""
    if exported.home(path) is not None:
        return exported.load_model(path)
    if path.is_dir():
        state = checkpoint.load(checkpoint.find(path), recipe=run_recipe(path))
    else:
        state = checkpoint.load(path)
    if state.get("recipe") not in recipes.REGISTRY:
        raise CheckpointError(f"{path}: unknown recipe {state.get('recipe')!r} in the checkpoint")
    module = recipes.get(state["recipe"])
    try:
        model_cfg = module.ModelConfig(**state["config"]["model"])
    except TypeError as e:
        raise CheckpointError(f"{path}: the checkpoint's model config does not fit this seqtrain ({e})") from e
    model = module.build_model(model_cfg, state["vocab"])
    model.load_state_dict(state["model"])
    model.eval()
    return module, model, state


def evaluate(run_dirs: list[Path], overrides: list[str]) -> dict[str, Any]:
    """Score trained runs on the first run's validation split, or on other data / another split given as
    overrides. Several runs of a classifier recipe are scored alone and as an ensemble."""
    if any(o.lstrip("+~").startswith("model") for o in overrides):
        raise ConfigError("evaluate scores the trained model as it is; model.* cannot be overridden")
    cfg = load_run_config(exported.home(run_dirs[0]) or run_dirs[0], overrides)  # an export keeps its run's config
    run_dirs = [member for run_dir in run_dirs for member in member_run_dirs(run_dir)]
    members = [load_model(run_dir) for run_dir in run_dirs]
    module, model, state = members[0]
    device = trainer.pick_device(cfg.trainer.device)
    if not recipes.is_classifier(module):
        only_one(run_dirs, cfg.recipe)
        prepared = module.prepare(cfg.data, state["vocab"], (cfg.split,))
        task = trainer.Task(model.to(device), module.step, module.summarize, prepared.collate)
        return module.summarize(trainer.score(task, task.model, prepared.splits[cfg.split], cfg.data, device))
    return ensembles.evaluate(run_dirs, members, cfg.data, cfg.split, device)


def sample(paths: list[Path], options: SampleOptions, write: Callable[[str], None]) -> None:
    """Generate with one run; or predict with one classifier run or an ensemble, a JSON line per input."""
    paths = [member for path in paths for member in member_run_dirs(path)]
    members = [load_model(path) for path in paths]
    module, model, state = members[0]
    if not recipes.is_classifier(module):
        only_one(paths, state["recipe"])
        module.sample(model, state["vocab"], options, write)
        return
    ensembles.predict(paths, members, options, write)


def init_source(run_dir: Path, recipe: str) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise ConfigError(f"trainer.init_from={run_dir}: no such run dir")
    if member_run_dirs(run_dir) != [run_dir]:
        raise ConfigError(f"trainer.init_from={run_dir} is a bagged run, whose members' weights do not average into one model; "
                          f"start from one member, e.g. trainer.init_from={run_dir / MEMBERS / '0'}")
    return checkpoint.load(checkpoint.find(run_dir), recipe=recipe)


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
