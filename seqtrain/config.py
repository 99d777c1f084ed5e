"""Compose a run's config with Hydra's compose API and check it against typed dataclasses.

Hydra stays at this edge: the rest of seqtrain receives the dataclasses built here. Compose does not
change directory, configure logging or sweep, so seqtrain makes its own run dirs (seqtrain/rundir.py)
and expands `-m` sweeps here, with Hydra's own override grammar.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException, ValidationError

from seqtrain import recipes
from seqtrain.errors import ConfigError
from seqtrain.optim import OptimConfig, SchedConfig
from seqtrain.overrides import Overrides
from seqtrain.recipe import Recipe
from seqtrain.rundir import RunDir
from seqtrain.trainer_config import TrainerConfig

# Keys a user may set at the top level besides the groups.
TOP_LEVEL = ("recipe", "run_dir", "split")
# Overrides that say where a run was or where its first weights came from, not what it is: a run dir's
# overrides.yaml leaves them out, so that resume and evaluate re-compose the run itself.
WHERE = ("run_dir", "trainer.resume", "trainer.init_from")


def config_root() -> Path:
    """`conf/` and `recipes/` travel inside the wheel; in a source checkout they sit beside the package."""
    packaged = Path(__file__).parent / "_configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent


def recipe_config_dirs(recipe: Recipe) -> tuple[Path, Path]:
    """(the folder holding <name>.yaml, the folder of its own model/ and data/ groups): seqtrain's recipes/
    and conf/<name>/ for a built-in recipe, the recipe's `config_dir` for one from another package."""
    if recipe.config_dir is None:
        return config_root() / "recipes", config_root() / "conf" / recipe.name
    return Path(recipe.config_dir), Path(recipe.config_dir)


@dataclass
class RunConfig:
    """Everything one run needs, typed; `resolved` is what gets saved as config.yaml."""

    recipe: str
    model: Any
    data: Any
    optim: OptimConfig
    sched: SchedConfig
    trainer: TrainerConfig
    run_dir: str | None
    split: str
    overrides: Overrides
    resolved: dict


def split_recipe(args: Sequence[str] | Overrides) -> tuple[str, Overrides]:
    """Take `recipe=NAME` out of the command line's overrides; the rest are the run's."""
    overrides = Overrides.of(args)
    names = overrides.values("recipe")
    valid = ", ".join(recipes.names())
    if not names:
        raise ConfigError(f"which recipe? add recipe=NAME (one of: {valid})")
    if len(names) > 1 or not isinstance(names[0], str):
        raise ConfigError("give exactly one recipe=NAME; sweeps over recipes are not supported")
    if names[0] not in recipes.names():
        raise ConfigError(f"unknown recipe {names[0]!r}; valid: {valid}")
    return names[0], overrides.without("recipe")


def compose(recipe_name: str, overrides: Sequence[str] | Overrides = ()) -> RunConfig:
    """Compose the recipe's YAML with conf/ groups and the overrides, then type-check every section."""
    overrides = Overrides.of(overrides)
    recipe = recipes.get(recipe_name)
    raw = _compose_raw(recipe, overrides)
    schemas = {
        "model": recipe.ModelConfig,
        "data": recipe.DataConfig,
        "optim": OptimConfig,
        "sched": SchedConfig,
        "trainer": TrainerConfig,
    }
    structured = OmegaConf.create(
        {**{k: OmegaConf.structured(c) for k, c in schemas.items()}, **dict.fromkeys(TOP_LEVEL)}
    )
    _refuse_unknown_keys(raw, structured, "")
    trainer = _typed(raw, "trainer", TrainerConfig)
    if trainer.bagging and not recipes.is_classifier(recipe):
        raise ConfigError(
            f"trainer.bagging averages class probabilities, so only a classifier recipe's runs can be bagged; "
            f"{recipe_name} is not one"
        )
    return RunConfig(
        recipe=recipe_name,
        model=_typed(raw, "model", recipe.ModelConfig),
        data=_typed(raw, "data", recipe.DataConfig),
        optim=_typed(raw, "optim", OptimConfig),
        sched=_typed(raw, "sched", SchedConfig),
        trainer=trainer,
        run_dir=raw.run_dir,
        split=raw.split,
        overrides=overrides,
        resolved=cast(dict, OmegaConf.to_container(raw, resolve=True)),
    )


def register_schemas(recipe: Recipe) -> None:
    """The dataclasses are Hydra schemas: each group file extends one (`- /schema/optim@_here_`), so every
    field is a valid key even where the YAML does not list it, and a wrong type fails during composition.
    Only the recipe being composed registers its own: no other recipe is imported."""
    store = ConfigStore.instance()
    for group, cls in (("optim", OptimConfig), ("sched", SchedConfig), ("trainer", TrainerConfig)):
        store.store(group="schema", name=group, node=cls)
    store.store(group="schema/model", name=recipe.name, node=recipe.ModelConfig)
    store.store(group="schema/data", name=recipe.name, node=recipe.DataConfig)


def _compose_raw(recipe: Recipe, overrides: Overrides) -> DictConfig:
    """Groups are searched in the recipe's own folder (its model and data options only) before the
    shared conf/ (optim, sched, trainer), so recipes may reuse option names such as data=folder."""
    recipe_dir, groups = recipe_config_dirs(recipe)
    register_schemas(recipe)
    GlobalHydra.instance().clear()
    searchpath = f"hydra.searchpath=[file://{groups},file://{config_root() / 'conf'}]"
    try:
        with initialize_config_dir(version_base=None, config_dir=str(recipe_dir.absolute()), job_name="seqtrain"):
            cfg = hydra_compose(config_name=recipe.name, overrides=[searchpath, *overrides])
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e)) from e
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse override {e.override!r}; use key=value (see Hydra's override grammar)") from e
    except ConfigCompositionException as e:
        raise ConfigError(_composition_message(e)) from e
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.recipe = recipe.name
    return cfg


def _missing_option_message(e: MissingConfigException) -> str:
    missing = e.missing_cfg_file or ""
    if "/" not in missing:
        return str(e).splitlines()[0]
    group, option = missing.rsplit("/", 1)
    valid = re.findall(r"^\t(\S+)$", str(e).split("Config search path")[0], flags=re.M)
    return f"unknown {group} option {option!r}; valid: {', '.join(valid) or '(none)'}"


def _composition_message(e: ConfigCompositionException) -> str:
    cause = e.__cause__
    if isinstance(cause, ValidationError):
        return f"{cause.full_key}: {(cause.msg or '').splitlines()[0]}"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        parent = cause.parent_node
        valid = ", ".join(str(k) for k in parent.keys() if k != "hydra") if isinstance(parent, DictConfig) else ""
        return f"unknown key {cause.full_key!s}" + (f"; valid keys there: {valid}" if valid else "")
    return str(e).splitlines()[0]


def _refuse_unknown_keys(node: DictConfig, schema: DictConfig, prefix: str) -> None:
    """Keys added with `+key=...` (or by a config file) must exist in the schema, or they would be
    silently ignored. `_target_`-style keys are refused by name: a config chooses among seqtrain's own
    registered recipes and options and never names code to import or call."""
    for key in node.keys():
        path = f"{prefix}{key!s}"
        if str(key).startswith("_"):
            raise ConfigError(
                f"{path}: configs cannot name code to instantiate; choose among seqtrain's recipes and options"
            )
        if key not in schema:
            raise ConfigError(f"unknown key {path}; valid keys there: {', '.join(str(k) for k in schema.keys())}")
        if isinstance(schema[key], DictConfig) and isinstance(node[key], DictConfig):
            _refuse_unknown_keys(node[key], schema[key], f"{path}.")


def _typed(cfg: DictConfig, section: str, cls: type) -> Any:
    """The section as its dataclass instance; `__post_init__` checks values that depend on each other."""
    node = cfg[section]
    if OmegaConf.get_type(node) is not cls:
        raise ConfigError(f"{section}: the chosen config does not extend the {cls.__name__} schema")
    return OmegaConf.to_object(node)


def expand_sweeps(overrides: Overrides) -> list[Overrides]:
    """One `Overrides` per combination of the sweeps (`a=1,2`, `b=range(3)`, `c=choice(x,y)`)."""
    axes = []
    for override in overrides.parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(
                    f"{key}: interval() is searched, not listed: use seqtrain tune (or list the values here)"
                )
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([f"{key}={override.get_value_element_as_str()}"])
    return [Overrides.of(combo) for combo in itertools.product(*axes)]


def for_fit(recipe: str, overrides: Sequence[str] | Overrides) -> RunConfig:
    """A new run's config, or with `trainer.resume=DIR` that run's own config plus these overrides."""
    overrides = Overrides.of(overrides)
    resume = overrides.value("trainer.resume")
    if resume in (None, ""):
        return compose(recipe, overrides)
    run_dir = RunDir(str(resume))
    if not run_dir.path.is_dir():
        raise ConfigError(f"trainer.resume={run_dir.path}: no such run dir")
    cfg = load_run_config(run_dir, overrides)
    if cfg.recipe != recipe:
        raise ConfigError(f"trainer.resume={run_dir.path} is a run of recipe {cfg.recipe}, not {recipe}")
    started = load_run_config(run_dir).trainer
    for key in ("bagging", "bagging_resample"):
        if overrides.sets(f"trainer.{key}") and getattr(started, key) != getattr(cfg.trainer, key):
            raise ConfigError(
                f"trainer.{key} cannot change when a run resumes: {run_dir.path} keeps the members it was started with"
            )
    return cfg


def load_run_config(run_dir: RunDir | Path, extra: Sequence[str] | Overrides = ()) -> RunConfig:
    """Re-compose a run's config from its saved overrides plus `extra` ones (later ones win)."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    saved = run_dir.saved_overrides()
    return compose(run_dir.recipe(), Overrides.of(saved) + Overrides.of(extra))


def saved_overrides(cfg: RunConfig) -> list[str]:
    """What a run dir's overrides.yaml keeps of a config's overrides (see WHERE)."""
    return cfg.overrides.without(*WHERE).as_list()
