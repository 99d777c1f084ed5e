"""A command line's Hydra overrides (`optim.lr=3e-3 +trainer.x=1 ~a.b`), parsed once with Hydra's own
grammar. Every other module asks an `Overrides` for a key's value, or for a copy without some keys or with
others set, instead of taking the strings apart itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Union

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException

from seqtrain.errors import ConfigError

PLAIN = re.compile(r"^[\w./:@+\-]*$")  # a value Hydra's grammar reads back as the same string, unquoted


@dataclass(frozen=True, eq=False)
class Overrides:
    lines: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        """Equal to other overrides, or to a list or tuple of the same strings."""
        if isinstance(other, Overrides):
            return self.lines == other.lines
        return isinstance(other, (list, tuple)) and list(self.lines) == list(other)

    def __hash__(self) -> int:
        return hash(self.lines)

    @classmethod
    def of(cls, given: Union[Overrides, Iterable[str]]) -> Overrides:
        """An `Overrides` from a list of strings (checked now), or the one given."""
        overrides = given if isinstance(given, Overrides) else cls(tuple(given))
        overrides.parsed  # noqa: B018  a syntax error fails here, in one line, before anything runs
        return overrides

    @cached_property
    def parsed(self) -> list[Override]:
        try:
            return OverridesParser.create().parse_overrides(list(self.lines))
        except OverrideParseException as e:
            raise ConfigError(
                f"cannot parse override {e.override!r}; use key=value (see Hydra's override grammar)"
            ) from e

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __add__(self, other: Union[Overrides, Iterable[str]]) -> Overrides:
        return Overrides.of((*self.lines, *Overrides.of(other).lines))

    def as_list(self) -> list[str]:
        return list(self.lines)

    def sets(self, key: str) -> bool:
        """Whether any override names `key` itself (set, added or deleted)."""
        return any(o.key_or_group == key for o in self.parsed)

    def touches(self, prefix: str) -> bool:
        """Whether any override names `prefix` or a key under it (`model` touches `model.cell`)."""
        return any(o.key_or_group == prefix or o.key_or_group.startswith(prefix + ".") for o in self.parsed)

    def value(self, key: str) -> Any:
        """The value the last override of `key` gives it (typed as Hydra reads it: 3e-3 a float), or None.
        A sweep's value is its text."""
        for o in reversed(self.parsed):
            if o.key_or_group == key and not o.is_delete():
                return o.get_value_element_as_str() if o.is_sweep_override() else o.value()
        return None

    def values(self, key: str) -> list[Any]:
        """The value of every override of `key`, in order (a repeated key is an error for some callers)."""
        return [o.value() for o in self.parsed if o.key_or_group == key and not o.is_delete()]

    def without(self, *keys: str) -> Overrides:
        return Overrides(tuple(line for line, o in zip(self.lines, self.parsed) if o.key_or_group not in keys))

    def with_values(self, values: dict[str, Any]) -> Overrides:
        """A copy in which each key of `values` is set to its value (earlier overrides of it dropped)."""
        return self.updated(Overrides.of(f"{key}={spell(value)}" for key, value in values.items()))

    def updated(self, other: Overrides) -> Overrides:
        """These overrides, then `other`'s, without the ones of these that `other` sets again."""
        return self.without(*(o.key_or_group for o in other.parsed)) + other

    def sweeps(self) -> bool:
        return any(o.is_sweep_override() for o in self.parsed)


def spell(value: Any) -> str:
    """A value as an override writes it, so that Hydra reads back the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if PLAIN.match(text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
