"""The option reference (docs/options.md), generated from the typed schemas and the YAML groups, so that a new
or renamed option cannot be missing from it or stale: `python -m seqtrain.reference > docs/options.md`
(`make docs`), and tests/test_docs.py checks the committed page against this output.

Each key's meaning is the comment on its line in the dataclass (or the comment lines just above it).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from seqtrain import recipes
from seqtrain.config import compose, config_root, recipe_config_dirs
from seqtrain.optim import OptimConfig, SchedConfig
from seqtrain.trainer_config import TrainerConfig

FIELD = re.compile(r"^\s+(\w+):[^=]*=.*?(?:#\s*(.*))?$")
COMMENT = re.compile(r"^\s+#\s?(.*)$")


def meanings(cls: type) -> dict[str, str]:
    """Each field's comment, from the class's source and its bases'."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        above: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            if (comment := COMMENT.match(line)) and not line.strip().startswith('"'):
                above.append(comment.group(1))
                continue
            if field := FIELD.match(line):
                found[field.group(1)] = field.group(2) or " ".join(above)
            above = []
    return found


def spell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("|", "\\|")


def table(cls: type, prefix: str, values: dict[str, Any]) -> list[str]:
    """| key | default | meaning | rows for a dataclass; nested dataclasses get rows of their own keys."""
    rows, notes = [], meanings(cls)
    for field in dataclasses.fields(cls):
        value = values.get(field.name)
        nested = field.default_factory() if field.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            rows += table(type(nested), f"{prefix}{field.name}.", value or {})
            continue
        rows.append(f"| `{prefix}{field.name}` | `{spell(value)}` | {notes.get(field.name, '')} |")
    return rows


def options(folder: Path) -> list[str]:
    """One line per group option: its name, its description (the comment lines but the example command)
    and the keys it sets."""
    lines = []
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        comments = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
        what = " ".join(c for c in comments if not c.startswith("seqtrain "))
        node = OmegaConf.to_container(OmegaConf.load(path))
        node.pop("defaults", None)
        sets = ", ".join(f"`{k}={spell(v)}`" for k, v in flatten(node).items())
        lines.append(f"- `{path.stem}`: {what}" + (f" Sets {sets}." if sets else ""))
    return lines


def flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def page() -> str:
    header = ["| key | default | meaning |", "|---|---|---|"]
    out = [
        "# Options",
        "",
        "Every key a config takes, generated from the typed schemas (`python -m seqtrain.reference`, `make docs`);",
        "tests/test_docs.py keeps this page equal to that output. A key is set on the command line",
        "(`seqtrain fit recipe=sentiment model.dropout=0.3`); a group option (`data=sst2`, `optim=sgd`) sets",
        "several keys at once, listed under each table. Defaults are those of each recipe's own YAML",
        "(`seqtrain config recipe=NAME` prints them all).",
        "",
    ]
    for name in recipes.names():
        recipe = recipes.get(name)
        if recipe.config_dir is not None:
            continue
        resolved = compose(name).resolved
        _, groups = recipe_config_dirs(recipe)
        out += [f"## {name}", "", recipe.description(), "", "### model", "", *header]
        out += table(recipe.ModelConfig, "model.", resolved["model"])
        out += ["", "Options (`model=...`):", "", *options(groups / "model"), "", "### data", "", *header]
        out += table(recipe.DataConfig, "data.", resolved["data"])
        out += ["", "Options (`data=...`):", "", *options(groups / "data"), ""]
        sets = flatten(
            {
                k: v
                for k, v in OmegaConf.to_container(OmegaConf.load(config_root() / "recipes" / f"{name}.yaml")).items()
                if k != "defaults"
            }
        )
        out += ["The recipe's YAML sets: " + ", ".join(f"`{k}={spell(v)}`" for k, v in sets.items()) + ".", ""]
    shared = (("optim", OptimConfig), ("sched", SchedConfig), ("trainer", TrainerConfig))
    for group, cls in shared:
        values = OmegaConf.to_container(OmegaConf.structured(cls))
        out += [f"## {group} (every recipe)", "", *header, *table(cls, f"{group}.", values), ""]
        out += [f"Options (`{group}=...`):", "", *options(config_root() / "conf" / group), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(page(), end="")
