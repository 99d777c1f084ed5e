"""What the commands do with run dirs: fit a config, sweep, load a trained model, evaluate, sample.

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
from seqtrain.errors import CheckpointError, ConfigError, Interrupted, SeqtrainError
from seqtrain.metrics import confusion_image
from seqtrain.recipes import SampleOptions


def fit(cfg: RunConfig, console: Console, on_validation: trainer.OnValidation | None = None) -> tuple[Path, dict[str, float]]:
    """Train one run, as one process or as every rank of a distributed one. Data, model, batching and
    the monitored metric are checked before the run dir exists, so bad input leaves nothing behind.
    `on_validation` is passed to the trainer (see `trainer.fit`)."""
    with distributed.session(cfg.trainer.device) as world:
        return _fit(cfg, console if world.main else Console(quiet=True), world, on_validation)


def _fit(cfg: RunConfig, console: Console, world: distributed.World, on_validation: trainer.OnValidation | None) -> tuple[Path, dict[str, float]]:
    module = recipes.get(cfg.recipe)
    vocab, source = None, None
    if cfg.trainer.resume:
        run_dir = Path(cfg.trainer.resume)
        vocab = checkpoint.load(checkpoint.find(run_dir, prefer="last"), recipe=cfg.recipe)["vocab"]
    elif cfg.trainer.init_from:
        source = init_source(Path(cfg.trainer.init_from), cfg.recipe)
        vocab = source["vocab"]  # as fine-tuning keeps a pretrained model's tokenizer: token ids must mean the same
    prepared = module.prepare(cfg.data, vocab, ("train", "valid"))
    trainer.seed_everything(cfg.trainer.seed)
    model = module.build_model(cfg.model, prepared.vocab)
    task = trainer.Task(model, module.step, module.summarize, prepared.collate)
    sampler = trainer.preflight(task, prepared.splits["train"], prepared.splits["valid"], cfg.trainer, cfg.data, prepared.shuffle_train)
    if world.main:
        run_dir = run_dir if cfg.trainer.resume else new_run_dir(cfg.recipe, cfg.run_dir)
        save_run_config(cfg, run_dir)
        (run_dir / "vocab.json").write_text(json.dumps(prepared.vocab))
    run_dir = distributed.broadcast(run_dir if world.main else None)
    console.print(f"run dir: {run_dir}  ({sum(p.numel() for p in model.parameters()):,} parameters)")
    if source is not None:
        loaded, new = load_matching(model, source["model"])
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
            task, prepared.splits["train"], prepared.splits["valid"], cfg.trainer, cfg.optim, cfg.sched,
            cfg.data, run_dir, meta, console, shuffle_train=prepared.shuffle_train, sampler=sampler, on_validation=on_validation,
        )
    except Interrupted as e:
        raise Interrupted(f"{e}; resume with: seqtrain fit recipe={cfg.recipe} trainer.resume={run_dir}") from e
    return run_dir, metrics


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
