"""`launcher run` on the process backend: real tuning trials with the hook on, the best trial's model taken (or its
configuration trained once more), a real endpoint answering a real JPEG, a retry that reuses what finished, and
`launcher lineage` leading from the endpoint back to every input file's hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_sigint, write_split
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from mlflow.tracking import MlflowClient

from launcher.cli import main
from launcher.errors import LauncherError
from launcher.lineage import dataset_manifest
from launcher.loop import sample_image

pytestmark = pytest.mark.slow  # launcher run end to end

ROOT = Path(__file__).resolve().parent.parent
FIXED = {"epochs": 1, "batch_size": 6, "image_size": 32, "num_workers": 1, "freeze_backbone": True,
         "profiler_interval_ms": 0}  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(work: Path, kind: str, name: str) -> dict:
    return json.loads((work / "records" / kind / f"{name}.json").read_text())


def tuned_job(tmp_path: Path, backbone: Path, per_class: tuple[int, int, int], tuning: str) -> Path:
    """A job config: shapes in `tmp_path/data` (`per_class` images per class in train, valid, test), the backbone,
    the FIXED hyperparameters, and `tuning` (the rest of the file: its tuning section and more)."""
    for split, count in zip(("train", "valid", "test"), per_class, strict=True):
        write_split(tmp_path / "data" / split, per_class=count)
    config = tmp_path / "job.yaml"
    config.write_text(
        f"channels: {{training: {tmp_path / 'data'}, pretrained: {backbone}}}\n"
        f"hyperparameters: {json.dumps(FIXED)}\n{tuning}"
    )
    return config


def test_dataset_digest_follows_content_not_location(tmp_path: Path):
    data = write_split(tmp_path / "a" / "train", per_class=2).parent
    first = dataset_manifest({"training": str(data)}, tmp_path / "manifests")
    shutil.copytree(data, tmp_path / "b")
    assert dataset_manifest({"training": str(tmp_path / "b")}, tmp_path / "manifests")["digest"] == first["digest"]

    manifest = json.loads(Path(first["manifest"]).read_text())
    files = manifest["channels"]["training"]["files"]
    assert first["files"] == len(files) == 6 and first["bytes"] == sum(f["bytes"] for f in files)
    assert all(f["sha256"] == sha256(data / f["path"]) for f in files)

    changed = data / files[0]["path"]
    changed.write_bytes(changed.read_bytes() + b"\0")  # one byte more in one file
    assert dataset_manifest({"training": str(data)}, tmp_path / "manifests")["digest"] != first["digest"]
    renamed = dataset_manifest({"train": str(tmp_path / "b")}, tmp_path / "manifests")  # another channel name
    assert renamed["digest"] != first["digest"]


def test_run_tunes_trains_deploys_predicts_traces_back_and_tracks(tmp_path: Path, backbone: Path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: the work folder's store
    data = tmp_path / "data"
    config = tuned_job(
        tmp_path,
        backbone,
        (8, 2, 2),
        "tuning:\n"
        "  ranges: {learning_rate: 'CategoricalParameter([0.002, 0.02])'}\n"
        "  strategy: Grid\n"
        "  max_jobs: 2\n"
        "deploy: {workers: 1}\n",
    )
    work = tmp_path / "work"
    run = ["--workdir", str(work), "run", "--config", str(config), "--name", "r1"]

    # First try: the endpoint cannot become healthy in 1 ms, so the run fails after tuning and training.
    assert main([*run, "--timeout", "0.001"]) == 1
    failed = load(work, "runs", "r1")
    assert failed["status"] == "Failed" and [s["step"] for s in failed["steps"]] == ["tuning_run", "training_job"]
    assert load(work, "endpoints", "r1-ep")["status"] == "Failed"
    capsys.readouterr()

    # Second try: the tuning run and its best trial's model are reused (the configuration is trained once, as a
    # trial), a new endpoint answers the sample image, then it is stopped.
    tuning = load(work, "tuning", "r1-tune")
    best = tuning["best"]["job_name"]
    assert failed["training_job"] == best
    assert main([*run, "--stop-endpoint"]) == 0
    out, err = capsys.readouterr()
    assert "tuning run r1-tune already finished" in err and f"best trial {best}'s model already taken" in err
    assert sorted(p.stem for p in (work / "records" / "jobs").glob("*.json")) == ["r1-tune-001", "r1-tune-002"]
    record = load(work, "runs", "r1")
    assert record["status"] == "Completed" and record["endpoint"] == "r1-ep-2"
    assert [s["step"] for s in record["steps"]] == ["tuning_run", "training_job", "endpoint", "prediction",
                                                    "evaluation"]  # fmt: skip
    top = record["steps"][-2]["top"][0]
    assert top["label"] in {"circle", "square", "triangle"} and 0 <= top["probability"] <= 1
    assert load(work, "endpoints", "r1-ep-2")["status"] == "Deleted"

    job = load(work, "jobs", best)
    assert job["hyperparameters"]["learning_rate"] == tuning["best"]["tuned_hyperparameters"]["learning_rate"]
    assert job["hyperparameters"]["debug_hook"] is True
    report = work / "reports" / best / "report.html"
    assert f"HTML report: {report}" in out and report.is_file()

    assert main(["--workdir", str(work), "lineage", "r1", "--json"]) == 0
    chain = {step.pop("step"): step for step in json.loads(capsys.readouterr().out)}
    assert list(chain) == ["endpoint", "training job", "tuning", "dataset"]
    model = work / "output" / best / "output" / "model.tar.gz"
    assert chain["endpoint"]["model_sha256"] == chain["training job"]["model_sha256"] == sha256(model)
    assert chain["training job"]["hyperparameters"] == job["hyperparameters"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert chain["training job"]["code_revision"].startswith(head.strip())
    assert chain["tuning"]["best_job"] == best
    expected = dataset_manifest({"training": str(data), "pretrained": str(backbone)}, tmp_path / "check")
    assert chain["dataset"]["digest"] == expected["digest"]
    assert chain["dataset"]["files"] == len([p for p in data.rglob("*") if p.is_file()]) + 1  # and the backbone

    assert main(["--workdir", str(work), "lineage", "r1-ep-2"]) == 0  # the same chain, as text
    text = capsys.readouterr().out
    assert text.startswith("endpoint:") and expected["digest"] in text and sha256(model) in text
    assert f"mlflow_run: {job['mlflow_run']}" in text

    # Tracked by default in the work folder's MLflow store, in an experiment named after the job config.
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("job").experiment_id
    runs = {(run.info.run_name, run.data.tags["imgclf.kind"]): run for run in client.search_runs([experiment])}
    parent, trained = runs["r1-tune", "tuning"], runs[best, "training"]  # the best trial has a training run too
    assert parent.info.run_id == tuning["mlflow_run"] and parent.info.status == "FINISHED"
    trials = [run for run in runs.values() if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((run.info.run_name, run.data.tags["imgclf.kind"]) for run in trials) == [
        ("r1-tune-001", "trial"),
        ("r1-tune-002", "trial"),
    ]
    for trial in trials:
        history = client.get_metric_history(trial.info.run_id, "valid loss")
        assert [m.step for m in history] == [1] and trial.info.status == "FINISHED"  # one point per epoch
        assert float(trial.data.params["learning_rate"]) in {0.002, 0.02}
    assert trained.info.run_id == job["mlflow_run"] and trained.info.status == "FINISHED"
    assert float(trained.data.params["learning_rate"]) == job["hyperparameters"]["learning_rate"]
    assert trained.data.metrics["average test loss"] == pytest.approx(job["test_metrics"]["loss"])
    assert trained.data.tags["imgclf.model_sha256"] == sha256(model)
    assert [d.dataset.digest for d in trained.inputs.dataset_inputs] == [expected["digest"][:36]]
    artifacts = {a.path for a in client.list_artifacts(trained.info.run_id)}
    assert {"report.html", "metrics.json", "train.log", "model"} <= artifacts
    assert {"imgclf.endpoint.r1-ep-2.deployed", "imgclf.endpoint.r1-ep-2.stopped"} <= trained.data.tags.keys()
    evaluation = runs["r1-eval", "evaluation"]
    assert evaluation.data.tags["imgclf.training_run"] == job["mlflow_run"]
    assert evaluation.data.metrics["accuracy"] == load(work, "evaluations", "r1-eval")["metrics"]["accuracy"]
    assert {"evaluation.html", "confusion_matrix.png"} <= {
        a.path for a in client.list_artifacts(evaluation.info.run_id)
    }

    # The model registry's version is the job's model.tar.gz, byte for byte.
    assert job["model_version"] == "models:/job/1"
    version = client.get_model_version("job", "1")
    assert version.run_id == job["mlflow_run"] and version.tags["model_sha256"] == sha256(model)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where models:/ URIs are looked up
    (tmp_path / "registry").mkdir()
    downloaded = ModelsArtifactRepository("models:/job/1").download_artifacts("", str(tmp_path / "registry"))
    assert sha256(Path(downloaded) / "model.tar.gz") == sha256(model)


def test_retrain_best_trains_the_best_configuration_once_more(tmp_path: Path, backbone: Path, capsys):
    tuning = "tuning: {ranges: {learning_rate: 'CategoricalParameter([0.01])'}, strategy: Grid, max_jobs: 1}\n"
    config = tuned_job(tmp_path, backbone, (4, 1, 1), tuning)
    work = tmp_path / "work"
    run = ["--workdir", str(work), "run", "--no-tracking", "--config", str(config), "--name", "rb"]
    assert main([*run, "--retrain-best", "--stop-endpoint"]) == 0
    capsys.readouterr()

    record, trial, job = load(work, "runs", "rb"), load(work, "jobs", "rb-tune-001"), load(work, "jobs", "rb-train")
    assert record["training_job"] == "rb-train" and job["status"] == "Completed"
    assert job["hyperparameters"] == trial["hyperparameters"]  # the best trial's, hook included
    assert job["lineage"]["tuning"]["best_job"] == "rb-tune-001" and trial.get("lineage") is None


def test_the_sample_image_is_the_first_of_the_local_test_split_or_a_clear_error(tmp_path: Path):
    data = write_split(tmp_path / "data" / "test", per_class=1).parent
    assert sample_image({"training": str(data)}, None) == sorted((data / "test").rglob("*.jpg"))[0]
    extra = write_split(tmp_path / "extra", per_class=1, classes=("square",))
    assert sample_image({"training": str(data), "test": str(extra)}, None).parent == extra / "square"
    for channels in ({"training": "s3://bucket/data"}, {"training": str(tmp_path / "extra")}):  # S3; no test/ folder
        with pytest.raises(LauncherError, match="give --sample-image FILE"):
            sample_image(channels, None)
    with pytest.raises(LauncherError, match="no sample image at"):
        sample_image({"training": str(data)}, tmp_path / "missing.jpg")


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ("{workers: 0}", "deploy.workers: Input should be greater than or equal to 1"),
        ("{port: 80}", "deploy: unknown keys port"),
    ],
)
def test_bad_deploy_settings_are_refused_before_any_work(tmp_path: Path, deploy: str, message: str, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {tmp_path}\ndeploy: {deploy}\n")
    assert main(["--workdir", str(tmp_path / "work"), "run", "--config", str(config)]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work" / "jobs").exists()


def test_ctrl_c_records_the_run_and_its_job_as_stopped(tmp_path: Path):
    data = tmp_path / "data"
    for split in ("train", "valid", "test"):
        write_split(data / split, per_class=4)
    config = tmp_path / "job.yaml"
    config.write_text(f"channels: {{training: {data}}}\nhyperparameters: {json.dumps({**FIXED, 'epochs': 500})}\n")
    work = tmp_path / "work"
    command = [str(Path(sys.executable).parent / "launcher"), "--workdir", str(work), "run", "--config", str(config),
               "--name", "cc", "--stop-endpoint"]  # fmt: skip
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, preexec_fn=default_sigint)  # fmt: skip
    log = work / "jobs" / "cc-train" / "train.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "epoch 2" in log.read_text()):  # training is under way
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.stdout.read()
        time.sleep(0.5)
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    output, _ = launcher.communicate(timeout=120)

    assert launcher.returncode == 130, output
    run, job = load(work, "runs", "cc"), load(work, "jobs", "cc-train")
    assert (run["status"], job["status"]) == ("Stopped", "Stopped"), (run, job)
    assert run["failure_reason"] == "interrupted by the user" and run["ended"] >= run["created"]
