"""`seqtrain export`: a trained run as files that run without seqtrain, in ONNX or TorchScript.

Each recipe says what its graphs are (`export_graphs` in its module: modules of plain tensors with
example inputs); this module traces them and writes the export dir:

    model.onnx | model.pt          (seq2seq: encoder.* and decoder.*, the step)
    vocab.json                     the run's vocabulary: tokenizer and class names, as JSON
    sentencepiece.model            where the tokenizer is one, for the sentencepiece library itself
    manifest.json                  recipe, format, opset, seqtrain version, checkpoint, and each graph's
                                   inputs and outputs with their shapes and dtypes
    config.yaml, overrides.yaml    the run's, so that `seqtrain evaluate EXPORT` re-composes its data

Which ONNX exporter: the TorchScript-based one (`dynamo=False`). It turns a packed recurrent stack
(`pack_padded_sequence` + nn.LSTM/GRU/RNN) into ONNX's own LSTM/GRU/RNN ops with a `sequence_lens`
input, so one graph serves any batch and lengths and padding stays invisible, as in training.
torch.export (`dynamo=True`) cannot: packing branches on the lengths' values and makes shapes from
them. The Li-GRU's step loop is compiled by TorchScript while tracing (seqtrain/models/ligru.py), so
it stays a loop. The TorchScript exporter has no FFT, though, so the speech features alone go through
torch.export, and the two ONNX graphs are joined into one file with `onnx.compose`. TorchScript files
are `torch.jit.trace`s of the same graphs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from seqtrain import __version__
from seqtrain.data.vectors import write_word2vec_text
from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.exported import FORMATS, MANIFEST, missing
from seqtrain.recipe import Graph
from seqtrain.rundir import MEMBERS, RunDir, load_model

OPSET = 20  # ONNX opset; onnxruntime 1.17 and later run it


VECTORS = "vectors"  # the learnt embedding tables as word2vec text, not a model


def export(run_dir: Path, format: str, out: Path | None, which: str) -> Path:
    """Write the export of `run_dir`'s best or last checkpoint to `out` (default RUN/export, or RUN/vectors for
    --format vectors); returns the dir. Everything is written to a temporary dir beside it first, so a failure
    leaves nothing behind. A bagged run exports each member into `members/<i>/`, so `sample` and `evaluate`
    read the export as the same ensemble."""
    if format not in (*FORMATS, VECTORS):
        raise ConfigError(f"unknown export format {format!r}; valid: {', '.join((*FORMATS, VECTORS))}")
    if which not in ("best", "last"):
        raise ConfigError(f"--checkpoint must be best or last, got {which!r}")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run dir")
    out = run_dir / (VECTORS if format == VECTORS else "export") if out is None else out
    if out.exists():
        raise ConfigError(f"{out} exists; give another --out or remove it (an export never overwrites)")
    members = [member.path for member in RunDir(run_dir).members()]
    if format == VECTORS and members != [run_dir]:
        raise ConfigError(f"{run_dir} is a bagged run: each member has its own vectors; give one, e.g. {members[0]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if format == VECTORS:
            write_vectors(run_dir, which, work)
        elif members == [run_dir]:
            write_one(run_dir, format, which, work)
        else:
            for i, member in enumerate(members):
                write_one(member, format, which, work / MEMBERS / str(i))
            for name in ("config.yaml", "overrides.yaml"):
                shutil.copy(run_dir / name, work / name)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def checkpoint_of(run_dir: Path, which: str) -> Path:
    path = RunDir(run_dir).find_checkpoint(prefer=which)
    if path.name != f"{which}.pt":
        raise CheckpointError(f"{run_dir} has no {which}.pt checkpoint")
    return path


def write_vectors(run_dir: Path, which: str, work: Path) -> None:
    """Each embedding table of the run's model as `<table>.vec` (word2vec text), one word per row: the file
    `model.pretrained_embeddings` reads, so one run's vectors can start another's. Tokens that hold white
    space cannot be written in that format and are left out (a character model's space, for one)."""
    recipe, model, state = load_model(checkpoint_of(run_dir, which))
    tables = recipe.embeddings(model, state["vocab"])
    if not tables:
        raise ConfigError(f"a {recipe.name} model has no embedding table to write as vectors")
    for table in tables:
        write_word2vec_text(work / f"{table.name}.vec", table.labels, table.vectors.detach().float())


def write_one(run_dir: Path, format: str, which: str, work: Path) -> None:
    """One run's checkpoint as an export dir `work`."""
    path = checkpoint_of(run_dir, which)
    recipe, model, state = load_model(path)
    graphs = recipe.export_graphs(model, state["vocab"], format)
    work.mkdir(parents=True, exist_ok=True)
    manifest = {
        "seqtrain_version": __version__,
        "recipe": state["recipe"],
        "format": format,
        "checkpoint": str(path),
        "step": state.get("trainer", {}).get("step"),
        "metrics": state.get("metrics"),
        "graphs": {},
    }
    if format == "onnx":
        manifest |= {"exporter": "torch.onnx (TorchScript-based; speech features: torch.export)", "opset": OPSET}
    else:
        manifest |= {"exporter": "torch.jit.trace", "torch_version": torch.__version__}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracers' warnings are about code paths the examples cover
        for name in dict.fromkeys(g.name for g in graphs):
            chain = [g for g in graphs if g.name == name]
            file = work / f"{name}{FORMATS[format]}"
            (write_onnx if format == "onnx" else write_torchscript)(chain, file, state["recipe"])
            manifest["graphs"][name] = {
                "file": file.name,
                "inputs": describe(chain[0].inputs, chain[0].axes),
                "outputs": describe(outputs(chain), chain[-1].axes),
            }
    write_side_files(work, run_dir, state["vocab"], manifest)


def outputs(chain: list[Graph]) -> dict[str, torch.Tensor]:
    """The last graph's outputs on the examples, by name (the first graphs feed the later ones)."""
    values = chain[-1].module(*chain[-1].inputs.values())
    return dict(zip(chain[-1].outputs, values if isinstance(values, tuple) else (values,)))


def describe(tensors: dict[str, torch.Tensor], axes: dict[str, dict[int, str]]) -> list[dict]:
    """Name, dtype and shape of each tensor, dynamic axes by their label."""
    return [
        {
            "name": name,
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": [axes.get(name, {}).get(i, size) for i, size in enumerate(t.shape)],
        }
        for name, t in tensors.items()
    ]


def write_onnx(chain: list[Graph], file: Path, recipe: str) -> None:
    try:
        import onnx
        import onnx.compose
        import onnxscript  # noqa: F401  the torch.export-based exporter's ops
    except ImportError as e:
        raise missing(e) from None

    protos = []
    for graph in chain:
        args = dict(input_names=list(graph.inputs), output_names=graph.outputs, opset_version=OPSET)
        module = graph.module.eval()  # the exporter restores the mode it found, recursively: it must find eval
        if graph.dynamo:
            dynamic = {
                name: {axis: torch.export.Dim.DYNAMIC for axis in graph.axes.get(name, {})} for name in graph.inputs
            }
            program = torch.onnx.export(
                module, tuple(graph.inputs.values()), dynamo=True, dynamic_shapes=dynamic, verbose=False, **args
            )
            protos.append(program.model_proto)
        else:
            axes = {name: graph.axes[name] for name in [*graph.inputs, *graph.outputs] if name in graph.axes}
            with tempfile.TemporaryDirectory() as tmp:
                torch.onnx.export(
                    module, tuple(graph.inputs.values()), f"{tmp}/g.onnx", dynamo=False, dynamic_axes=axes, **args
                )
                protos.append(onnx.load(f"{tmp}/g.onnx"))
    proto = protos[0]
    for after, graph in zip(protos[1:], chain[1:]):
        proto.ir_version = after.ir_version = max(proto.ir_version, after.ir_version)
        proto = onnx.compose.merge_models(proto, after, io_map=[(name, name) for name in graph.inputs])
    onnx.helper.set_model_props(proto, {"seqtrain": __version__, "seqtrain_recipe": recipe})
    onnx.save(proto, str(file))


def write_torchscript(chain: list[Graph], file: Path, recipe: str) -> None:
    if len(chain) != 1:
        raise ValueError("a TorchScript export is one graph per file")
    graph = chain[0]
    traced = torch.jit.trace(graph.module.eval(), tuple(graph.inputs.values()), check_trace=False)
    torch.jit.save(
        traced, str(file), _extra_files={"seqtrain.json": json.dumps({"seqtrain": __version__, "recipe": recipe})}
    )


def write_side_files(work: Path, run_dir: Path, vocab: dict, manifest: dict) -> None:
    """vocab.json, the sentencepiece model(s) as files, the run's config and the manifest."""
    import base64

    (work / "vocab.json").write_text(json.dumps(vocab, indent=1))
    tokenizers = {
        key: value for key, value in vocab.items() if isinstance(value, dict) and value.get("kind") == "sentencepiece"
    }
    for key, tokenizer in tokenizers.items():
        name = "sentencepiece.model" if len(tokenizers) == 1 else f"sentencepiece-{key}.model"
        (work / name).write_bytes(base64.b64decode(tokenizer["model"]))
    for name in ("config.yaml", "overrides.yaml"):
        shutil.copy(run_dir / name, work / name)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
