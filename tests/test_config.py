import dataclasses

import pytest
from omegaconf import OmegaConf

from seqtrain import config, recipes
from seqtrain.errors import ConfigError
from seqtrain.optim import OptimConfig, SchedConfig
from seqtrain.overrides import Overrides
from seqtrain.trainer_config import TrainerConfig


def test_compose_types_every_section():
    cfg = config.compose("char_lm", ["optim.lr=3e-3", "data.max_tokens=4096", "model.cell=gru"])
    assert cfg.optim.lr == 3e-3 and cfg.model.cell == "gru"
    assert cfg.data.max_tokens == 4096 and cfg.data.batch_size is None
    assert cfg.resolved["optim"]["lr"] == 3e-3


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key optim.lrr; valid keys there: name, lr,"),
        ("optim=adamm", "unknown optim option 'adamm'; valid: adagrad, adam, adamw, rmsprop, sgd"),
        ("optim.lr=abc", "optim.lr: Value 'abc' of type 'str' could not be converted to Float"),
        ("optim.lr=-1", "optim.lr must be positive"),
        ("model.cell=transformer", "model.cell='transformer' is unknown; valid: rnn_tanh"),
        ("data=text", "data=text needs data.path=FILE"),
        ("optim.lr==", "cannot parse override"),
        ("trainer.max_time=null", "set a budget"),
        ("trainer.ema_decay=1.5", "trainer.ema_decay must be between 0 and 1"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as info:
        config.compose("char_lm", [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_recipe_is_required_and_checked():
    with pytest.raises(ConfigError, match="which recipe"):
        config.split_recipe(["optim.lr=1"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; valid: .*char_lm"):
        config.split_recipe(["recipe=nope"])
    assert config.split_recipe(["recipe=char_lm", "a=1"]) == ("char_lm", ["a=1"])


def test_sweeps_expand_comma_range_and_choice():
    combos = config.expand_sweeps(
        Overrides.of(["optim.lr=1e-3,3e-3", "model.num_layers=range(1,3)", "model.cell=choice(gru,lstm)", "x=1"])
    )
    assert len(combos) == 8
    assert ["optim.lr=0.001", "model.num_layers=1", "model.cell=gru", "x=1"] in combos


def test_configs_resolve_from_the_package():
    root = config.config_root()
    assert (root / "conf" / "optim" / "adam.yaml").is_file() and "char_lm" in recipes.names()


def schema_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = schema_defaults(type(value)) if dataclasses.is_dataclass(value) else value
    return out


def restated(node: dict, defaults: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in node.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            found += restated(value, defaults[key], f"{prefix}{key}.")
        elif key in defaults and defaults[key] == value:
            found.append(f"{prefix}{key}={value!r}")
    return found


def test_group_files_set_only_what_differs_from_their_schema():
    """The dataclass is the one source of each default: a group file that restated one could drift from it."""
    root = config.config_root() / "conf"
    groups = [
        (root / g, cls) for g, cls in (("optim", OptimConfig), ("sched", SchedConfig), ("trainer", TrainerConfig))
    ]
    for name in recipes.names():
        recipe = recipes.get(name)
        if recipe.config_dir is None:
            groups += [(root / name / "model", recipe.ModelConfig), (root / name / "data", recipe.DataConfig)]
    checked = 0
    for folder, cls in groups:
        for path in sorted(folder.glob("*.yaml")):
            node = OmegaConf.to_container(OmegaConf.load(path))
            node.pop("defaults")
            assert not restated(node, schema_defaults(cls)), f"{path} restates its schema's defaults"
            checked += 1
    assert checked >= 25
