"""A non-editable install works from any directory: the configs travel inside the wheel."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # processes and timeouts: deselect with -m 'not slow' while iterating

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_the_configs_and_runs_from_elsewhere(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("seqtrain-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import seqtrain.config as c; print(c.config_root()); c.compose('char_lm', ['optim=sgd'])",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "site" / "seqtrain" / "_configs")


def test_torch_is_a_range_that_admits_the_tested_releases_and_cuda_builds():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_requirement = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    for release in ("2.11.0", "2.13.0", "2.13.0+cu130", "2.14.1"):
        assert torch_requirement.specifier.contains(release), release
    assert not torch_requirement.specifier.contains("2.10.0")  # below the lowest release tested (make parity)


def test_installing_the_wheel_keeps_the_installed_torch(tmp_path):
    """pip resolves seqtrain's requirements against this venv, offline: the torch already here (2.13 in
    make test's venv, 2.11 in make parity's) must satisfy them, so nothing but seqtrain is installed."""
    import torch

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("seqtrain-*.whl"))
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--report", str(report), f"{wheel}[dev]"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    installs = {item["metadata"]["name"] for item in json.loads(report.read_text())["install"]}
    assert installs == {"seqtrain"}, f"would also install {installs - {'seqtrain'}} beside torch {torch.__version__}"
