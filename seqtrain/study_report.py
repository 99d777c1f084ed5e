"""What a study found: its trials as table rows, best.json holding the best trial as a ready
`seqtrain fit` command, and Optuna's plots drawn with matplotlib into the study dir."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from seqtrain.errors import ConfigError
from seqtrain.tune import open_storage, quiet_optuna


@dataclass
class Report:
    study_dir: Path
    metric: str
    rows: list[dict[str, str]]  # per trial: trial, state, value, params, run dir
    best: dict | None  # what best.json holds; None before a trial completes
    plots: list[Path] = field(default_factory=list)
    skipped_plots: list[str] = field(default_factory=list)  # "name: why"


def report(study_dir: Path, storage: str | None = None) -> Report:
    """Read a study dir's study and write best.json and the plots there."""
    study = load(study_dir, storage)
    with quiet_optuna():
        return summarize(study, study_dir)


def load(study_dir: Path, storage: str | None = None) -> optuna.Study:
    """The study of a study dir, from the storage its study.json names (or `storage`, where that URL
    needs the password study.json leaves out)."""
    info_file = study_dir / "study.json"
    if not info_file.is_file():
        raise ConfigError(f"{study_dir} is not a study dir (no study.json)")
    info = json.loads(info_file.read_text())
    with quiet_optuna():
        try:
            return optuna.load_study(study_name=info["study"], storage=open_storage(storage or info["storage"], None))
        except KeyError as e:
            raise ConfigError(f"no study {info['study']!r} in {storage or info['storage']}") from e


def summarize(study: optuna.Study, study_dir: Path) -> Report:
    identity = study.user_attrs["seqtrain"]
    trials = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    retried_as = {n: t.number for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    rows = []
    for t in trials:
        value = t.user_attrs.get("best")
        state = t.state.name.lower() + (f", retried as {retried_as[t.number]}" if t.number in retried_as else "")
        rows.append(
            {
                "trial": str(t.number),
                "state": state,
                "value": "" if value is None else f"{value:.4g}",
                "params": " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()),
                "run dir": t.user_attrs.get("run_dir", ""),
            }
        )
    result = Report(study_dir, identity["metric"], rows, None)
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        overrides = best.user_attrs["overrides"]
        result.best = {
            "study": study.study_name,
            "trial": best.number,
            "metric": identity["metric"],
            "mode": identity["mode"],
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs["run_dir"],
            "overrides": overrides,
            "command": shlex.join(["seqtrain", "fit", f"recipe={identity['recipe']}", *overrides]),
        }
        (study_dir / "best.json").write_text(json.dumps(result.best, indent=1) + "\n")
    _plot(study, result)
    return result


def _plot(study: optuna.Study, result: Report) -> None:
    """History, parameter importances, parallel coordinates: Optuna draws them on pyplot (Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from optuna.visualization import matplotlib as plots

    if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) < 2:
        result.skipped_plots.append("all: they need two completed trials")
        return
    for name, draw in (
        ("history", plots.plot_optimization_history),
        ("importances", plots.plot_param_importances),
        ("parallel_coordinates", plots.plot_parallel_coordinate),
    ):
        try:
            axes = draw(study, target_name=result.metric)
        except (ValueError, RuntimeError) as e:
            result.skipped_plots.append(f"{name}: {e}")
            continue
        path = result.study_dir / f"{name}.png"
        axes.figure.savefig(path, dpi=120, bbox_inches="tight")
        pyplot.close(axes.figure)
        result.plots.append(path)
