"""The `seqtrain` command: parsing and error reporting only; the work happens in `seqtrain.runs`.

Hydra overrides are positional arguments (`recipe=char_lm optim.lr=3e-3`). Errors a user can fix
print as one line and exit non-zero (2 for bad input); `--verbose` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from seqtrain.errors import Interrupted, SeqtrainError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings wrap as paragraphs
    help="Train recurrent and attention sequence models. Start with `seqtrain recipes`.",
)
console = Console(stderr=True, soft_wrap=True)

Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="recipe=NAME and Hydra overrides such as optim.lr=3e-3", show_default=False),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show the traceback of an error.")]


def reports_errors(command):
    """Turn a SeqtrainError into one line and its exit code; unexpected errors also stay one line unless --verbose."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except SeqtrainError as e:
            if kwargs.get("verbose"):
                traceback.print_exc()
            if not isinstance(e, Interrupted) or _main_process():  # rank 0 alone says how to resume
                _print_error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _print_error("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:
            if kwargs.get("verbose"):
                raise
            _print_error(f"{type(e).__name__}: {e} (run with --verbose for the traceback)")
            raise typer.Exit(1) from None

    return wrapper


def _main_process() -> bool:
    from seqtrain.distributed import main_process

    return main_process()


def _print_error(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


@app.command("recipes")
@reports_errors
def list_recipes(verbose: Verbose = False) -> None:
    """List the recipes, one line each: seqtrain's own and those installed packages add."""
    from seqtrain import recipes

    for name in recipes.names():
        print(f"{name:10s} {recipes.get(name).description()}")


@app.command()
@reports_errors
def config(overrides: Overrides = None, verbose: Verbose = False) -> None:
    """Print the config a run would use, as YAML: seqtrain config recipe=NAME KEY=VALUE ...

    The recipe's YAML composed with its groups and your overrides, every default filled in."""
    from omegaconf import OmegaConf

    from seqtrain.config import compose, split_recipe

    recipe, rest = split_recipe(overrides or [])
    print(OmegaConf.to_yaml(OmegaConf.create(compose(recipe, rest).resolved)), end="")


@app.command()
@reports_errors
def fit(
    overrides: Overrides = None,
    multirun: Annotated[
        bool, typer.Option("--multirun", "-m", help="Sweep: one run per combination of comma lists, range(), choice().")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check everything fit would (config, data, model, batching, the run dir) and print the run it would "
            "make as one JSON line; create and train nothing.",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Train: seqtrain fit recipe=NAME KEY=VALUE ...

    Prints the run dir, progress and validations, and at the end the final validation metrics as one JSON
    line. trainer.resume=RUN continues a run; trainer.devices=N trains on N worker processes launched through
    torch.distributed.run (under torchrun, the world comes from it); -m sweeps; --dry-run only checks."""
    from seqtrain import distributed, runs
    from seqtrain.config import compose, expand_sweeps, for_fit, split_recipe
    from seqtrain.errors import ConfigError

    recipe, rest = split_recipe(overrides or [])
    if dry_run:
        for combination in expand_sweeps(rest) if multirun else [rest]:
            print(json.dumps(runs.dry_run(compose(recipe, combination) if multirun else for_fit(recipe, rest))))
        return
    if not multirun:
        cfg = for_fit(recipe, rest)
        if cfg.trainer.devices > 1 and not distributed.launched():
            raise typer.Exit(
                distributed.launch(
                    cfg.trainer.devices, ["fit", *(overrides or []), *(["--verbose"] if verbose else [])]
                )
            )
        run_dir, metrics = runs.fit(cfg, console)
        if distributed.main_process():
            print(json.dumps({"run_dir": str(run_dir), **metrics}))
        return
    if rest.value("trainer.devices") not in (None, 1):
        raise ConfigError(
            "a sweep trains its runs one after another in this process; drop trainer.devices or launch each run alone"
        )
    parent, results = runs.sweep(recipe, rest, console)
    table = Table(title=f"sweep {parent}")
    metric_names = sorted(
        {k for r in results for k, v in r.get("metrics", {}).items() if isinstance(v, (int, float))}
    )  # a bagged run's members: in sweep.json
    for column in ["run", "overrides", *metric_names]:
        table.add_column(column)
    for r in results:
        cells = [f"{r['metrics'][k]:.4g}" for k in metric_names] if "metrics" in r else [f"[red]{r['error']}"]
        table.add_row(Path(r["run_dir"]).name, r["overrides"], *cells)
    Console().print(table)
    if any("error" in r for r in results):
        raise typer.Exit(1)


class SamplerName(StrEnum):
    tpe = "tpe"
    random = "random"
    grid = "grid"


class PrunerName(StrEnum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


@app.command()
@reports_errors
def tune(
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="recipe=NAME, the space ('optim.lr=tag(log, interval(1e-4, 1e-2))', "
            "'model.hidden_size=choice(64, 128)') and overrides for every trial",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[
        int,
        typer.Option(min=1, help="Trials in the study, over all its workers and restarts (grid: at most the grid)."),
    ] = 20,
    study: Annotated[
        Optional[str],
        typer.Option(
            help="Study name: workers with the same name and storage share the study. "
            "Default: a new one named by the time."
        ),
    ] = None,
    storage: Annotated[
        Optional[str], typer.Option(help="SQLAlchemy URL of the study's database. Default: SQLite in the study dir.")
    ] = None,
    sampler: Annotated[
        SamplerName, typer.Option(help="tpe (seeded), random, or grid over choice()/range() spaces.")
    ] = SamplerName.tpe,
    pruner: Annotated[PrunerName, typer.Option(help="Stops hopeless trials at a validation.")] = PrunerName.median,
    prune_after: Annotated[int, typer.Option(min=0, help="median: trials that finish before any is pruned.")] = 5,
    seed: Annotated[int, typer.Option(help="Seeds the sampler of the worker that creates the study.")] = 0,
    heartbeat: Annotated[
        int,
        typer.Option(
            min=1, help="Seconds between a trial's heartbeats; one silent twice as long lost its worker and runs again."
        ),
    ] = 60,
    timeout: Annotated[
        Optional[float], typer.Option(min=0, help="Seconds after which this worker starts no new trial.")
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option(
            metavar="STUDY_DIR", help="Print the table of a study, write its best.json and plots; trains nothing."
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Search hyper-parameters with Optuna: seqtrain tune recipe=NAME 'KEY=interval(A, B)' ... --trials N

    Each trial is a run dir under runs/NAME/tune-STUDY/; workers with the same --study and --storage share one
    study. --report STUDY_DIR prints a study's table again."""
    from seqtrain import study_report
    from seqtrain.config import split_recipe
    from seqtrain.errors import ConfigError
    from seqtrain.tune import TuneOptions
    from seqtrain.tune import tune as run_study

    if report is None:
        recipe, rest = split_recipe(overrides or [])
        options = TuneOptions(
            trials, study, storage, sampler.value, pruner.value, prune_after, seed, heartbeat, timeout
        )
        report = run_study(recipe, rest, options, console)
    elif overrides:
        raise ConfigError("--report prints a study that exists; give it no overrides")
    result = study_report.report(report, storage)
    table = Table(title=f"study {result.study_dir} ({result.metric})")
    for column in ["trial", "state", "value", "params", "run dir"]:
        table.add_column(column, overflow="fold")  # run dirs are to be copied: folded, never cut
    for row in result.rows:
        table.add_row(*row.values())
    out = Console()
    out.width = out.width if out.is_terminal else 200  # in a file or a pipe, one line per trial
    out.print(table)
    if result.best:
        console.print(
            f"best: trial {result.best['trial']}, {result.metric} {result.best['value']:.4g}; "
            f"in {result.study_dir / 'best.json'}, to train it again:\n  {result.best['command']}"
        )
    for skipped in result.skipped_plots:
        console.print(f"no plot {skipped}")
    if result.plots:
        console.print(f"plots: {', '.join(str(p) for p in result.plots)}")


@app.command()
@reports_errors
def sample(
    runs_: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN...",
            help="A run dir (its best checkpoint), a checkpoint file, or an export dir from `seqtrain export`; "
            "several runs of a classifier recipe form an ensemble (so does one bagged run).",
        ),
    ],
    prompt: Annotated[Optional[str], typer.Option(help="char_lm: text to start from.")] = None,
    length: Annotated[int, typer.Option(help="char_lm: characters to generate.")] = 500,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k most likely tokens only.")] = None,
    top_p: Annotated[
        Optional[float], typer.Option(help="Sample from the smallest set covering this probability.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Make sampling reproducible.")] = None,
    text: Annotated[
        Optional[str], typer.Option(help="sentiment and seq2seq: one text to classify or translate.")
    ] = None,
    input_file: Annotated[
        Optional[Path],
        typer.Option(
            help="Many inputs: sentiment and seq2seq one text per line; speech one audio file path per line; "
            "forecast a CSV of series (see --layout), printed back as id,step,lower,forecast,upper."
        ),
    ] = None,
    beam: Annotated[int, typer.Option(min=1, help="seq2seq: beam size; 1 is greedy.")] = 1,
    plot_attention: Annotated[
        Optional[Path], typer.Option(help="seq2seq: write the --text input's attention as a PNG.")
    ] = None,
    audio: Annotated[Optional[Path], typer.Option(help="speech: an audio file to classify.")] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(help="forecast: draw the first six series' history, forecast and interval as a PNG."),
    ] = None,
    layout: Annotated[
        str, typer.Option(help="forecast: --input-file's layout: long (id,timestamp,value rows), rows or columns.")
    ] = "long",
    verbose: Verbose = False,
) -> None:
    """Use a trained run: generate, translate, classify or forecast.

    char_lm generates text from --prompt; seq2seq translates --text or --input-file; a classifier (sentiment,
    speech) prints one JSON line per input with its label and class probabilities, for one run or an ensemble
    of several; forecast prints forecasts as CSV lines. RUN may be an export dir."""
    from seqtrain import runs
    from seqtrain.recipe import SampleOptions

    options = SampleOptions(
        prompt=prompt,
        length=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        text=text,
        input_file=None if input_file is None else str(input_file),
        beam=beam,
        plot_attention=None if plot_attention is None else str(plot_attention),
        audio=None if audio is None else str(audio),
        plot=None if plot is None else str(plot),
        layout=layout,
    )

    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    runs.sample(runs_, options, write)


@app.command()
@reports_errors
def evaluate(
    args: Annotated[
        list[str],
        typer.Argument(
            help="Run dirs (several classifier runs form an ensemble), "
            "then overrides such as data.path=FILE or split=test."
        ),
    ],
    verbose: Verbose = False,
) -> None:
    """Score trained runs: seqtrain evaluate RUN [RUN ...] [KEY=VALUE ...]

    On each run's validation split, or another split (split=test) or other data (data.path=FILE, ...) given as
    overrides; prints one JSON object. Several classifier runs, or a bagged run, are scored alone and as an
    ensemble. RUN may be an export dir."""
    from seqtrain import runs

    run_dirs = [Path(a) for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    if not run_dirs:
        raise typer.BadParameter("give at least one run dir")
    print(json.dumps(runs.evaluate(run_dirs, overrides)))


@app.command()
@reports_errors
def export(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run dir.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx (onnxruntime), torchscript (torch.jit), or vectors: the learnt embedding tables as word2vec "
            "text, for model.pretrained_embeddings of another run.",
        ),
    ] = "onnx",
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="The dir to write; default RUN/export (RUN/vectors for --format vectors). It must not exist."
        ),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    verbose: Verbose = False,
) -> None:
    """Write a run as files that run without seqtrain: seqtrain export RUN

    ONNX or TorchScript graph(s), vocab.json and a manifest, which seqtrain sample and seqtrain evaluate accept
    like a run. --format vectors writes the run's embedding tables instead (word2vec text, one .vec per table)."""
    from seqtrain.export import export as write_export

    print(write_export(run, format, out, checkpoint))


def main() -> None:
    app()
