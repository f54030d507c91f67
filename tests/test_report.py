"""The HTML report of a real training run, opened in headless Chromium (installed by `make test`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import chromium, make_job, run_entry_point, write_split
from PIL import Image

from imgclf.diagnostics.evidence import Evidence, JobSettings
from imgclf.diagnostics.report import PALETTE, summary_table, write_report
from imgclf.diagnostics.trace import TrainingTrace
from imgclf.diagnostics.training_rules import LossNotDecreasing, Overfit

pytestmark = pytest.mark.slow  # a real training job's report


@pytest.fixture(scope="module")
def short_job_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a job that ends within one interval of the system monitor (5 s)."""
    tmp = tmp_path_factory.mktemp("short")
    write_split(tmp / "shapes" / "train", per_class=2)
    write_split(tmp / "shapes" / "valid", per_class=2)
    write_split(tmp / "shapes" / "test", per_class=1)
    hps = {"epochs": "1", "batch_size": "3", "image_size": "32", "num_workers": "0", "pretrained": "false",
           "profiler_interval_ms": "5000"}  # fmt: skip
    result = run_entry_point("train", make_job(tmp / "job", {"training": tmp / "shapes"}, hps))
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp / "job" / "output" / "data" / "report"


@pytest.fixture(scope="module", params=["default monitor", "job shorter than the monitor's interval"])
def report_dir(request: pytest.FixtureRequest, trained_model_dir: Path) -> Path:
    if request.param == "default monitor":
        return trained_model_dir.parent / "output" / "data" / "report"
    return request.getfixturevalue("short_job_report")


def charts(dom: str) -> dict[str, str]:
    """Each SVG chart of the page by its title."""
    return dict(re.findall(r'<svg[^>]*aria-label="([^"]+)"(.*?)</svg>', dom, flags=re.DOTALL))


def test_every_rule_has_a_json_result(report_dir: Path):
    results = [json.loads(path.read_text()) for path in sorted(report_dir.glob("*.json"))]
    assert len(results) == 15
    for result in results:
        assert set(result) >= {"rule", "kind", "status", "steps", "explanation", "parameters", "recommendation"}
        assert result["status"] in {"NoIssuesFound", "IssuesFound", "Error", "NotApplicable"}
    statuses = {r["rule"]: r["status"] for r in results}
    assert statuses["LowGPUUtilization"] == "NotApplicable"  # no GPU on the test machine


def test_the_report_is_self_contained(report_dir: Path):
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)  # nothing fetched from the network
    assert "<script" not in page


def test_the_report_opens_in_headless_chromium_and_shows_the_plots(report_dir: Path, tmp_path: Path):
    page = report_dir / "report.html"
    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
    assert errors == []
    drawn = charts(dom.stdout)
    # Whatever the job's length: every training and validation step has a loss, and the monitor samples the
    # job's start and end, so each line chart has lines (here 2 or more points each) and the step chart areas.
    assert drawn["Loss by global step"].count("<polyline") == 2  # training and validation loss
    assert drawn["CPU, memory and I/O wait"].count("<polyline") >= 3  # all cores, each core, memory, I/O wait
    assert drawn["Disk and network"].count("<polyline") == 4
    assert drawn["Step time by phase"].count("<polygon") == 4

    shot = tmp_path / "report.png"
    rendered = chromium(page, tmp_path, "--window-size=1100,3000", f"--screenshot={shot}")
    assert rendered.returncode == 0 and shot.is_file(), rendered.stderr[-2000:]
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)
    series_colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:3]}
    drawn = sum(count for count, colour in colours if colour in series_colours)
    assert drawn > 500, f"only {drawn} pixels in the plot colours: the plots did not render"


def test_a_transient_finding_is_marked_in_its_json_the_page_and_the_table(tmp_path: Path):
    # Overfit after the first epoch only, then validation loss below training loss: the demo's pattern.
    trace = TrainingTrace("metric log", train_loss=[(0, 1.0), (1, 0.9), (4, 0.5), (5, 0.4), (8, 0.3), (9, 0.3)],
                          valid_loss=[(2, 1.4), (3, 1.4), (6, 0.45), (7, 0.45), (10, 0.25), (11, 0.25)])  # fmt: skip
    evidence = Evidence(trace, [], [], JobSettings(2, 0, 1, 2, 16, False), None)
    overfit, loss = Overfit().evaluate(evidence), LossNotDecreasing().evaluate(evidence)
    assert overfit.status == "IssuesFound" and overfit.transient and loss.status == "NotApplicable"

    page = write_report(tmp_path, [overfit, loss], evidence, [])

    saved = json.loads((tmp_path / "Overfit.json").read_text())
    assert saved["status"] == "IssuesFound" and saved["transient"] is True and saved["last_judged"] == 10
    assert saved["explanation"].endswith("transient: fired last at step 2, not at the end (10)")  # launcher shows it
    assert json.loads((tmp_path / "LossNotDecreasing.json").read_text())["transient"] is False
    html = page.read_text()
    assert "IssuesFound (transient)" in html
    assert "<b>Overfit</b> (transient: it fired last at step 2, not at the end, step 10)" in html
    table = summary_table([overfit, loss])
    assert "IssuesFound (transient)" in table.splitlines()[1] and "fewer than two windows" in table
    assert charts(html)["Loss by global step"].count("<polyline") == 2
