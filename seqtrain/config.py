"""Compose a run's config with Hydra's compose API, check it against typed dataclasses, make run dirs.

Hydra stays at this edge: the rest of seqtrain receives the dataclasses built here. Compose does not
change directory, configure logging or sweep, so this module makes run dirs and expands `-m` sweeps
itself, with Hydra's own override grammar.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException, ValidationError

from seqtrain import recipes
from seqtrain.errors import ConfigError
from seqtrain.optim import OptimConfig, SchedConfig
from seqtrain.trainer import TrainerConfig

# Keys a user may set at the top level besides the groups.
TOP_LEVEL = ("recipe", "run_dir", "split")


def config_root() -> Path:
    """`conf/` and `recipes/` travel inside the wheel; in a source checkout they sit beside the package."""
    packaged = Path(__file__).parent / "_configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent


def recipe_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted((config_root() / "recipes").glob("*.yaml"))}


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
    overrides: list[str]
    resolved: dict


def split_recipe(args: list[str]) -> tuple[str, list[str]]:
    """Take `recipe=NAME` out of the positional arguments; the rest are Hydra overrides."""
    names = [a.split("=", 1)[1] for a in args if a.startswith("recipe=")]
    rest = [a for a in args if not a.startswith("recipe=")]
    valid = ", ".join(recipe_files())
    if not names:
        raise ConfigError(f"which recipe? add recipe=NAME (one of: {valid})")
    if len(names) > 1 or "," in names[0]:
        raise ConfigError("give exactly one recipe=NAME; sweeps over recipes are not supported")
    if names[0] not in recipe_files():
        raise ConfigError(f"unknown recipe {names[0]!r}; valid: {valid}")
    return names[0], rest


def compose(recipe: str, overrides: list[str]) -> RunConfig:
    """Compose recipes/<recipe>.yaml with conf/ groups and the overrides, then type-check every section."""
    raw = _compose_raw(recipe, overrides)
    module = recipes.get(recipe)
    schemas = {"model": module.ModelConfig, "data": module.DataConfig, "optim": OptimConfig, "sched": SchedConfig, "trainer": TrainerConfig}
    _refuse_unknown_keys(raw, OmegaConf.create({**{k: OmegaConf.structured(c) for k, c in schemas.items()}, **dict.fromkeys(TOP_LEVEL)}), "")
    trainer = _typed(raw, "trainer", TrainerConfig)
    if trainer.bagging and not recipes.is_classifier(module):
        raise ConfigError(f"trainer.bagging averages class probabilities, so only a classifier recipe's runs can be bagged; {recipe} is not one")
    return RunConfig(
        recipe=recipe,
        model=_typed(raw, "model", module.ModelConfig),
        data=_typed(raw, "data", module.DataConfig),
        optim=_typed(raw, "optim", OptimConfig),
        sched=_typed(raw, "sched", SchedConfig),
        trainer=trainer,
        run_dir=raw.run_dir,
        split=raw.split,
        overrides=list(overrides),
        resolved=OmegaConf.to_container(raw, resolve=True),
    )


def register_schemas() -> None:
    """The dataclasses are Hydra schemas: each group file extends one (`- /schema/optim@_here_`), so every
    field is a valid key even where the YAML does not list it, and a wrong type fails during composition."""
    store = ConfigStore.instance()
    for group, cls in (("optim", OptimConfig), ("sched", SchedConfig), ("trainer", TrainerConfig)):
        store.store(group="schema", name=group, node=cls)
    for name in recipes.REGISTRY:
        module = recipes.get(name)
        store.store(group="schema/model", name=name, node=module.ModelConfig)
        store.store(group="schema/data", name=name, node=module.DataConfig)


def _compose_raw(recipe: str, overrides: list[str]) -> DictConfig:
    """Groups are searched in conf/<recipe>/ (model and data options of this recipe only) before the
    shared conf/ (optim, sched, trainer), so recipes may reuse option names such as data=folder."""
    root = config_root()
    register_schemas()
    GlobalHydra.instance().clear()
    searchpath = f"hydra.searchpath=[file://{root / 'conf' / recipe},file://{root / 'conf'}]"
    try:
        with initialize_config_dir(version_base=None, config_dir=str(root / "recipes"), job_name="seqtrain"):
            cfg = hydra_compose(config_name=recipe, overrides=[searchpath, *overrides])
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e)) from e
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse override {e.override!r}; use key=value (see Hydra's override grammar)") from e
    except ConfigCompositionException as e:
        raise ConfigError(_composition_message(e)) from e
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.recipe = recipe
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
        return f"{cause.full_key}: {cause.msg.splitlines()[0]}"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        parent = cause.parent_node
        valid = ", ".join(str(k) for k in parent.keys() if k != "hydra") if isinstance(parent, DictConfig) else ""
        return f"unknown key {cause.full_key}" + (f"; valid keys there: {valid}" if valid else "")
    return str(e).splitlines()[0]


def _refuse_unknown_keys(node: DictConfig, schema: DictConfig, prefix: str) -> None:
    """Keys added with `+key=...` (or by a config file) must exist in the schema, or they would be
    silently ignored. `_target_`-style keys are refused by name: a config chooses among seqtrain's own
    registered recipes and options and never names code to import or call."""
    for key in node.keys():
        path = f"{prefix}{key}"
        if str(key).startswith("_"):
            raise ConfigError(f"{path}: configs cannot name code to instantiate; choose among seqtrain's recipes and options")
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


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """One override list per combination of the sweeps (`a=1,2`, `b=range(3)`, `c=choice(x,y)`)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse override {e.override!r}; use key=value (see Hydra's override grammar)") from e
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{key}: interval() is searched, not listed: use seqtrain tune (or list the values here)")
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(combo) for combo in itertools.product(*axes)]


def override_values(overrides: list[str]) -> dict[str, Any]:
    """`key=value` overrides as {key: value}, each value typed as Hydra's grammar reads it (3e-3 a float)."""
    return {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(overrides)}


def new_run_dir(recipe: str, run_dir: str | None) -> Path:
    """Create the run dir exclusively: an existing one is never reused or overwritten."""
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists():
            raise ConfigError(f"run dir {path} already exists; choose another run_dir or continue it with trainer.resume={path}")
        path.mkdir(parents=True)
        return path
    base = Path("runs") / recipe / time.strftime("%Y%m%d-%H%M%S")
    for suffix in itertools.count():
        path = base.with_name(base.name + (f"-{suffix}" if suffix else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    """config.yaml is for people and for `sample`; overrides.yaml lets resume and evaluate re-compose it
    (without `run_dir`, `trainer.resume` and `trainer.init_from`, which name where the run was or where
    its first weights came from, not what it is)."""
    kept = [o for o in cfg.overrides if not o.startswith(("run_dir=", "trainer.resume=", "trainer.init_from="))]
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg.resolved)))
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(kept)))


def for_fit(recipe: str, overrides: list[str]) -> RunConfig:
    """A new run's config, or with `trainer.resume=DIR` that run's own config plus these overrides."""
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("trainer.resume=")]
    if not resume or resume[-1] in ("", "null"):
        return compose(recipe, overrides)
    run_dir = Path(resume[-1])
    if not run_dir.is_dir():
        raise ConfigError(f"trainer.resume={run_dir}: no such run dir")
    cfg = load_run_config(run_dir, overrides)
    if cfg.recipe != recipe:
        raise ConfigError(f"trainer.resume={run_dir} is a run of recipe {cfg.recipe}, not {recipe}")
    started = load_run_config(run_dir).trainer
    for key in ("bagging", "bagging_resample"):
        if any(o.lstrip("+~").startswith(f"trainer.{key}=") for o in overrides) and getattr(started, key) != getattr(cfg.trainer, key):
            raise ConfigError(f"trainer.{key} cannot change when a run resumes: {run_dir} keeps the members it was started with")
    return cfg


def load_run_config(run_dir: Path, extra: list[str] = ()) -> RunConfig:
    """Re-compose a run's config from its saved overrides plus `extra` ones (later ones win)."""
    config_file, overrides_file = run_dir / "config.yaml", run_dir / "overrides.yaml"
    if not config_file.is_file() or not overrides_file.is_file():
        raise ConfigError(f"{run_dir} is not a seqtrain run dir (no config.yaml / overrides.yaml)")
    recipe = OmegaConf.load(config_file).recipe
    saved = OmegaConf.to_container(OmegaConf.load(overrides_file))
    return compose(recipe, saved + list(extra))


def run_recipe(run_dir: Path) -> str:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a seqtrain run dir (no config.yaml)")
    return OmegaConf.load(config_file).recipe
