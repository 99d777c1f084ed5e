"""Running an export (seqtrain/export.py writes them) through onnxruntime or TorchScript, in the place
of the run's model, so that `seqtrain sample` and `seqtrain evaluate` check it on the same inputs.

Each graph becomes a callable of named tensors returning a dict of named tensors; the recipe's
`from_export` wraps them in a module with the model's own interface.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seqtrain import recipes
from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.recipe import Recipe

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # an export dir's model files, by format
MANIFEST = "manifest.json"  # recipe, format and each graph's inputs and outputs (seqtrain/export.py writes it)


def missing(error: ImportError) -> ConfigError:
    return ConfigError(f"ONNX needs {error.name}: pip install 'seqtrain[export]' (onnx, onnxruntime, onnxscript)")


def home(path: Path) -> Path | None:
    """The export dir `path` is or lies in (a dir with a manifest, or a model file in one); None when
    `path` is no export. A model file without a manifest beside it is refused, not taken for a run."""
    if path.is_dir():
        return path if (path / MANIFEST).is_file() else None
    if path.suffix not in FORMATS.values() or not path.is_file():
        return None
    if path.suffix == ".onnx" and not (path.parent / MANIFEST).is_file():
        raise CheckpointError(f"{path} is not a seqtrain export (no {MANIFEST} beside it)")
    return path.parent if (path.parent / MANIFEST).is_file() else None


def load_model(path: Path) -> tuple[Recipe, torch.nn.Module, dict]:
    """(recipe, the export wrapped as the model, {"recipe", "vocab", "config", "manifest"}), as
    `seqtrain.rundir.load_model` returns for a checkpoint."""
    from omegaconf import OmegaConf

    root = home(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        recipe, format = manifest["recipe"], manifest["format"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{root / MANIFEST}: not a seqtrain export manifest ({e})") from None
    if recipe not in recipes.names() or format not in FORMATS:
        raise CheckpointError(f"{root / MANIFEST}: unknown recipe {recipe!r} or format {format!r}")
    graphs = {
        name: (OnnxGraph if format == "onnx" else ScriptGraph)(root / spec["file"], spec, recipe)
        for name, spec in manifest["graphs"].items()
    }
    state = {
        "recipe": recipe,
        "vocab": json.loads((root / "vocab.json").read_text()),
        "manifest": manifest,
        "config": OmegaConf.to_container(OmegaConf.load(root / "config.yaml")),
    }
    found = recipes.get(recipe)
    return found, found.from_export(graphs, state).eval(), state


class ExportedGraph:
    """Named tensors in, a dict of named tensors out, whatever runs the file."""

    def __init__(self, spec: dict):
        self.inputs = {i["name"]: i for i in spec["inputs"]}
        self.outputs = [o["name"] for o in spec["outputs"]]

    def zeros(self, name: str, batch: int) -> torch.Tensor:
        """A zero tensor of input `name`'s shape for a batch (the initial recurrent state)."""
        spec = self.inputs[name]
        return torch.zeros(
            [batch if size == "batch" else size for size in spec["shape"]], dtype=getattr(torch, spec["dtype"])
        )


class OnnxGraph(ExportedGraph):
    def __init__(self, file: Path, spec: dict, recipe: str):
        try:
            import onnxruntime
        except ImportError as e:
            raise missing(e) from None
        super().__init__(spec)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
        # Between calls the caller runs torch code (sampling, beam bookkeeping) on the same cores; idle
        # onnxruntime threads that spin-wait would take those cores from it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types do not share a public base
            raise CheckpointError(f"{file}: onnxruntime cannot load it ({' '.join(str(e).split())[:200]})") from None
        made = self.session.get_modelmeta().custom_metadata_map
        if made.get("seqtrain_recipe") != recipe:
            raise CheckpointError(
                f"{file} is not a seqtrain export of a {recipe} run (its metadata says {made or 'nothing'})"
            )

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in tensors.items()}
        return {
            name: torch.from_numpy(value) for name, value in zip(self.outputs, self.session.run(self.outputs, feed))
        }


class ScriptGraph(ExportedGraph):
    def __init__(self, file: Path, spec: dict, recipe: str):
        super().__init__(spec)
        extra = {"seqtrain.json": ""}
        try:
            self.module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra).eval()
            made = json.loads(extra["seqtrain.json"] or "{}")
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{file}: not a TorchScript file ({' '.join(str(e).split())[:200]})") from None
        if made.get("recipe") != recipe:
            raise CheckpointError(f"{file} is not a seqtrain export of a {recipe} run")

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = set(self.inputs) - set(tensors)
        if missing:
            raise ConfigError(f"the export needs inputs {sorted(missing)}")
        values = self.module(*(tensors[name] for name in self.inputs))
        return dict(zip(self.outputs, values if isinstance(values, tuple) else (values,)))
