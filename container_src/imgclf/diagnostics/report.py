"""The report: one JSON per rule, a summary table for the log, and a self-contained HTML page with SVG plots."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path

from imgclf.diagnostics.evidence import Evidence
from imgclf.diagnostics.rule import ERROR, ISSUES, NO_ISSUES, NOT_APPLICABLE, RuleResult
from imgclf.diagnostics.steps import PHASES

HTML_NAME = "report.html"
STATUS_ORDER = {ISSUES: 0, ERROR: 1, NO_ISSUES: 2, NOT_APPLICABLE: 3}
STATUS_COLOURS = {ISSUES: "#c0392b", ERROR: "#8e44ad", NO_ISSUES: "#27ae60", NOT_APPLICABLE: "#7f8c8d"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MAX_POINTS = 2000  # longer series are averaged down to this many points per plot (a point a step below)


def sorted_results(results: Sequence[RuleResult]) -> list[RuleResult]:
    """IssuesFound first (transient findings after those that held to the end), then by kind and name."""
    return sorted(results, key=lambda r: (STATUS_ORDER.get(r.status, 9), r.transient, r.kind, r.rule))


def status_label(result: RuleResult) -> str:
    return f"{result.status} (transient)" if result.transient else result.status


def summary_table(results: Sequence[RuleResult]) -> str:
    """A fixed-width table of rule statuses, IssuesFound first."""
    rows = [("rule", "kind", "status", "fired", "explanation")]
    rows += [(r.rule, r.kind, status_label(r), str(len(r.steps)), r.explanation) for r in sorted_results(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
                     for row in rows)  # fmt: skip


def write_report(folder: Path, results: Sequence[RuleResult], evidence: Evidence, notes: Sequence[str]) -> Path:
    """Write `<rule>.json` for each rule and report.html into `folder`; return the HTML path."""
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        (folder / f"{result.rule}.json").write_text(json.dumps(result.to_json(), indent=2, default=float))
    page = folder / HTML_NAME
    page.write_text(_html(results, evidence, notes))
    return page


# -- HTML ------------------------------------------------------------------------------------------------------


def _html(results: Sequence[RuleResult], evidence: Evidence, notes: Sequence[str]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r.rule)}</td><td>{e(r.kind)}</td>"
        f'<td style="color:{STATUS_COLOURS.get(r.status, "#000")};font-weight:bold">{e(status_label(r))}</td>'
        f"<td>{len(r.steps)}</td><td>{e(r.explanation)}</td><td>{e(r.recommendation or '')}</td>"
        f"<td><code>{e(json.dumps(r.parameters))}</code></td></tr>"
        for r in sorted_results(results)
    )
    advice = "".join(
        f"<li><b>{e(r.rule)}</b>{e(_transient_note(r))}: {e(r.recommendation)}</li>" for r in sorted_results(results)
        if r.status == ISSUES and r.recommendation
    ) or "<li>None: no rule found an issue.</li>"  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Training report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
svg {{ display: block; margin: 1em 0; background: #fff; border: 1px solid #ddd; }}
code {{ font-size: 0.85em; }}
</style></head><body>
<h1>Training report</h1>
<p>Generated {e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))}. {e(" ".join(notes))}</p>
<h2>Recommendations</h2><ul>{advice}</ul>
<h2>Rules</h2>
<table><tr><th>Rule</th><th>Kind</th><th>Status</th><th>Fired</th><th>Explanation</th><th>Recommendation</th>
<th>Parameters</th></tr>{rows}</table>
<h2>Training</h2>
{_loss_plot(evidence)}
<h2>Step time</h2>
<p>{e(_step_summary(evidence))}</p>
{_step_plot(evidence)}
<h2>System</h2>
{_system_plots(evidence)}
</body></html>
"""


def _transient_note(result: RuleResult) -> str:
    if not result.transient:
        return ""
    return f" (transient: it fired last at step {result.steps[-1]}, not at the end, step {result.last_judged})"


def _step_summary(evidence: Evidence) -> str:
    init = evidence.initialization_seconds
    parts = [f"Initialisation (process start to first step): {init:.1f} s." if init is not None else ""]
    steps = evidence.steps
    if steps:
        total = sum(t.total for t in steps) or 1e-9
        shares = ", ".join(f"{name} {100 * sum(getattr(t, name) for t in steps) / total:.0f}%" for name in PHASES)
        parts.append(f"{len(steps)} training steps, {total / len(steps) * 1000:.1f} ms on average: {shares}.")
    s = evidence.settings
    parts.append(f"{s.cpu_count} CPU cores, {s.gpu_count} GPUs, {s.num_workers} data workers, batch size "
                 f"{s.batch_size}, pin_memory {s.pin_memory}.")  # fmt: skip
    return " ".join(p for p in parts if p)


def _loss_plot(evidence: Evidence) -> str:
    trace = evidence.trace  # what the rules judged: every step's loss
    series = {"training loss": trace.train_loss, "validation loss": trace.valid_loss}
    return _line_chart("Loss by global step", "global step", "loss", series)


def _step_plot(evidence: Evidence) -> str:
    steps = evidence.steps
    if not steps:
        return "<p>No training step was timed.</p>"
    series = {name: [(t.step, getattr(t, name) * 1000) for t in steps] for name in PHASES}
    return _stacked_chart("Step time by phase", "training step", "ms", series)


def _system_plots(evidence: Evidence) -> str:
    samples = evidence.samples
    if not samples:
        return "<p>No system samples (the monitor was off or the job was too short).</p>"
    start = samples[0].time
    t = [s.time - start for s in samples]
    cpu = {"CPU (all cores)": list(zip(t, (s.cpu_total for s in samples), strict=True))}
    cpu.update({f"core {i}": [(x, s.cpu[i]) for x, s in zip(t, samples, strict=True) if i < len(s.cpu)]
                for i in range(min(len(samples[0].cpu), 8))})  # fmt: skip
    cpu["memory"] = list(zip(t, (s.memory for s in samples), strict=True))
    cpu["I/O wait"] = list(zip(t, (s.iowait for s in samples), strict=True))
    charts = [_line_chart("CPU, memory and I/O wait", "seconds", "%", cpu)]
    if samples[0].gpu:
        gpu = {f"GPU {i}": [(x, s.gpu[i]) for x, s in zip(t, samples, strict=True)] for i in range(len(samples[0].gpu))}
        gpu.update({f"GPU {i} memory": [(x, s.gpu_memory[i]) for x, s in zip(t, samples, strict=True)]
                    for i in range(len(samples[0].gpu))})  # fmt: skip
        charts.append(_line_chart("GPU utilisation and memory", "seconds", "%", gpu))
    else:
        charts.append("<p>No GPU was measured, so GPU rules are NotApplicable.</p>")
    io = {
        "disk read": [(x, s.disk_read / 1e6) for x, s in zip(t, samples, strict=True)],
        "disk write": [(x, s.disk_write / 1e6) for x, s in zip(t, samples, strict=True)],
        "network in": [(x, s.net_recv / 1e6) for x, s in zip(t, samples, strict=True)],
        "network out": [(x, s.net_sent / 1e6) for x, s in zip(t, samples, strict=True)],
    }
    charts.append(_line_chart("Disk and network", "seconds", "MB/s", io))
    return "\n".join(charts)


# -- SVG -------------------------------------------------------------------------------------------------------

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 860, 280, 60, 150, 30, 40


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Average consecutive points so that at most MAX_POINTS remain."""
    if len(points) <= MAX_POINTS:
        return points
    size = -(-len(points) // MAX_POINTS)
    chunks = [points[i : i + size] for i in range(0, len(points), size)]
    return [(sum(x for x, _ in c) / len(c), sum(y for _, y in c) / len(c)) for c in chunks]


def _frame(title: str, x_label: str, y_label: str, x_range: tuple[float, float], y_max: float) -> list[str]:
    e = html.escape
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{e(title)}">',
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{e(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">{e(x_label)}</text>',
        f'<text x="12" y="{TOP + plot_h / 2}" font-size="11" transform="rotate(-90 12 {TOP + plot_h / 2})" '
        f'text-anchor="middle">{e(y_label)}</text>',
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                     f"{y_max * fraction:.3g}</text>")  # fmt: skip
    for fraction in (0, 0.5, 1):
        x = LEFT + plot_w * fraction
        value = x_range[0] + (x_range[1] - x_range[0]) * fraction
        parts.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" font-size="10" text-anchor="middle">'
                     f"{value:.4g}</text>")  # fmt: skip
    return parts


def _scale(x_range: tuple[float, float], y_max: float):
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_span = (x_range[1] - x_range[0]) or 1.0

    def to_svg(x: float, y: float) -> tuple[float, float]:
        return LEFT + plot_w * (x - x_range[0]) / x_span, TOP + plot_h * (1 - min(max(y, 0.0), y_max) / y_max)

    return to_svg


def _legend(labels: Sequence[str]) -> list[str]:
    e = html.escape
    return [
        f'<rect x="{WIDTH - RIGHT + 10}" y="{TOP + 16 * i}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        f'<text x="{WIDTH - RIGHT + 24}" y="{TOP + 16 * i + 9}" font-size="11">{e(label)}</text>'
        for i, label in enumerate(labels)
    ]


def _line_chart(title: str, x_label: str, y_label: str, series: dict[str, list[tuple[float, float]]]) -> str:
    finite = {k: [(x, y) for x, y in v if y == y and abs(y) != float("inf")] for k, v in series.items()}
    finite = {k: _thin(v) for k, v in finite.items() if v}
    if not finite:
        return f"<p>{html.escape(title)}: no data.</p>"
    xs = [x for v in finite.values() for x, _ in v]
    y_max = max(y for v in finite.values() for _, y in v) * 1.05 or 1.0
    x_range = (min(xs), max(xs))
    to_svg = _scale(x_range, y_max)
    parts = _frame(title, x_label, y_label, x_range, y_max)
    for i, points in enumerate(finite.values()):
        colour = PALETTE[i % len(PALETTE)]
        if len(points) == 1:
            x, y = to_svg(*points[0])
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
            continue
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (to_svg(*p) for p in points))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
    parts += _legend(list(finite))
    parts.append("</svg>")
    return "\n".join(parts)


def _stacked_chart(title: str, x_label: str, y_label: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """Stacked areas, one band per series; all series share their x values."""
    thinned = {k: _thin(v) for k, v in series.items()}
    xs = [x for x, _ in next(iter(thinned.values()))]
    totals = [sum(v[i][1] for v in thinned.values()) for i in range(len(xs))]
    y_max = max(totals) * 1.05 or 1.0
    x_range = (min(xs), max(xs) if len(xs) > 1 else min(xs) + 1)
    to_svg = _scale(x_range, y_max)
    parts = _frame(title, x_label, y_label, x_range, y_max)
    base = [0.0] * len(xs)
    for i, values in enumerate(thinned.values()):
        top = [b + y for b, (_, y) in zip(base, values, strict=True)]
        upper = [to_svg(x, y) for x, y in zip(xs, top, strict=True)]
        lower = [to_svg(x, y) for x, y in zip(reversed(xs), reversed(base), strict=True)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower)
        parts.append(f'<polygon fill="{PALETTE[i % len(PALETTE)]}" fill-opacity="0.8" points="{coords}"/>')
        base = top
    parts += _legend(list(thinned))
    parts.append("</svg>")
    return "\n".join(parts)
