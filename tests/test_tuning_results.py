"""The tuning page (results.html) draws each hyperparameter as it was searched: integers as integers, categories as
categories, wide ranges on a log axis; and each trial's per-epoch curve. Read from the page's own SVG."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

from launcher.backends import TrainingSpec
from launcher.records import TuningRun
from launcher.tuning import TrialRow, TuningSpec, write_results

# The original project's ranges: a 100x learning-rate range and the batch size as categories.
RANGES = {
    "learning_rate": "ContinuousParameter(0.001, 0.1)",
    "batch_size": 'CategoricalParameter(["32", "64", "128", "256", "512"])',
    "epochs": 'IntegerParameter(1, 9, scaling_type="Linear")',
}
SVG = "{http://www.w3.org/2000/svg}"
TRIED = [(0.002, 64, 3, 1.2), (0.03, 128, 4, 0.8), (0.05, 32, 7, 0.9), (0.09, 512, 2, 1.1), (0.01, 64, 5, 1.0)]


def x_ticks(page: str, title: str) -> list[str]:
    """The x axis's tick labels of the figure titled `title`: a label's TeX source where matplotlib wrote one (log
    axes: 10^{-2}), else its text; ticks without a label (a log axis's minor ones) left out."""
    figure = re.search(rf'<figure aria-label="{re.escape(title)}">(.*?)</figure>', page, re.DOTALL)
    assert figure, f"no figure {title!r}"
    svg = ElementTree.fromstring(
        figure.group(1), ElementTree.XMLParser(target=ElementTree.TreeBuilder(insert_comments=True))
    )
    labels = []
    for tick in svg.iter(f"{SVG}g"):
        if not tick.get("id", "").startswith("xtick_"):
            continue
        comments = [node.text.strip() for node in tick.iter() if node.tag is ElementTree.Comment]
        text = "".join(t for node in tick.iter(f"{SVG}text") for t in node.itertext()).replace(" ", "").strip()
        if comments or text:
            labels.append(comments[0] if comments else re.sub(r"\s", "", text))
    return labels


def write_page(tmp_path: Path, curves: bool = True) -> str:
    training = TrainingSpec(job_name="unused", channels={}, hyperparameters={})
    spec = TuningSpec(name="t", training=training, ranges=RANGES)

    def row(trial: int, values: tuple, loss: float | None, curve: dict[int, float], stopped: bool = False) -> TrialRow:
        hyperparameters = dict(zip(("learning_rate", "batch_size", "epochs"), values, strict=True))
        status = "Stopped" if stopped else "Completed"
        return TrialRow(trial, f"t-{trial:03d}", hyperparameters, loss, status, 3.0, stopped,
                        curve=curve if curves else {})  # fmt: skip

    rows = [row(n, t[:3], t[3], {1: t[3] + 0.5, 2: t[3] + 0.1, 3: t[3]}) for n, t in enumerate(TRIED, start=1)]
    rows.append(row(6, (0.004, 256, 3), None, {1: 2.0}, stopped=True))
    write_results(spec, rows, tmp_path, TuningRun(name="t", backend="process"))
    return (tmp_path / "results.html").read_text()


def test_each_axis_is_drawn_as_its_hyperparameter_was_searched(tmp_path: Path):
    page = write_page(tmp_path)
    trials = x_ticks(page, "valid loss by trial")
    assert trials and all(label.isdigit() for label in trials), trials  # 1, 2, ..., never 1.5
    assert x_ticks(page, "valid loss by batch_size") == ["32", "64", "128", "256", "512"]  # evenly spaced categories
    learning_rates = x_ticks(page, "valid loss by learning_rate")
    assert learning_rates and all("10^{" in label for label in learning_rates), learning_rates  # a log axis
    epochs = x_ticks(page, "valid loss by epochs")
    assert epochs and all(label.isdigit() for label in epochs), epochs


def test_each_trial_has_its_curve_and_a_trial_stopped_early_ends_where_it_stopped(tmp_path: Path):
    page = write_page(tmp_path)
    figure = re.search(r'<figure aria-label="valid loss by epoch, each trial">(.*?)</figure>', page, re.DOTALL)
    assert figure
    legend = re.findall(r"<text[^>]*>\s*(trial \d+)\s*</text>", figure.group(1))
    assert legend == [f"trial {n}" for n in range(1, 7)]
    assert x_ticks(page, "valid loss by epoch, each trial") == ["1", "2", "3"]
    assert "stroke-dasharray" in figure.group(1)  # the stopped trial's line is dashed


def test_without_recorded_curves_the_page_has_no_curve_figure(tmp_path: Path):
    page = write_page(tmp_path, curves=False)  # SageMaker's tuner: its trials' epochs are in CloudWatch, not here
    assert "by epoch, each trial" not in page and "valid loss by trial" in page
