"""A recipe from a package of its own (tests/plugin, registered through the `seqtrain.recipes` entry point
group) is a recipe like the built-in ones: listed, composed, trained, evaluated, sampled, exported, tuned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "plugin"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The plug-in installed into a folder of its own (the venv stays as it was); the environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def seqtrain(env: dict[str, str], *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seqtrain", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_recipe_from_another_package_is_listed_and_does_everything_a_built_in_one_does(installed, tmp_path):
    listed = seqtrain(installed, "recipes")
    assert "majority   Is a bit string mostly ones?" in listed.stdout and "char_lm" in listed.stdout

    run_dir = tmp_path / "run"
    fit = seqtrain(installed, "fit", "recipe=majority", f"run_dir={run_dir}")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["accuracy"] > 0.8

    scored = json.loads(seqtrain(installed, "evaluate", run_dir).stdout)
    assert scored["accuracy"] > 0.8 and scored["classes"] == ["mostly0", "mostly1"]
    predicted = json.loads(seqtrain(installed, "sample", run_dir, "--text", "11101").stdout)
    assert predicted["label"] == "mostly1"
    refused = seqtrain(installed, "sample", run_dir, "--text", "abc")
    assert refused.returncode == 2 and refused.stderr.strip() == "error: 'abc' is not a string of 0s and 1s"

    exported = seqtrain(installed, "export", run_dir)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(seqtrain(installed, "sample", run_dir / "export", "--text", "11101").stdout) == predicted

    bad = seqtrain(installed, "fit", "recipe=majority", "model.hidden=3", f"run_dir={tmp_path / 'bad'}")
    assert (
        bad.returncode == 2 and bad.stderr.strip() == "error: unknown key model.hidden; valid keys there: hidden_size"
    )
    assert not (tmp_path / "bad").exists()

    study = tmp_path / "study"
    tuned = seqtrain(
        installed,
        "tune",
        "recipe=majority",
        "trainer.max_steps=20",
        "model.hidden_size=choice(8,16)",
        "--trials",
        "2",
        "--sampler",
        "grid",
        f"run_dir={study}",
    )
    assert tuned.returncode == 0, tuned.stderr
    assert json.loads((study / "best.json").read_text())["overrides"]


def test_without_the_package_the_recipe_is_unknown(tmp_path):
    result = seqtrain(dict(os.environ), "fit", "recipe=majority", f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "unknown recipe 'majority'; valid: char_lm" in result.stderr
