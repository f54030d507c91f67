"""The launcher's process backend end to end: train -> deploy -> predict -> stop, through the CLI."""

import json
import tarfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import draw_shape

from launcher import hosted
from launcher.cli import main

pytestmark = pytest.mark.slow  # training and endpoints through the CLI

FAST = ["-H", "epochs=1", "-H", "batch_size=4", "-H", "image_size=32", "-H", "num_workers=0", "-H", "pretrained=false"]


def records(workdir: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "records" / kind).glob("*.json"))]


def test_train_deploy_predict_stop(
    tmp_path: Path, shapes_dataset: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    workdir = tmp_path / "work"
    base = ["--workdir", "work"]

    assert main([*base, "train", "--data", shapes_dataset.name, "--job-name", "job-1", *FAST]) == 0
    job = records(workdir, "jobs")[0]
    assert job["status"] == "Completed" and job["name"] == "job-1"
    assert job["hyperparameters"]["epochs"] == 1 and job["channels"] == {"training": str(shapes_dataset)}
    # Laid out as SageMaker's S3 output: <output>/<job>/output/{model,output}.tar.gz
    model_data = workdir / "output" / "job-1" / "output" / "model.tar.gz"
    assert job["model_data"] == str(model_data)
    with tarfile.open(model_data) as tar:
        assert {"model.pth", "model_config.json", "code/inference.py"} <= set(tar.getnames())
    with tarfile.open(workdir / "output" / "job-1" / "output" / "output.tar.gz") as tar:
        assert {"metrics.json", "report/report.html", "report/Overfit.json"} <= set(tar.getnames())
    capsys.readouterr()
    assert main([*base, "report", "job-1"]) == 0
    assert "ExplodingTensor" in capsys.readouterr().out and (workdir / "reports" / "job-1" / "report.html").is_file()
    # The job folder holds the string-encoded hyperparameters SageMaker would have written.
    hps = json.loads((workdir / "jobs" / "job-1" / "input" / "config" / "hyperparameters.json").read_text())
    assert hps["epochs"] == "1" and hps["pretrained"] == "false"

    assert main([*base, "deploy", "job-1", "--endpoint-name", "ep-1", "--workers", "1"]) == 0
    endpoint = records(workdir, "endpoints")[0]
    assert endpoint["status"] == "InService" and endpoint["job_name"] == "job-1"
    tree = [psutil.Process(endpoint["pid"]), *psutil.Process(endpoint["pid"]).children(recursive=True)]

    capsys.readouterr()
    image = next((shapes_dataset / "test" / "triangle").iterdir())
    assert main([*base, "predict", str(image)]) == 0  # the only endpoint in service
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["logits"]) == 3 and answer["predictions"][0]["label"] in {"circle", "square", "triangle"}

    (tmp_path / "notes.txt").write_text("not an image")
    assert (
        main([*base, "predict", "--endpoint", "ep-1", "--content-type", "text/plain", str(tmp_path / "notes.txt")]) == 1
    )
    assert "answered 415: unsupported content type 'text/plain'" in capsys.readouterr().err

    assert main([*base, "stop", "ep-1"]) == 0
    assert records(workdir, "endpoints")[0]["status"] == "Deleted"
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []  # serve, MMS's Java and its workers are all gone


def test_failed_job_reports_its_reason(tmp_path: Path, shapes_dataset: Path, capsys: pytest.CaptureFixture):
    """What only the container sees (images that do not decode; the launcher counts files, it does not decode them)."""
    for image in (shapes_dataset / "valid").rglob("*.jpg"):
        image.write_bytes(b"not a JPEG")
    workdir = tmp_path / "work"
    code = main(["--workdir", str(workdir), "train", "--data", str(shapes_dataset)])
    assert code == 1
    assert "split" in capsys.readouterr().err
    job = records(workdir, "jobs")[0]
    assert job["status"] == "Failed" and "has no readable images" in job["failure_reason"]
    assert job["model_data"] is None  # a failed job has no model


def test_what_the_image_would_refuse_starts_no_job(tmp_path: Path, shapes_dataset: Path, capsys: pytest.CaptureFixture):
    """The container's own message, before any job folder or record: the same check as on the sagemaker backend."""
    from imgclf_contract.errors import HyperparameterError
    from imgclf_contract.hyperparameters import Hyperparameters

    with pytest.raises(HyperparameterError) as refused:
        Hyperparameters.from_mapping({"model_name": "vgg16"})
    workdir = tmp_path / "work"
    code = main(["--workdir", str(workdir), "train", "--data", str(shapes_dataset), "-H", "model_name=vgg16"])
    assert code == 1
    assert str(refused.value) in capsys.readouterr().err
    assert not (workdir / "jobs").exists() and records(workdir, "jobs") == []


def test_deploy_refuses_a_model_that_does_not_load(tmp_path: Path, capsys: pytest.CaptureFixture):
    bogus = tmp_path / "model.tar.gz"
    bogus.write_bytes(b"not a tarball")
    assert main(["--workdir", str(tmp_path / "work"), "deploy", str(bogus)]) == 1
    assert "cannot unpack" in capsys.readouterr().err


def test_unknown_job_lists_what_exists(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["--workdir", str(tmp_path), "deploy", "no-such-job"]) == 1
    assert "no training job named 'no-such-job'" in capsys.readouterr().err


def kill_model_workers(endpoint: dict) -> None:
    """Every model worker of the endpoint's server at once, as an out-of-memory kill of the group would."""
    tree = psutil.Process(endpoint["pid"]).children(recursive=True)
    workers = [p for p in tree if any("model_service_worker" in arg for arg in p.cmdline())]
    assert workers
    for worker in workers:
        worker.kill()


def ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited; its parent, this test, has not reaped it
    except psutil.NoSuchProcess:
        return True


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.5)


def test_an_endpoint_whose_workers_died_is_restarted_then_given_up(
    tmp_path: Path, trained_model_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """SageMaker replaces an instance whose `serve` exits; the process backend restarts it, within a limit."""
    model = tmp_path / "model.tar.gz"
    with tarfile.open(model, "w:gz") as tar:
        tar.add(trained_model_dir, arcname=".")
    monkeypatch.setenv("IMGCLF_ENDPOINT_RESTARTS", "1")
    base = ["--workdir", str(tmp_path / "work")]
    image = tmp_path / "image.jpg"
    draw_shape("circle").save(image)
    assert main([*base, "deploy", str(model), "--endpoint-name", "ep", "--workers", "1"]) == 0
    endpoint = records(tmp_path / "work", "endpoints")[0]
    try:
        kill_model_workers(endpoint)
        wait_for(lambda: records(tmp_path / "work", "endpoints")[0]["restarts"], "the restart to be recorded")
        restart = records(tmp_path / "work", "endpoints")[0]["restarts"][0]
        assert restart["event"] == "restarting" and restart["restart"] == 1 and restart["exit_status"] != 0
        wait_for(lambda: hosted.model_ready(endpoint["url"]), "the restarted server to be ready")
        assert main([*base, "predict", "--endpoint", "ep", str(image)]) == 0
        assert records(tmp_path / "work", "endpoints")[0]["status"] == "InService"

        kill_model_workers(endpoint)  # again: the one restart allowed is spent
        wait_for(lambda: records(tmp_path / "work", "endpoints")[0]["status"] == "Failed", "the supervisor to give up")
        failed = records(tmp_path / "work", "endpoints")[0]
        assert [r["event"] for r in failed["restarts"]] == ["restarting", "gave up"]
        assert "restarted 1 times" in failed["failure_reason"] and "gave up" in failed["failure_reason"]
        log = Path(failed["log"]).read_text()
        assert "supervisor:" in log and "restart 1 of at most 1" in log and "gave up" in log
        wait_for(lambda: ended(endpoint["pid"]), "the supervisor to exit")
    finally:
        main([*base, "stop", "ep"])
