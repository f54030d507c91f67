"""A backend from outside `launcher/` joins through the `imgclf.backends` entry point group alone: installed as a
distribution (its metadata on the path, as pip leaves it), `tests/plugins/fake_backend.py` is driven through the
real command line in fresh interpreters — train, deploy, predict, stop — with no launcher file changed. What it
does not implement (batch transform, model swaps) and the options of other backends are refused, naming the
backends that have them; its own option gets a flag. Not covered: installing with pip itself (the metadata is
written as pip writes it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_split

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugin_path(tmp_path: Path) -> str:
    """A site folder holding the fake backend's distribution metadata, and the path that finds it and its module."""
    site = tmp_path / "site"
    dist_info = site / "imgclf_fake_backend-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: imgclf-fake-backend\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[imgclf.backends]\nfake = fake_backend:FakeBackend\n")
    return os.pathsep.join([str(site), str(PLUGINS)])


def launcher(plugin_path: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [plugin_path, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "launcher.cli", "--workdir", str(workdir), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_a_plugin_backend_trains_deploys_predicts_and_stops_through_the_cli(plugin_path: str, tmp_path: Path):
    data = tmp_path / "data"
    for split in ("train", "valid", "test"):
        write_split(data / split, per_class=1)
    work = tmp_path / "work"
    records = work / "records"

    assert "fake" in launcher(plugin_path, work, "train", "--help").stdout

    trained = launcher(plugin_path, work, "train", "--backend", "fake", "--data", str(data), "--job-name", "j",
                       "--no-tracking")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    job = json.loads((records / "jobs" / "j.json").read_text())
    assert (job["backend"], job["status"]) == ("fake", "Completed")
    assert job["test_metrics"] == {"loss": 1.0, "accuracy": pytest.approx(1 / 3)}  # read from its metric lines

    deploy = ["deploy", "j", "--backend", "fake", "--no-tracking"]
    assert launcher(plugin_path, work, *deploy, "--endpoint-name", "ep").returncode == 0
    told = launcher(plugin_path, work, *deploy, "--endpoint-name", "told", "--answer", "square")  # its own option
    assert told.returncode == 0, told.stderr
    image = next((data / "test").rglob("*.jpg"))
    answers = {}
    for endpoint in ("ep", "told"):
        predicted = launcher(plugin_path, work, "predict", str(image), "--endpoint", endpoint)
        assert predicted.returncode == 0, predicted.stderr
        answers[endpoint] = json.loads(predicted.stdout)
    assert answers["ep"]["served_by"] == "fake" and answers["ep"]["top"][0]["label"] == "circle"  # the first class
    assert answers["told"]["top"][0]["label"] == "square"

    for endpoint in ("ep", "told"):
        stopped = launcher(plugin_path, work, "stop", endpoint, "--no-tracking")
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads((records / "endpoints" / f"{endpoint}.json").read_text())["status"] == "Deleted"


def test_what_a_plugin_backend_lacks_is_refused_by_naming_who_has_it(plugin_path: str, tmp_path: Path):
    work = tmp_path / "work"
    transform = launcher(plugin_path, work, "transform", str(tmp_path / "model.tar.gz"), "--backend", "fake",
                         "--input", str(tmp_path))  # fmt: skip
    assert transform.returncode == 1
    assert (
        "launcher transform needs --backend process or --backend local or --backend sagemaker: "
        "the fake backend cannot run batch transforms"
    ) in transform.stderr
    spot = launcher(plugin_path, work, "train", "--backend", "fake", "--data", str(tmp_path), "--spot")
    assert spot.returncode == 1
    assert "--spot is an option of --backend sagemaker, not of the fake backend" in spot.stderr
    answer = launcher(plugin_path, work, "train", "--data", str(tmp_path), "--answer", "square")
    assert answer.returncode == 1
    assert "--answer is an option of --backend fake, not of the process backend" in answer.stderr


def test_a_plugin_cannot_take_a_built_in_name(plugin_path: str, tmp_path: Path):
    site = Path(plugin_path.split(os.pathsep)[0])
    (site / "imgclf_fake_backend-0.1.dist-info" / "entry_points.txt").write_text(
        "[imgclf.backends]\nprocess = fake_backend:FakeBackend\n"
    )
    refused = launcher(plugin_path, tmp_path / "work", "train", "--help")
    assert refused.returncode == 1
    assert "takes the name 'process' of a built-in backend" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_plugin_that_cannot_load_is_named_and_the_others_still_work(plugin_path: str, tmp_path: Path):
    site = Path(plugin_path.split(os.pathsep)[0])
    (site / "imgclf_fake_backend-0.1.dist-info" / "entry_points.txt").write_text(
        "[imgclf.backends]\nbroken = no_such_module:Backend\n"
    )
    work = tmp_path / "work"
    listed = launcher(plugin_path, work, "sample-data", str(tmp_path / "data"), "--fraction", "0.05")
    assert listed.returncode == 0, listed.stderr
    assert "backend 'broken': cannot load no_such_module:Backend" in listed.stderr  # a warning, once
    chosen = launcher(plugin_path, work, "train", "--backend", "broken", "--data", str(tmp_path / "data"))
    assert chosen.returncode == 1 and "Traceback" not in chosen.stderr
    assert "launcher: error: backend 'broken': cannot load no_such_module:Backend: No module named" in chosen.stderr
