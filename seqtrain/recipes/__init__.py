"""Which recipes exist: seqtrain's own, and those other installed packages register.

A package adds a recipe by naming its `seqtrain.recipe.Recipe` subclass under the entry point group
`seqtrain.recipes` (in its pyproject.toml: `[project.entry-points."seqtrain.recipes"] NAME = "pkg.mod:Class"`).
Installing the package is the trust decision, as with any Python plug-in (pytest's, Optuna's); a config
file never names code: it can only choose among the recipes installed here.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from seqtrain.errors import ConfigError
from seqtrain.recipe import Recipe
from seqtrain.recipes.classifier import ClassifierRecipe

GROUP = "seqtrain.recipes"
BUILT_IN = {
    "char_lm": "seqtrain.recipes.char_lm:CharLM",
    "sentiment": "seqtrain.recipes.sentiment:Sentiment",
    "seq2seq": "seqtrain.recipes.seq2seq:Seq2SeqRecipe",
    "speech": "seqtrain.recipes.speech:Speech",
    "forecast": "seqtrain.recipes.forecast:Forecast",
}


@cache
def _registered() -> dict[str, str]:
    """Every recipe name -> "module:Class", built-in first; a plug-in may not take a built-in's name."""
    found = dict(BUILT_IN)
    for point in entry_points(group=GROUP):
        if point.name in found:
            owner = point.dist.name if point.dist else point.value
            raise ConfigError(
                f"the recipe {point.name!r} registered by {owner} clashes with another recipe of that name; "
                f"uninstall one of them"
            )
        found[point.name] = point.value
    return found


def names() -> list[str]:
    return list(_registered())


@cache
def get(name: str) -> Recipe:
    """The recipe called `name`, imported on first use (a compose imports only the recipe it composes)."""
    registered = _registered()
    if name not in registered:
        raise ConfigError(f"unknown recipe {name!r}; valid: {', '.join(registered)}")
    module_name, _, class_name = registered[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"the recipe {name!r} ({registered[name]}) cannot be loaded: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise ConfigError(
            f"{registered[name]}, registered as the recipe {name!r}, is not a seqtrain.recipe.Recipe subclass"
        )
    if getattr(cls, "name", None) != name:
        raise ConfigError(
            f"{registered[name]} is registered as the recipe {name!r} but calls itself {getattr(cls, 'name', None)!r}"
        )
    return cls()


def is_classifier(recipe: Recipe) -> bool:
    """Whether `seqtrain evaluate` and `sample` serve the recipe generically, alone or as an ensemble."""
    return isinstance(recipe, ClassifierRecipe)
