"""Tuning on the local backend (SageMaker local mode, the image in a real Docker engine): each trial's live log
and objective, a quiet console while trials run, stopping a running job, and no container left behind.

Run alone with `pytest -m docker`; the image is named by IMGCLF_TEST_IMAGE (see test_docker.py).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import compose_containers, docker
from mlflow.tracking import MlflowClient

from imgclf_contract.metrics import EPOCH_LINE
from launcher import steps, tracking
from launcher.backends import TrainingSpec
from launcher.backends.local import LocalBackend
from launcher.backends.local_mode import containers as local_mode_containers
from launcher.errors import LauncherError
from launcher.records import RecordStore, TrainingJob
from launcher.tracking import Tracker
from launcher.tuning import TuningSpec

pytestmark = pytest.mark.docker
OBJECTIVE = re.compile(r"valid loss: ([0-9.eE+-]+)")  # the default objective: the last epoch's validation loss
FIXED = {"epochs": 1, "image_size": 32, "num_workers": 0, "pretrained": False, "profiler_interval_ms": 0}


def local_backend(workdir: Path) -> LocalBackend:
    return LocalBackend(workdir, RecordStore(workdir / "records"))


def test_tuning_on_the_local_backend_reads_each_trials_log_and_keeps_the_console_quiet(
    image: str,
    tmp_path: Path,
    shapes_dataset: Path,
    capfd: pytest.CaptureFixture,
):
    training = TrainingSpec("unused", {"training": str(shapes_dataset)}, FIXED, image=image)
    ranges = {"batch_size": "CategoricalParameter([2, 4])"}
    spec = TuningSpec(name="lt-1", training=training, ranges=ranges, strategy="Grid", max_jobs=2, max_parallel_jobs=1)
    workdir = tmp_path / "work"
    uri = tracking.default_uri(workdir)
    backend = LocalBackend(workdir, RecordStore(workdir / "records"), Tracker(uri, "local-tuning"))

    record = steps.tune(backend, spec).to_json()

    folder = workdir / "tuning" / "lt-1"
    rows = json.loads((folder / "results.json").read_text())
    assert [row["status"] for row in rows] == ["Completed", "Completed"], rows
    assert sorted(row["hyperparameters"]["batch_size"] for row in rows) == [2, 4]
    for row in rows:  # the objective is the last objective line of the job's own log
        job = backend.records.load(TrainingJob, row["job_name"]).to_json()
        assert job["status"] == "Completed" and job["log"] == str(workdir / "jobs" / row["job_name"] / "train.log")
        log = Path(job["log"]).read_text()
        assert EPOCH_LINE.search(log), log[-2000:]
        assert row["objective"] == float(OBJECTIVE.findall(log)[-1])
    assert all((folder / name).is_file() for name in ("results.csv", "results.html", "best.json", "study.db"))
    assert record["backend"] == "local" and record["best"]["job_name"] in {row["job_name"] for row in rows}
    console = capfd.readouterr()
    assert "trial 2: job lt-1-002" in console.err  # the tuner's own progress lines do arrive
    for stream in (console.out, console.err):  # but none of the containers' output
        assert "train loss:" not in stream and "average test loss:" not in stream
    assert compose_containers(workdir) == []

    # Tracked as on the process backend: the tuning run a parent, each trial a child with its epochs' metrics.
    client = MlflowClient(uri)
    parent = client.get_run(record["mlflow_run"])
    assert (parent.info.run_name, parent.info.status) == ("lt-1", "FINISHED")
    trials = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(t.info.run_name for t in trials) == ["lt-1-001", "lt-1-002"]
    for trial in trials:
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "valid loss")] == [1]
        assert trial.data.tags["imgclf.backend"] == "local" and trial.info.status == "FINISHED"


def test_stop_training_stops_a_running_local_job(image: str, tmp_path: Path, shapes_dataset: Path):
    workdir = tmp_path / "work"
    backend = local_backend(workdir)
    many_epochs = {**FIXED, "epochs": 500, "batch_size": 2}  # far longer than this test waits
    spec = TrainingSpec("stop-1", {"training": str(shapes_dataset)}, many_epochs, image=image, echo=False)
    outcome: dict[str, dict] = {}
    worker = threading.Thread(target=lambda: outcome.update(record=backend.train(spec)), daemon=True)
    worker.start()
    try:
        log = workdir / "jobs" / "stop-1" / "train.log"
        deadline = time.monotonic() + 300
        while not (log.is_file() and EPOCH_LINE.search(log.read_text())):
            assert worker.is_alive() and time.monotonic() < deadline, f"no epoch line in {log} within 300 s"
            time.sleep(0.5)

        backend.stop_training("stop-1")

        worker.join(timeout=120)
        assert not worker.is_alive(), "the job still runs 120 s after stop_training"
    finally:  # a failed test must not leave a 500-epoch job running
        leftovers = [container.id for container in local_mode_containers(workdir)]
        if worker.is_alive() and leftovers:
            docker("rm", "--force", *leftovers)
    job = outcome["record"].to_json()
    assert job["status"] == "Stopped" and "stopped on request" in job["failure_reason"]
    assert backend.records.load(TrainingJob, "stop-1").to_json()["status"] == "Stopped"
    assert "average test loss:" not in log.read_text()  # it did not run to its end
    assert compose_containers(workdir) == []
    with pytest.raises(LauncherError, match="not running here"):
        backend.stop_training("stop-1")
