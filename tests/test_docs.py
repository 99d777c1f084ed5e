"""The documentation cannot drift from the code: every command in a ```bash block, and every `$ ` line of a
```console block, of README.md, ARCHITECTURE.md, docs/*.md and recipes/*.md is checked without training:
`seqtrain` commands parse, and their overrides compose and validate against the schemas; `python bench/X.py`
commands parse their flags; `make` targets exist; pip extras exist. The option reference is the generated one.

Placeholders, one convention for all pages: a word in capitals stands for what you put there (RUN a run dir,
EXPORT an export dir, STUDY a study dir, FILE a file, DIR a folder); files named in examples (sales.csv) need
not exist, since nothing is read.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import typer

from conftest import seqtrain, write_wav
from seqtrain import config, reference, search_space
from seqtrain.cli import app
from seqtrain.errors import ConfigError
from seqtrain.overrides import Overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    ROOT / "ARCHITECTURE.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "recipes").glob("*.md")),
]
BLOCK = re.compile(r"^```(bash|console)\n(.*?)^```", re.S | re.M)
SETUP = {
    "git",
    "cd",
    "source",
    "python3.11",
    "export",
    "tensorboard",
    "ls",
    "cat",
    "head",
    "nvidia-smi",
}  # not ours to check


def documented_commands() -> list[tuple[str, str, str | None]]:
    """(where: "FILE:LINE", command, the error it documents or None) for every command of every page. In a
    ```console block, a command followed by an `error: ...` line documents that it is refused with it."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in BLOCK.finditer(text):
            first_line = text[: block.start(2)].count("\n") + 1
            lines = block.group(2).split("\n")
            i = 0
            while i < len(lines):
                start, line = i, lines[i]
                while line.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                expected = None
                if block.group(1) == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                    if i < len(lines) and lines[i].startswith("error: "):
                        expected = lines[i].removeprefix("error: ")
                if line.strip() and not line.lstrip().startswith("#"):
                    found.append((f"{page.relative_to(ROOT)}:{first_line + start}", line.strip(), expected))
    return found


def check(command: str) -> None:
    argv = shlex.split(command, comments=True)
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # environment settings before the command
        argv.pop(0)
    if not argv or argv[0] in SETUP or argv[:3] == ["python", "-m", "venv"]:
        return
    if argv[0] == "seqtrain":
        return check_seqtrain(argv[1:])
    if argv[:3] == ["python", "-m", "seqtrain"]:
        return check_seqtrain(argv[3:])
    if argv[:3] == ["python", "-m", "seqtrain.reference"]:
        return
    if argv[0] == "torchrun":
        return check_seqtrain(argv[argv.index("seqtrain") + 1 :])
    if argv[0] == "python" and argv[1].startswith("bench/"):
        module = importlib.import_module("bench." + Path(argv[1]).stem)
        try:
            module.parser().parse_args(argv[2:])
        except SystemExit as e:
            raise AssertionError(f"{argv[1]} refuses its flags: {' '.join(argv[2:])}") from e
        return
    if argv[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        assert set(argv[1:]) <= targets, f"no make target {set(argv[1:]) - targets}"
        return
    if argv[0] == "pip":
        extras = set(re.findall(r"^(\w+) = \[", (ROOT / "pyproject.toml").read_text(), re.M))
        for named in re.findall(r"\[([\w,]+)\]", " ".join(argv)):
            assert set(named.split(",")) <= extras, f"no extra {set(named.split(',')) - extras}"
        return
    raise AssertionError(f"a command this test does not know: {argv[0]}")


def check_seqtrain(args: list[str]) -> None:
    """Parse with seqtrain's own command line, then compose what composes."""
    group = typer.main.get_command(app)
    with group.make_context("seqtrain", list(args), resilient_parsing=False) as context:
        name, command, rest = group.resolve_command(context, list(args))
        with command.make_context(name, rest, parent=context) as sub:
            params = sub.params
    if name == "tune" and params.get("report"):
        return  # prints a study that exists
    if name in ("fit", "config", "tune"):
        recipe, overrides = config.split_recipe(params["overrides"] or [])
        if name == "tune":
            plain, space = search_space.parse(overrides)
            search_space.check(recipe, plain.without("run_dir"), space)
        elif params.get("multirun"):
            for combination in config.expand_sweeps(overrides):
                config.compose(recipe, combination)
        else:
            config.compose(recipe, overrides)
    elif name == "evaluate":
        Overrides.of([a for a in params["args"] if "=" in a])


COMMANDS = documented_commands()


def test_the_pages_document_commands():
    assert len(COMMANDS) > 60 and any("README.md" in where for where, _, _ in COMMANDS)


@pytest.mark.parametrize("where, command, expected", COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_every_documented_command_parses_and_composes(where, command, expected):
    """A documented command is accepted, or refused with exactly the error line the page shows."""
    try:
        check(command)
    except ConfigError as e:
        if expected is None or str(e) != expected:
            pytest.fail(f"{where}: `{command}`: {e}" + (f" (the page shows: {expected})" if expected else ""))
        return
    except Exception as e:  # a usage error of the command line (typer's), an unknown flag, a bad value
        pytest.fail(f"{where}: `{command}`: {type(e).__name__}: {e}")
    assert expected is None, f"{where}: `{command}` is accepted, but the page shows it refused with: {expected}"


def test_the_options_page_is_the_generated_one_and_every_option_says_what_it_is():
    page = reference.page()
    assert (ROOT / "docs" / "options.md").read_text() == page, "run `make docs` and commit docs/options.md"
    silent = [line for line in page.splitlines() if re.fullmatch(r"\| `[^`]+` \| `[^`]*` \|  \|", line)]
    assert not silent, f"options without a comment in their dataclass: {silent}"


YOUR_DATA = re.compile(r"<!-- your-data: (\w+) -->\n```bash\n(.*?)```", re.S)
QUICK = ["trainer.max_time=null", "trainer.max_steps=3", "trainer.val_every_steps=3", "trainer.log_embeddings=false"]


def your_files(folder: Path) -> None:
    """Small files in each layout the README's "Train on your own data" shows, under the names it uses."""
    rng = np.random.default_rng(0)
    words = ["the", "film", "is", "dull", "moving", "a", "plot", "witty", "not", "bad"]
    speakers = ["ROMEO:", "JULIET:"]
    (folder / "shakespeare.txt").write_text(
        "".join(f"{speakers[i % 2]}\n{' '.join(rng.choice(words, 8))}.\n" for i in range(400))
    )
    rows = [f"{' '.join(rng.choice(words, 6))}\t{rng.choice(['pos', 'neg'])}" for _ in range(120)]
    (folder / "reviews.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    pairs = [(" ".join(rng.choice(words, 5)), " ".join(rng.choice(words, 5))) for _ in range(60)]
    for split, chunk in (("train", pairs[:50]), ("valid", pairs[50:])):
        (folder / f"{split}.de").write_text("".join(de + "\n" for de, _ in chunk))
        (folder / f"{split}.en").write_text("".join(en + "\n" for _, en in chunk))
    for word in ("yes", "no"):
        for i in range(24):
            write_wav(folder / "words" / word / f"{i:08x}_nohash_{i % 3}.wav", 0.3, 16000, seed=i)
    write_wav(folder / "words" / "yes" / "0a7c2a8d_nohash_0.wav", 0.3, 16000)
    days = [f"2024-{1 + d // 28:02d}-{1 + d % 28:02d}" for d in range(84)]
    lines = [
        f"shop{s},{day},{100 + 20 * np.sin(d * 2 * np.pi / 7) + rng.normal(0, 3) + 10 * s:.1f}"
        for s in range(4)
        for d, day in enumerate(days)
    ]
    (folder / "sales.csv").write_text("id,date,sales\n" + "\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["char_lm", "sentiment", "seq2seq", "speech", "forecast"])
def test_the_readme_s_own_commands_train_and_use_each_recipe_on_your_data(recipe, tmp_path, monkeypatch):
    """What a newcomer runs: the README's commands, on files in the layouts it shows (with a budget of 3 steps)."""
    block = dict(YOUR_DATA.findall((ROOT / "README.md").read_text()))[recipe]
    your_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    for line in block.strip().splitlines():
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] == "fit":
            argv += QUICK
        result = seqtrain(*argv)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        assert result.stdout.strip(), line
