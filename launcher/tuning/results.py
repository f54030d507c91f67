"""A tuning run's results: the table (printed, CSV, JSON), a plot page, and the best trial for `train --from-tuning`."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import charts
from launcher.errors import LauncherError
from launcher.records import TuningRun
from launcher.tuning.spec import TuningSpec

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
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


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


# -- plots: objective by trial and by each hyperparameter, as inline SVG -------------------------------------


def _scatter(title: str, x_label: str, y_label: str, points: list[tuple[float, float]], log_x: bool = False) -> str:
    """One chart of the objective against `x_label`, as inline SVG."""
    if not points:
        return ""
    figure, axes = charts.new_figure(6.4, 3.4)
    axes.scatter([x for x, _ in points], [y for _, y in points], color="#1f77b4")
    if log_x:
        axes.set_xscale("log")
    axes.set(title=title, xlabel=x_label, ylabel=y_label)
    axes.grid(alpha=0.3)
    return f'<figure aria-label="{html.escape(title)}">{charts.inline_svg(figure)}</figure>'


def _plots(spec: TuningSpec, rows: list[TrialRow], names: list[str]) -> str:
    scored = [r for r in rows if r.objective is not None]
    drawn = [
        _scatter(
            f"{spec.objective_metric} by trial",
            "trial",
            spec.objective_metric,
            [(r.trial, r.objective) for r in scored],
        )
    ]
    ranges = {r.name: r for r in spec.ranges}
    for name in names:
        numeric = [r for r in scored if isinstance(r.hyperparameters.get(name), int | float)]
        values = [r.hyperparameters[name] for r in numeric]
        declared_log = name in ranges and ranges[name].scaling == "Logarithmic"
        log_x = declared_log or bool(values and min(values) > 0 and max(values) / min(values) >= 10)
        drawn.append(
            _scatter(
                f"{spec.objective_metric} by {name}",
                name,
                spec.objective_metric,
                [(r.hyperparameters[name], r.objective) for r in numeric],
                log_x=log_x,
            )
        )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Tuning {html.escape(spec.name)}</title>'
        '</head><body style="font-family:sans-serif">'
        f"<h1>Tuning {html.escape(spec.name)}</h1><p>{spec.strategy} search, {spec.direction.lower()} "
        f"{html.escape(spec.objective_metric)}; each point a completed trial (trials stopped early are not drawn: "
        f"their last reported value is not an objective).</p>{''.join(drawn)}"
        f"<pre>{html.escape(table(rows))}</pre></body></html>"
    )
