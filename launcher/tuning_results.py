"""A tuning run's results: the table (printed, CSV, JSON), a plot page, and the best trial for `train --from-tuning`."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.records import TuningRun
from launcher.tuning_spec import TuningSpec

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
            writer.writerow([r.trial, r.job_name, *(r.hyperparameters.get(n) for n in names), r.objective, r.status,
                             r.duration, r.stopped_early])  # fmt: skip
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

W, H, M = 420, 260, 45


def _scatter(title: str, x_label: str, points: list[tuple[float, float, bool]], log_x: bool = False) -> str:
    e = html.escape
    if not points:
        return ""
    xs = [math.log10(x) if log_x else x for x, _, _ in points]
    ys = [y for _, y, _ in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return M + (W - 2 * M) * (x - x0) / (x1 - x0), H - M - (H - 2 * M) * (y - y0) / (y1 - y0)

    dots = "".join(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{"#d62728" if stopped else "#1f77b4"}"/>'
        for (cx, cy), (_, _, stopped) in zip((at(x, y) for x, y in zip(xs, ys, strict=True)), points, strict=True)
    )
    scale = " (log10)" if log_x else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{e(title)}">'
        f'<text x="{M}" y="18" font-size="13" font-weight="bold">{e(title)}</text>'
        f'<rect x="{M}" y="{M}" width="{W - 2 * M}" height="{H - 2 * M}" fill="none" stroke="#999"/>'
        f'<text x="{W / 2}" y="{H - 8}" font-size="11" text-anchor="middle">{e(x_label)}{scale}: '
        f"{x0:.3g} to {x1:.3g}</text>"
        f'<text x="4" y="{M - 6}" font-size="10">{y1:.4g}</text>'
        f'<text x="4" y="{H - M}" font-size="10">{y0:.4g}</text>'
        f"{dots}</svg>"
    )


def _plots(spec: TuningSpec, rows: list[TrialRow], names: list[str]) -> str:
    scored = [r for r in rows if r.objective is not None]
    charts = [_scatter(f"{spec.objective_metric} by trial", "trial",
                       [(r.trial, r.objective, r.stopped_early) for r in scored])]  # fmt: skip
    ranges = {r.name: r for r in spec.ranges}
    for name in names:
        numeric = [r for r in scored if isinstance(r.hyperparameters.get(name), int | float)]
        values = [r.hyperparameters[name] for r in numeric]
        declared_log = name in ranges and ranges[name].scaling == "Logarithmic"
        log_x = declared_log or bool(values and min(values) > 0 and max(values) / min(values) >= 10)
        charts.append(_scatter(f"{spec.objective_metric} by {name}", name,
                               [(r.hyperparameters[name], r.objective, r.stopped_early) for r in numeric],
                               log_x=log_x))  # fmt: skip
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Tuning {html.escape(spec.name)}</title>'
        '</head><body style="font-family:sans-serif">'
        f"<h1>Tuning {html.escape(spec.name)}</h1><p>{spec.strategy} search, {spec.direction.lower()} "
        f"{html.escape(spec.objective_metric)}; blue: completed trials, red: stopped early (their last reported "
        f"value is not an objective, so they are not drawn).</p>{''.join(charts)}"
        f"<pre>{html.escape(table(rows))}</pre></body></html>"
    )
