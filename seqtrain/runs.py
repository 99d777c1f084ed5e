"""What the commands do with run dirs: fit a config, sweep, load a trained model, evaluate, sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

from seqtrain import checkpoint, recipes, trainer
from seqtrain.config import RunConfig, compose, expand_sweeps, load_run_config, new_run_dir, run_recipe, save_run_config
from seqtrain.errors import CheckpointError, ConfigError, Interrupted, SeqtrainError
from seqtrain.recipes import SampleOptions


def fit(cfg: RunConfig, console: Console) -> tuple[Path, dict[str, float]]:
    """Train one run. Data and model are built before the run dir exists, so bad input leaves nothing behind."""
    module = recipes.get(cfg.recipe)
    vocab = None
    if cfg.trainer.resume:
        run_dir = Path(cfg.trainer.resume)
        vocab = checkpoint.load(checkpoint.find(run_dir, prefer="last"), recipe=cfg.recipe)["vocab"]
    prepared = module.prepare(cfg.data, vocab, ("train", "valid"))
    trainer.seed_everything(cfg.trainer.seed)
    model = module.build_model(cfg.model, prepared.vocab)
    if not cfg.trainer.resume:
        run_dir = new_run_dir(cfg.recipe, cfg.run_dir)
    save_run_config(cfg, run_dir)
    (run_dir / "vocab.json").write_text(json.dumps(prepared.vocab))
    console.print(f"run dir: {run_dir}  ({sum(p.numel() for p in model.parameters()):,} parameters)")
    task = trainer.Task(
        model, module.step, module.summarize, prepared.collate,
        log_samples=lambda m, writer, step: module.log_samples(m, prepared.vocab, writer, step),
    )
    meta = {"recipe": cfg.recipe, "config": cfg.resolved, "vocab": prepared.vocab}
    try:
        metrics = trainer.fit(
            task, prepared.splits["train"], prepared.splits["valid"], cfg.trainer, cfg.optim, cfg.sched,
            cfg.data, run_dir, meta, console, shuffle_train=prepared.shuffle_train,
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
            _, result["metrics"] = fit(compose(recipe, [*combo, f"run_dir={parent / str(i)}"]), console)
        except SeqtrainError as e:
            result["error"] = str(e)
            console.print(f"[red]run {i} failed:[/red] {e}")
        results.append(result)
    (parent / "sweep.json").write_text(json.dumps(results, indent=2))
    return parent, results


def load_model(path: Path) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(recipe module, model in eval mode, checkpoint) from a run dir (its best checkpoint) or a .pt file."""
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


def evaluate(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """Score a trained run on its validation split, or on other data / another split given as overrides."""
    if any(o.lstrip("+~").startswith("model") for o in overrides):
        raise ConfigError("evaluate scores the trained model as it is; model.* cannot be overridden")
    cfg = load_run_config(run_dir, overrides)
    module, model, state = load_model(run_dir)
    prepared = module.prepare(cfg.data, state["vocab"], (cfg.split,))
    device = trainer.pick_device(cfg.trainer.device)
    task = trainer.Task(model.to(device), module.step, module.summarize, prepared.collate)
    return trainer.evaluate(task, task.model, prepared.splits[cfg.split], cfg.data, device)


def sample(path: Path, options: SampleOptions, write: Callable[[str], None]) -> None:
    module, model, state = load_model(path)
    module.sample(model, state["vocab"], options, write)

