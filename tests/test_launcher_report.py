"""`launcher report JOB`: a job's rule results and HTML report, from real output.tar.gz files in both layouts."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.contract import pack
from launcher.records import RecordStore, TrainingJob

RULES = {
    "LossNotDecreasing": ("training", "NoIssuesFound", []),
    "Overfit": ("training", "IssuesFound", [40, 50, 60]),
    "LowGPUUtilization": ("profiler", "NotApplicable", []),
    "CPUBottleneck": ("profiler", "IssuesFound", [7]),
    "Overtraining": ("training", "Error", []),
}


def rule_result(name: str) -> dict:
    kind, status, steps = RULES[name]
    return {
        "rule": name,
        "kind": kind,
        "status": status,
        "steps": steps,
        "explanation": f"{name} explained in one sentence.",
        "recommendation": f"Fix {name}." if status == "IssuesFound" else None,
        "parameters": {"patience": 1},
    }


def write_output(root: Path, layout: str) -> Path:
    """An output.tar.gz as the process backend and SageMaker pack it ("report/...") or local mode does
    ("data/report/...")."""
    data = root / "job" / "output" / "data"
    (data / "report").mkdir(parents=True)
    (data / "metrics.json").write_text("{}")
    for name in RULES:
        (data / "report" / f"{name}.json").write_text(json.dumps(rule_result(name)))
    (data / "report" / "report.html").write_text("<html><body>report</body></html>")
    source = data if layout == "report/" else data.parent
    return pack(source, root / "artifacts" / "output.tar.gz")


def register(workdir: Path, name: str = "job-1", **fields: object) -> None:
    RecordStore(workdir / "records").save(
        TrainingJob(**{"name": name, "backend": "process", "status": "Completed", **fields})
    )


@pytest.mark.parametrize("layout", ["report/", "data/report/"])
def test_report_prints_the_table_and_extracts_the_files(tmp_path: Path, capsys: pytest.CaptureFixture, layout: str):
    archive = write_output(tmp_path, layout)
    with tarfile.open(archive) as tar:
        assert f"{layout}Overfit.json" in tar.getnames()
    workdir = tmp_path / "work"
    register(workdir, output_data=str(archive))

    assert main(["--workdir", str(workdir), "report", "job-1"]) == 0
    capsys.readouterr()
    assert main(["--workdir", str(workdir), "report", "job-1"]) == 0  # replaces the first extraction
    table, recommendations, html = (part.splitlines() for part in capsys.readouterr().out.split("\n\n"))

    assert table[0].split() == ["RULE", "KIND", "STATUS", "FIRED", "EXPLANATION"]
    rows = [line.split(maxsplit=4) for line in table[1:]]
    assert [row[:4] for row in rows] == [
        ["CPUBottleneck", "profiler", "IssuesFound", "1"],
        ["Overfit", "training", "IssuesFound", "3"],
        ["Overtraining", "training", "Error", "0"],
        ["LossNotDecreasing", "training", "NoIssuesFound", "0"],
        ["LowGPUUtilization", "profiler", "NotApplicable", "0"],
    ]
    assert rows[1][4] == "Overfit explained in one sentence."
    assert recommendations == ["Recommendations:", "  CPUBottleneck: Fix CPUBottleneck.", "  Overfit: Fix Overfit."]

    target = workdir / "reports" / "job-1"
    assert html == [f"HTML report: {target / 'report.html'}"]
    assert sorted(p.name for p in target.iterdir()) == sorted([*(f"{name}.json" for name in RULES), "report.html"])
    assert json.loads((target / "Overfit.json").read_text())["steps"] == [40, 50, 60]
    assert not (target / "metrics.json").exists()  # only the report folder is taken
    assert [p.name for p in (workdir / "reports").iterdir()] == ["job-1"]  # no scratch folder left behind


def test_unknown_job(tmp_path: Path, capsys: pytest.CaptureFixture):
    register(tmp_path, "job-1", output_data=str(tmp_path / "output.tar.gz"))
    assert main(["--workdir", str(tmp_path), "report", "job-2"]) == 1
    assert "no training job named 'job-2'" in capsys.readouterr().err


def test_job_without_output_yet(tmp_path: Path, capsys: pytest.CaptureFixture):
    register(tmp_path, status="InProgress")
    assert main(["--workdir", str(tmp_path), "report", "job-1"]) == 1
    assert "job job-1 has no output yet (status InProgress)" in capsys.readouterr().err


def test_output_without_report_asks_for_a_rebuilt_image(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metrics.json").write_text("{}")
    register(tmp_path, output_data=str(pack(tmp_path / "data", tmp_path / "output.tar.gz")))
    assert main(["--workdir", str(tmp_path), "report", "job-1"]) == 1
    err = capsys.readouterr().err
    assert "has no report: this job was trained by an image without the report; rebuild the image" in err


def test_malformed_rule_result_is_named(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "data" / "report").mkdir(parents=True)
    (tmp_path / "data" / "report" / "Overfit.json").write_text(json.dumps({"rule": "Overfit", "status": "Fine"}))
    register(tmp_path, output_data=str(pack(tmp_path / "data", tmp_path / "output.tar.gz")))
    assert main(["--workdir", str(tmp_path), "report", "job-1"]) == 1
    assert "Overfit.json is not a rule result (KeyError: 'kind')" in capsys.readouterr().err


def test_members_escaping_the_target_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    archive = tmp_path / "output.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, body in (("report/Overfit.json", json.dumps(rule_result("Overfit"))), ("report/../../evil", "x")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body.encode()))
    workdir = tmp_path / "work"
    register(workdir, output_data=str(archive))

    assert main(["--workdir", str(workdir), "report", "job-1"]) == 1
    assert "cannot extract the report from" in capsys.readouterr().err
    assert list(tmp_path.rglob("evil")) == []
    assert list((workdir / "reports").iterdir()) == []  # neither a partial report nor a scratch folder
