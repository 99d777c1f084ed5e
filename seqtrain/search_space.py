"""The search space of `seqtrain tune`: Hydra's override grammar read as Hydra's Optuna sweeper reads it,
and checked against the config schemas before any trial trains.

`interval(a, b)` is a float, `int(interval(a, b))` an int, `tag(log, ...)` draws on a log scale,
`choice(...)` (or `a,b,c`) picks one of its values, `range(...)` an int of the values it lists in
`fit -m` (its end excluded, as in Python; Hydra's sweeper includes it). A range of floats is searched
as a choice of its values, since Optuna's stepped floats would round its end. Any other override
applies to every trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.override_parser.types import Override
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from seqtrain.config import RunConfig, compose
from seqtrain.errors import ConfigError
from seqtrain.overrides import Overrides

GROUPS = ("model", "data", "optim", "sched", "trainer")


@dataclass(frozen=True)
class Param:
    """One searched key: Optuna's distribution, and each choice as Hydra's grammar writes it."""

    key: str
    distribution: BaseDistribution
    spelled: tuple[str, ...] = ()  # CategoricalDistribution: choice i is written spelled[i]

    def suggest(self, trial: optuna.Trial) -> str:
        """Draw this key's value for the trial (a retried trial gets its first draw); the override setting it."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            value = trial.suggest_categorical(self.key, d.choices)
            # by type as well: 1 == 1.0 == True, and a retried trial's values come back from the database
            spelled = next(s for c, s in zip(d.choices, self.spelled) if type(c) is type(value) and c == value)
            return f"{self.key}={spelled}"
        suggest = trial.suggest_int if isinstance(d, IntDistribution) else trial.suggest_float
        return f"{self.key}={suggest(self.key, d.low, d.high, step=d.step, log=d.log)}"

    def extremes(self) -> list[str]:
        """The overrides composed before any trial trains: both ends of a range, every choice."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return [f"{self.key}={s}" for s in self.spelled]
        return [f"{self.key}={d.low}", f"{self.key}={d.high}"]

    def grid(self) -> list[Any]:
        """The values a grid search tries."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, IntDistribution) and not d.log:
            return list(range(d.low, d.high + 1, d.step))
        raise ConfigError(
            f"{self.key}: --sampler grid needs a discrete space; use choice() or range() instead of interval()"
        )


def parse(overrides: Overrides | list[str]) -> tuple[Overrides, list[Param]]:
    """(overrides every trial gets, searched keys)."""
    parsed = Overrides.of(overrides).parsed
    plain = Overrides.of(
        f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed if not o.is_sweep_override()
    )
    params = [_param(o) for o in parsed if o.is_sweep_override()]
    if not params:
        raise ConfigError(
            "nothing to search: give at least one key a range, e.g. 'optim.lr=tag(log, interval(1e-4, 1e-2))'"
        )
    return plain, params


def _param(o: Override) -> Param:
    key, sweep = o.get_key_element(), o.value()
    if o.is_interval_sweep():
        low, high, log = sweep.start, sweep.end, "log" in sweep.tags
        if not low < high:
            raise ConfigError(f"{key}: interval({low}, {high}) is empty; its start must be below its end")
        if log and low <= 0:
            raise ConfigError(f"{key}: tag(log, interval({low}, {high})) needs a start above 0")
        if isinstance(low, int) and isinstance(high, int):
            return Param(key, IntDistribution(low, high, log=log))
        return Param(key, FloatDistribution(low, high, log=log))
    sweep.shuffle = False  # the order means nothing to a sampler, and would differ between the two iterators below
    values, spelled = list(o.sweep_iterator()), tuple(o.sweep_string_iterator())
    if not values:
        raise ConfigError(f"{o.input_line}: the range has no values")
    if o.is_range_sweep() and all(isinstance(v, int) for v in values):
        return Param(key, IntDistribution(min(values), max(values), step=abs(sweep.step)))
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
        raise ConfigError(f"{key}: searched values must be numbers, strings, booleans or null, not lists or dicts")
    return Param(key, CategoricalDistribution(values), spelled)


def check(recipe: str, plain: Overrides, params: list[Param]) -> RunConfig:
    """Compose the trials at the corners of the space, as `fit -m` composes every combination, so a
    misspelt key, a bad value or a number drawn for a text field fails before any trial trains. Each
    key's extremes are composed with the other keys at their first. Returns the config of the first corner."""
    defaults = compose(recipe, plain).resolved
    for p in params:  # before composing a number into the field: this message is clearer than the failure
        _refuse_mismatch(p, _at(defaults, p.key))
    firsts = [p.extremes()[0] for p in params]
    first = compose(recipe, plain + firsts)
    objective = first.trainer.early_stopping
    for i, p in enumerate(params):
        for extreme in p.extremes():
            cfg = first if extreme == firsts[i] else compose(recipe, plain + [*firsts[:i], extreme, *firsts[i + 1 :]])
            _refuse_mismatch(p, _at(cfg.resolved, p.key))  # a text field whose default is null takes a number as text
            if (cfg.trainer.early_stopping.monitor, cfg.trainer.early_stopping.mode) != (
                objective.monitor,
                objective.mode,
            ):
                raise ConfigError(
                    f"{p.key}: the objective (trainer.early_stopping.monitor and mode) must be the same in every trial"
                )
            refuse_in_a_trial(cfg)
    refuse_in_a_trial(first)
    return first


def refuse_in_a_trial(cfg: RunConfig) -> None:
    """What a trial cannot be: a launch of several processes, or a bag of several runs."""
    if cfg.trainer.devices > 1:
        raise ConfigError(
            "a study trains its trials in this process; drop trainer.devices and run more `seqtrain tune` workers "
            "instead"
        )
    if cfg.trainer.bagging:
        raise ConfigError(
            "a trial is one run: drop trainer.bagging, tune one member's settings, then bag the best with seqtrain fit"
        )


def _refuse_mismatch(p: Param, value: Any) -> None:
    """A range of numbers for a config group, a text field, or floats for an integer."""
    if isinstance(p.distribution, CategoricalDistribution):
        return
    if p.key in GROUPS or isinstance(value, dict):
        raise ConfigError(f"{p.key} is a config group: search its options with choice(...), not a number range")
    if isinstance(value, str):
        raise ConfigError(f"{p.key} is a string field: search its values with choice(...), not a number range")
    if isinstance(p.distribution, FloatDistribution) and isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(f"{p.key} is an integer: search it with int(interval(...)) or range(...)")


def _at(resolved: dict, key: str) -> Any:
    node: Any = resolved
    for part in key.lstrip("+~").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
