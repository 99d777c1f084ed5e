"""The one home of what a run dir holds and how to open one.

    RUN/config.yaml          the resolved config (for people, and the recipe's name)
    RUN/overrides.yaml       the overrides it was composed from: resume and evaluate re-compose from them
    RUN/vocab.json           the vocabulary (tokenizers, class names)
    RUN/checkpoints/         best.pt (by the selection rule) and last.pt
    RUN/metrics.jsonl        one JSON record per logging window and validation; TensorBoard events beside it
    RUN/members/0, 1, ...    a bagged run's members, each a run dir of its own
    RUN/export/              `seqtrain export`'s default output: an export dir (seqtrain/exported.py)

`load_model` opens whatever a command is given: a run dir (its best checkpoint), a checkpoint file, or an
export dir or model file.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf

from seqtrain import checkpoint, exported, recipes
from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.recipe import Recipe

MEMBERS = "members"


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.path / "overrides.yaml"

    @property
    def vocab(self) -> Path:
        return self.path / "vocab.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / name

    def find_checkpoint(self, prefer: str = "best") -> Path:
        """best.pt when it exists, else last.pt (`prefer="last"`: the other way round, for resume)."""
        order = ["best.pt", "last.pt"] if prefer == "best" else ["last.pt", "best.pt"]
        for name in order:
            if (self.checkpoints / name).is_file():
                return self.checkpoints / name
        raise CheckpointError(f"no checkpoint in {self.checkpoints} (is {self.path} a seqtrain run dir?)")

    def recipe(self) -> str:
        if not self.config.is_file():
            raise ConfigError(f"{self.path} is not a seqtrain run dir (no config.yaml)")
        return OmegaConf.load(self.config).recipe

    def saved_overrides(self) -> list[str]:
        if not self.config.is_file() or not self.overrides.is_file():
            raise ConfigError(f"{self.path} is not a seqtrain run dir (no config.yaml / overrides.yaml)")
        return cast(list, OmegaConf.to_container(OmegaConf.load(self.overrides)))

    def write(self, resolved: dict, overrides: list[str], vocab: dict) -> None:
        """config.yaml is for people and for `sample`; overrides.yaml lets resume and evaluate re-compose it."""
        self.config.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        self.overrides.write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        self.vocab.write_text(json.dumps(vocab))

    def members(self) -> list[RunDir]:
        """The run dirs whose models make up this run's predictions: a bagged run's members in order, or a
        plain run itself. `evaluate`, `sample` and `export` see runs through this."""
        folder = self.path / MEMBERS
        found = (
            sorted((d for d in folder.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
            if folder.is_dir()
            else []
        )
        return [RunDir(d) for d in found] or [self]

    def member(self, i: int) -> RunDir:
        return RunDir(self.path / MEMBERS / str(i))

    def is_bagged(self) -> bool:
        return self.members() != [self]

    def bag(self) -> RunDir | None:
        """The bagged run this run dir is a member of, if it is one."""
        bag = self.path.parent.parent
        return RunDir(bag) if self.path.parent.name == MEMBERS and (bag / "config.yaml").is_file() else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @classmethod
    def free(cls, run_dir: str) -> RunDir:
        """`run_dir` when nothing is there yet: an existing run dir is never reused or overwritten."""
        path = Path(run_dir)
        if path.exists():
            raise ConfigError(
                f"run dir {path} already exists; choose another run_dir or continue it with trainer.resume={path}"
            )
        return cls(path)

    @classmethod
    def create(cls, recipe: str, run_dir: str | None) -> RunDir:
        """Create the run dir exclusively (see `free`); by default runs/<recipe>/<YYYYmmdd-HHMMSS>, with a
        suffix when another run took that second."""
        if run_dir is not None:
            free = cls.free(run_dir)
            free.path.mkdir(parents=True)
            return free
        base = Path("runs") / recipe / time.strftime("%Y%m%d-%H%M%S")
        for suffix in itertools.count():
            path = base.with_name(base.name + (f"-{suffix}" if suffix else ""))
            try:
                path.mkdir(parents=True)
                return cls(path)
            except FileExistsError:
                continue
        raise AssertionError("unreachable")


def load_checkpoint(path: Path, recipe: str | None = None, prefer: str = "best") -> dict[str, Any]:
    """A checkpoint from a run dir (best.pt, or last.pt with `prefer="last"`) or a .pt file, as data."""
    if path.is_dir():
        return checkpoint.load(RunDir(path).find_checkpoint(prefer), recipe=recipe or RunDir(path).recipe())
    return checkpoint.load(path, recipe=recipe)


def load_model(path: Path) -> tuple[Recipe, torch.nn.Module, dict[str, Any]]:
    """(recipe, model in eval mode, checkpoint) from a run dir (its best checkpoint) or a .pt file; or an
    export (its dir or a model file in it), run through onnxruntime or TorchScript."""
    if exported.home(path) is not None:
        return exported.load_model(path)
    state = load_checkpoint(path)
    if state.get("recipe") not in recipes.names():
        raise CheckpointError(f"{path}: unknown recipe {state.get('recipe')!r} in the checkpoint")
    recipe = recipes.get(state["recipe"])
    try:
        model_cfg = recipe.ModelConfig(**state["config"]["model"])
    except TypeError as e:
        raise CheckpointError(f"{path}: the checkpoint's model config does not fit this seqtrain ({e})") from e
    model = recipe.build_model(model_cfg, state["vocab"])
    model.load_state_dict(state["model"])
    model.eval()
    return recipe, model, state
