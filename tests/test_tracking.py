"""MLflow tracking with the real MLflow client and a real SQLite store: a server that does not answer costs one
warning, not the job; launchers opening a new store at once do not race in its migration and lose nothing;
`--no-tracking` writes nothing; `launcher ui` serves MLflow's real web UI, opened in headless Chromium; a SageMaker
managed MLflow ARN goes through the real sagemaker-mlflow plugin, whose SigV4-signed requests reach a loopback
stand-in (not covered: a real SageMaker tracking server, which needs an AWS account).

What a whole `launcher run` tracks (trials, job, dataset, evaluation, registered model) is asserted in
tests/test_terminal_loop.py; the sagemaker backend's runs in tests/test_sagemaker_moto.py."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import chromium, write_split
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as mlflow_tracking_utils

from launcher import tracking
from launcher.cli import main
from launcher.tracking import Tracker

TINY = {
    "epochs": 1,
    "batch_size": 4,
    "image_size": 32,
    "num_workers": 0,
    "pretrained": False,
    "profiler_interval_ms": 0,
}


def tiny_dataset(root: Path) -> Path:
    for split, count in (("train", 2), ("valid", 1), ("test", 1)):
        write_split(root / split, per_class=count)
    return root


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket is closed


def train_args(work: Path, data: Path, name: str) -> list[str]:
    hyperparameters = [arg for key, value in TINY.items() for arg in ("-H", f"{key}={json.dumps(value)}")]
    return ["--workdir", str(work), "train", "--data", str(data), "--job-name", name, *hyperparameters]


@pytest.mark.slow
def test_a_tracking_server_that_does_not_answer_costs_one_warning_not_the_job(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    data, work = tiny_dataset(tmp_path / "data"), tmp_path / "work"
    uri = f"http://127.0.0.1:{closed_port()}"
    assert main([*train_args(work, data, "j1"), "--tracking-uri", uri]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning: tracking to" in line]
    assert len(warnings) == 1 and uri in warnings[0] and "--no-tracking" in warnings[0], err[-3000:]
    record = json.loads((work / "records" / "jobs" / "j1.json").read_text())
    assert record["status"] == "Completed" and record["test_metrics"] and record["mlflow_run"] is None
    assert not (work / tracking.STORE_FILE).exists()


@pytest.mark.slow
def test_no_tracking_writes_no_store(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    data, work = tiny_dataset(tmp_path / "data"), tmp_path / "work"
    assert main([*train_args(work, data, "j1"), "--no-tracking"]) == 0
    assert json.loads((work / "records" / "jobs" / "j1.json").read_text())["status"] == "Completed"
    assert not (work / tracking.STORE_FILE).exists() and not (work / tracking.ARTIFACTS_FOLDER).exists()


def _track_one(uri: str, artifacts: str, name: str, start: float) -> None:
    """A launcher's worth of tracking in its own process: a parent run, a child with metrics, ended."""
    time.sleep(max(0.0, start - time.time()))  # all processes open the new store at the same moment
    tracker = Tracker(uri, "race", artifact_root=Path(artifacts))
    parent = tracker.start(name, "tuning")
    child = tracker.trial(parent, 1, f"{name}-001", {"learning_rate": 0.1}, "process")
    for epoch in (1, 2, 3):
        tracker.log_metrics(child, {"valid loss": 1.0 / epoch}, step=epoch)
    tracker.end(child, "Completed")
    tracker.end(parent, "Completed")
    sys.exit(0 if tracker.enabled else 3)


@pytest.mark.slow
def test_launchers_opening_a_new_store_at_once_all_track_and_lose_nothing(tmp_path: Path):
    uri = tracking.default_uri(tmp_path)
    start = time.time() + 3  # after every process has imported MLflow
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_track_one, args=(uri, str(tmp_path / "art"), f"t{i}", start))
               for i in range(4)]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]  # 3: a tracker gave up (e.g. in the schema migration)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("race").experiment_id
    runs = client.search_runs([experiment])
    assert sorted(r.info.run_name for r in runs) == sorted([*(f"t{i}" for i in range(4)),
                                                            *(f"t{i}-001" for i in range(4))])  # fmt: skip
    for run in (r for r in runs if r.info.run_name.endswith("-001")):
        history = client.get_metric_history(run.info.run_id, "valid loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]


@pytest.mark.slow
def test_the_ui_shows_the_tuning_run_its_trials_and_the_registered_model(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    work = tmp_path / "work"
    tracker = Tracker(tracking.default_uri(work), "digits", artifact_root=work / tracking.ARTIFACTS_FOLDER)
    parent, trials = tracker.start("tune-ui", "tuning"), {}
    for number in (1, 2):
        trials[number] = tracker.trial(
            parent, number, f"tune-ui-00{number}", {"learning_rate": 0.01 * number}, "process"
        )
        tracker.log_metrics(trials[number], {"valid loss": 0.5 / number}, step=1)
        tracker.end(trials[number], "Completed")
    tracker.end(parent, "Completed")
    job = tracker.start("train-ui", "training", params={"learning_rate": 0.02})
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"not really a model")
    assert tracker.register_model(job, str(model), {"job_name": "train-ui"}) == "models:/digits/1"
    tracker.end(job, "Completed")

    launcher = str(Path(sys.executable).parent / "launcher")
    command = [launcher, "--workdir", str(work), "ui", "--port", "0", "--experiment", "digits"]
    ui = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        page = None
        for line in ui.stderr:
            found = re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\d+/runs)", line)
            if found:
                page = found.group(1)
                break
        assert page, "launcher ui printed no runs page"
        runs = chromium(page, tmp_path, "--virtual-time-budget=30000", "--dump-dom")
        assert runs.returncode == 0, runs.stderr[-2000:]
        assert ">tune-ui<" in runs.stdout and ">train-ui<" in runs.stdout, runs.stdout[-3000:]
        for number in (1, 2):  # each trial's page: a child of the tuning run, with its validation loss
            trial = chromium(f"{page}/{trials[number]}", tmp_path, "--virtual-time-budget=30000", "--dump-dom")
            assert f"tune-ui-00{number}" in trial.stdout and ">tune-ui<" in trial.stdout, trial.stdout[-3000:]
            assert "Parent run" in trial.stdout and "valid loss" in trial.stdout
        models = chromium(page.split("#")[0] + "#/models/digits", tmp_path, "--virtual-time-budget=30000", "--dump-dom")
        assert "Version 1" in models.stdout, models.stdout[-3000:]
    finally:
        ui.terminate()  # the launcher stops the UI's server on SIGTERM as on Ctrl-C
        ui.wait(timeout=60)
    assert ui.returncode == 0
    with socket.socket() as probe:  # nothing serves the page any more
        assert probe.connect_ex(("127.0.0.1", int(page.split(":")[2].split("/")[0]))) != 0


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for SageMaker managed MLflow: records each request's path and headers, answers 403."""

    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def _answer(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        body = json.dumps({"error_code": "PERMISSION_DENIED", "message": "not a real tracking server"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_a_sagemaker_managed_mlflow_arn_sends_sigv4_signed_requests(tmp_path: Path, monkeypatch, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    aws = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "eu-west-1"}
    for name, value in {
        **aws,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/team"
    # The tracker sets MLflow's global URI for the plugin: monkeypatch puts it back after the test.
    monkeypatch.setattr(mlflow_tracking_utils, "_tracking_uri", None)
    try:
        tracker = Tracker(arn, "digits")
        assert tracker.start("job", "training") is None  # refused: one warning, tracking off, no exception
    finally:
        server.shutdown()
    assert not tracker.enabled and arn in capsys.readouterr().err
    assert RecordingHandler.seen, "the plugin sent nothing to the loopback endpoint"
    path, headers = RecordingHandler.seen[0]
    assert path.startswith("/api/2.0/mlflow/")
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/sagemaker-mlflow/aws4_request" in headers["Authorization"] and "X-Amz-Date" in headers
    assert headers["x-mlflow-sm-tracking-server-arn"] == arn
