"""A tuning run's results: the table (printed, CSV, JSON), a plot page, and the best trial for `train --from-tuning`."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from imgclf_contract import metrics
from launcher import charts
from launcher.errors import LauncherError
from launcher.progress import text_table
from launcher.records import TuningRun
from launcher.tuning.spec import Range, TuningSpec

BEST_FILE = "best.json"


@dataclass(frozen=True)
class TrialRow:
    trial: int
    job_name: str
    hyperparameters: dict[str, Any]
    objective: float | None
    status: str  # Completed, Stopped (early), Failed
    duration: float | None  # seconds
    stopped_early: bool
    stopped_at_epoch: int | None = None
    curve: dict[int, float] = field(default_factory=dict)  # epoch -> the per-epoch metric the tuner judged it by


def best_row(spec: TuningSpec, rows: list[TrialRow]) -> TrialRow | None:
    scored = [r for r in rows if r.status == "Completed" and r.objective is not None]
    if not scored:
        return None
    pick = max if spec.direction == "Maximize" else min
    return pick(scored, key=lambda r: r.objective)


def table(rows: list[TrialRow]) -> str:
    names = sorted({name for r in rows for name in r.hyperparameters})
    header = ["trial", *names, "objective", "status", "seconds", "stopped early"]
    lines = [header] + [
        [
            str(r.trial),
            *(_short(r.hyperparameters.get(n)) for n in names),
            "" if r.objective is None else f"{r.objective:.6g}",
            r.status,
            "" if r.duration is None else f"{r.duration:.0f}",
            f"yes (epoch {r.stopped_at_epoch})" if r.stopped_early else "no",
        ]
        for r in rows
    ]
    return text_table(lines)


def write_results(spec: TuningSpec, rows: list[TrialRow], folder: Path, run: TuningRun) -> None:
    """Save results.csv, results.json, results.html and best.json in `folder`; print the table; note in `run` where
    they are, how many trials ended and which was best."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r.trial)
    names = sorted({name for r in rows for name in r.hyperparameters})
    with (folder / "results.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["trial", "job_name", *names, "objective", "status", "seconds", "stopped_early"])
        for r in rows:
            writer.writerow(
                [
                    r.trial,
                    r.job_name,
                    *(r.hyperparameters.get(n) for n in names),
                    r.objective,
                    r.status,
                    r.duration,
                    r.stopped_early,
                ]
            )
    (folder / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    (folder / "results.html").write_text(_plots(spec, rows, names))
    best = best_row(spec, rows)
    print(table(rows), flush=True)
    run.trials, run.stopped_early = len(rows), sum(r.stopped_early for r in rows)
    run.results, run.plot = str(folder / "results.csv"), str(folder / "results.html")
    if best is not None:
        run.best = {
            "trial": best.trial,
            "job_name": best.job_name,
            "objective": best.objective,
            "tuned_hyperparameters": best.hyperparameters,
            "hyperparameters": {**spec.training.hyperparameters, **best.hyperparameters},
        }
        (folder / BEST_FILE).write_text(json.dumps(run.best, indent=2))


def load_best_hyperparameters(run: TuningRun) -> dict[str, Any]:
    """The best trial's full hyperparameters from a tuning record, for `launcher train --from-tuning`."""
    if not run.best:
        raise LauncherError(f"tuning run {run.name} has no completed trial to take hyperparameters from")
    return dict(run.best["hyperparameters"])


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- plots: objective by trial and by each hyperparameter, each trial's curve, as inline SVG ----------------------

WIDE_RANGE = 10  # a positive range whose ends are this far apart or more is drawn on a log axis


@dataclass(frozen=True)
class Axis:
    """How one hyperparameter is drawn: on a log or linear scale, integer ticks, or as evenly spaced categories."""

    label: str
    log: bool = False
    integer: bool = False
    categories: tuple[Any, ...] = ()  # drawn at 0, 1, ... and labelled with these, in this order

    def position(self, value: Any) -> float:
        return self.categories.index(value) if self.categories else value


def hyperparameter_axis(name: str, declared: Range | None, values: list[Any]) -> Axis:
    """The declared range's kind and scaling decide; a value with no declared range is judged by what it took."""
    if declared is not None and declared.type == "categorical":  # every value the search could take, in order
        categories = _typed(declared.values or [], values)
        return Axis(name, categories=categories + tuple(sorted(set(values) - set(categories), key=str)))
    if values and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return Axis(name, categories=tuple(sorted(set(values), key=str)))
    low, high = (declared.min, declared.max) if declared else (min(values), max(values))
    wide = low is not None and high is not None and low > 0 and high / low >= WIDE_RANGE
    log = declared.scaling == "Logarithmic" if declared and declared.scaling != "Auto" else wide
    integer = (declared.type == "integer") if declared else all(isinstance(v, int) for v in values)
    return Axis(name, log=log, integer=integer)


def _typed(declared: list[Any], taken: list[Any]) -> tuple[Any, ...]:
    """A categorical range's values as the trials report them (a config's "32" is the trial's 32)."""
    kinds = {type(v) for v in taken}
    if len(kinds) == 1 and (kind := kinds.pop()) in (int, float):
        return tuple(kind(v) for v in declared)
    return tuple(declared)


def _scatter(title: str, axis: Axis, y_label: str, points: list[tuple[Any, float]]) -> str:
    """One chart of the objective against a hyperparameter (or the trial number), as inline SVG."""
    if not points:
        return ""
    figure, axes = charts.new_figure(6.4, 3.4)
    axes.scatter([axis.position(x) for x, _ in points], [y for _, y in points], color="#1f77b4")
    if axis.categories:
        axes.set_xticks(range(len(axis.categories)), [str(c) for c in axis.categories])
        axes.set_xlim(-0.5, len(axis.categories) - 0.5)
    elif axis.log:
        axes.set_xscale("log")
    elif axis.integer:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(title=title, xlabel=axis.label, ylabel=y_label)
    axes.grid(alpha=0.3)
    return _figure(title, figure)


def _curves(title: str, y_label: str, rows: list[TrialRow]) -> str:
    """Each trial's per-epoch metric, one line a trial; trials stopped early end where they were stopped."""
    drawn = [r for r in rows if r.curve]
    if not drawn:
        return ""
    figure, axes = charts.new_figure(6.4, 3.4)
    for row in drawn:
        epochs = sorted(row.curve)
        style = "--" if row.stopped_early else "-"
        axes.plot(epochs, [row.curve[e] for e in epochs], style, marker="o", markersize=3, label=f"trial {row.trial}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(title=title, xlabel="epoch", ylabel=y_label)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncols=2 if len(drawn) > 6 else 1)
    return _figure(title, figure)


def _figure(title: str, figure: Any) -> str:
    return f'<figure aria-label="{html.escape(title)}">{charts.inline_svg(figure)}</figure>'


def _plots(spec: TuningSpec, rows: list[TrialRow], names: list[str]) -> str:
    scored = [r for r in rows if r.objective is not None]
    objective = spec.objective_metric
    trial_axis = Axis("trial", integer=True)
    drawn = [_scatter(f"{objective} by trial", trial_axis, objective, [(r.trial, r.objective) for r in scored])]
    judge = metrics.per_epoch_judge(spec.direction)
    drawn.append(_curves(f"{judge} by epoch, each trial", judge, rows))
    for name in names:
        tried = [r for r in scored if r.hyperparameters.get(name) is not None]
        axis = hyperparameter_axis(name, spec.ranges.get(name), [r.hyperparameters[name] for r in tried])
        points = [(r.hyperparameters[name], r.objective) for r in tried]
        drawn.append(_scatter(f"{objective} by {name}", axis, objective, points))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Tuning {html.escape(spec.name)}</title>'
        '</head><body style="font-family:sans-serif">'
        f"<h1>Tuning {html.escape(spec.name)}</h1><p>{spec.strategy} search, {spec.direction.lower()} "
        f"{html.escape(objective)}; each point a completed trial (trials stopped early are not drawn there: "
        f"their last reported value is not an objective; their curves end dashed where they were stopped).</p>"
        f"{''.join(drawn)}<pre>{html.escape(table(rows))}</pre></body></html>"
    )
