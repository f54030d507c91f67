"""The whole sagemaker-backend chain against a local moto server: train, report, deploy, stop, lineage.

Covered: the launcher's real clients (boto3's, reached through `AWS_ENDPOINT_URL` as any
AWS-compatible endpoint is) against moto's stateful S3, SageMaker and CloudWatch Logs: local data is uploaded and
really lands in S3, the training job is created and followed (its CloudWatch log streamed), its record says where
its artifacts are, `report` downloads the output.tar.gz the test placed where SageMaker would write it, `deploy`
creates a model that points at the job's model.tar.gz and image and an endpoint config of the backend's default
instance type, `stop` deletes all three, and `lineage` leads back from the endpoint to the uploaded data.
Not covered: moto neither runs the image nor checks IAM; its training jobs complete at once without metrics, so
the model.tar.gz and output.tar.gz here stand in for what the container writes; InvokeEndpoint is covered by
the Stubber tests (moto 5.2 cannot take a binary body).
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient

from launcher.backends.sagemaker import api as sagemaker_api
from launcher.cli import main
from launcher.hosted import free_port
from launcher.records import Endpoint, RecordStore, TrainingJob

REGION = "us-east-1"
BUCKET = "imgclf-moto"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf:test"
JOB = "moto-job-1"
ENDPOINT = "moto-ep-1"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SERVER_START_SECONDS = 60


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A moto server on a free loopback port, the environment pointing every AWS client at it."""
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, f"moto server ended: {(tmp_path / 'moto.log').read_text()}"
                assert time.monotonic() < deadline, "moto server did not listen"
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        for name in ("IMGCLF_SAGEMAKER_ROLE", "IMGCLF_S3_BUCKET", "AWS_PROFILE", "AWS_REGION"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
        monkeypatch.setattr(sagemaker_api, "POLL_SECONDS", 0)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def manifest_files(uri: str) -> list[tuple[str, bytes]]:
    """Each file a ManifestFile channel holds: its path in the channel (class folders and file name, without the
    content hash that the key carries) and the bytes SageMaker would copy there."""
    s3 = boto3.client("s3")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    prefix, *entries = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    prefix_bucket, _, prefix_key = prefix["prefix"].removeprefix("s3://").partition("/")
    files = []
    for entry in entries:
        folders, name = entry.rsplit("/", 2)[:-2], entry.rsplit("/", 1)[1]
        body = s3.get_object(Bucket=prefix_bucket, Key=prefix_key + entry)["Body"].read()
        files.append(("/".join([*folders, name]), body))
    return files


def place_job_outputs() -> None:
    """What the container and SageMaker would leave: the job's log in CloudWatch, its two artifacts in S3."""
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    stream = f"{JOB}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    lines = ["epoch 1: average test loss: 0.4100", "test accuracy: 0.8700"]
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)

    rule = {
        "rule": "LossNotDecreasing",
        "kind": "training",
        "status": "NoIssuesFound",
        "steps": [],
        "explanation": "The training loss fell.",
        "recommendation": None,
    }
    s3 = boto3.client("s3")
    artifacts = f"imgclf/{JOB}/output"
    model = tar_gz({"model.pth": b"weights", "model_config.json": b"{}"})
    s3.put_object(Bucket=BUCKET, Key=f"{artifacts}/model.tar.gz", Body=model)
    output = tar_gz(
        {
            "report/LossNotDecreasing.json": json.dumps(rule).encode(),
            "report/report.html": b"<html>",
            "metrics.json": b"{}",
        }
    )
    s3.put_object(Bucket=BUCKET, Key=f"{artifacts}/output.tar.gz", Body=output)


def test_train_report_deploy_stop_lineage(moto_server: str, tmp_path: Path, shapes_dataset: Path,
                                          capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    place_job_outputs()
    workdir = tmp_path / "work"
    base = ["--workdir", str(workdir)]
    aws = ["--backend", "sagemaker", "--role", ROLE, "--bucket", BUCKET]

    train = ["train", "--data", str(shapes_dataset), "--job-name", JOB, "--image", IMAGE,
             "--instance-type", "ml.m5.xlarge", "-H", "epochs=2"]  # fmt: skip
    assert main([*base, *train, *aws]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: average test loss: 0.4100" in out  # the job's CloudWatch log, followed

    created = boto3.client("sagemaker").describe_training_job(TrainingJobName=JOB)
    assert created["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert json.loads(created["HyperParameters"]["epochs"]) == 2  # JSON-encoded, as the contract says
    source = created["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile"
    keys = sorted(path for path, _ in manifest_files(source["S3Uri"]))
    assert keys == sorted(str(p.relative_to(shapes_dataset)) for p in shapes_dataset.rglob("*.jpg"))

    records = RecordStore(workdir / "records")
    job = records.load(TrainingJob, JOB)
    assert (job.status, job.region, job.image) == ("Completed", REGION, IMAGE)
    assert job.model_data == f"s3://{BUCKET}/imgclf/{JOB}/output/model.tar.gz"

    assert main([*base, "report", JOB]) == 0  # downloads the output.tar.gz from S3
    assert "LossNotDecreasing" in capsys.readouterr().out

    assert main([*base, "deploy", JOB, "--endpoint-name", ENDPOINT, *aws]) == 0  # the job's image and region
    sagemaker = boto3.client("sagemaker")
    container = sagemaker.describe_model(ModelName=ENDPOINT)["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == (IMAGE, job.model_data)
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=ENDPOINT)["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.large"  # the backend's default for an endpoint
    assert sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService"
    assert records.load(Endpoint, ENDPOINT).status == "InService"

    assert main([*base, "stop", ENDPOINT]) == 0
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_models()["Models"] == []
    assert records.load(Endpoint, ENDPOINT).status == "Deleted"
    capsys.readouterr()

    assert main([*base, "lineage", ENDPOINT, "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert [link["step"] for link in chain] == ["endpoint", "training job", "dataset"]
    assert chain[0]["job_name"] == JOB and chain[1]["model_data"] == job.model_data
    assert chain[1]["dataset_in_s3"] == {"training": source["S3Uri"]}  # the version the job read
    assert chain[2]["channels"] == {"training": str(shapes_dataset)}
    assert chain[2]["files"] == len(keys)

    # Tracked as the process backend's jobs are: a run with the job's identity, its report, its S3 model registered
    # where it lies, and the endpoint's tag trail.
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(job.mlflow_run)
    assert (run.info.run_name, run.info.status) == (JOB, "FINISHED")
    assert run.data.tags["imgclf.backend"] == "sagemaker" and run.data.tags["imgclf.image"] == IMAGE
    assert json.loads(run.data.params["epochs"]) == 2
    assert {f"imgclf.endpoint.{ENDPOINT}.deployed", f"imgclf.endpoint.{ENDPOINT}.stopped"} <= run.data.tags.keys()
    assert {a.path for a in client.list_artifacts(job.mlflow_run)} == {"report.html", "metrics.json"}
    version = client.get_model_version(*job.model_version.removeprefix("models:/").split("/"))
    assert version.source == f"s3://{BUCKET}/imgclf/{JOB}/output" and version.run_id == job.mlflow_run


BAD_RANGE_CONFIG = """\
tuning:
  ranges:
    batch_size: IntegerParameter(0, 64)
  max_jobs: 2
"""


@pytest.mark.parametrize(
    ("command", "damage", "refusal"),
    [
        (["train", "-H", "learning_rate=abc", "-H", "batch_size=0"], None,
         lambda data: [message(learning_rate="abc"), message(batch_size=0)]),
        (["tune", "--name", "moto-tune", "--config", "{config}"], None,
         lambda data: ["tuning range 'batch_size', minimum 0: " + message(batch_size=0)]),
        (["train"], "only-train", lambda data: [data_message({"training": data})]),
        (["tune", "--name", "moto-tune", "--config", "{config}", "-H", "batch_size=0"], "only-train",
         lambda data: [message(batch_size=0)]),
    ],
    ids=["train-bad-hyperparameters", "tune-bad-range", "train-no-valid-test", "tune-bad-fixed-hyperparameter"],
)  # fmt: skip
def test_what_the_image_would_refuse_uploads_nothing_and_creates_no_job(
    moto_server: str, tmp_path: Path, shapes_dataset: Path, capsys: pytest.CaptureFixture, command, damage, refusal
):
    """Refused before paying: the container's own message, non-zero exit, nothing in S3, no training or tuning job."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    if damage == "only-train":
        shutil.rmtree(shapes_dataset / "valid")
        shutil.rmtree(shapes_dataset / "test")
    config = tmp_path / "tune.yaml"
    config.write_text(BAD_RANGE_CONFIG)
    args = [arg.format(config=config) for arg in command]
    aws = ["--backend", "sagemaker", "--role", ROLE, "--bucket", BUCKET, "--image", IMAGE,
           "--instance-type", "ml.m5.xlarge"]  # fmt: skip
    assert main(["--workdir", str(tmp_path / "work"), *args, "--data", str(shapes_dataset), *aws]) == 1
    err = capsys.readouterr().err
    for expected in refusal(shapes_dataset):
        assert expected in err
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    sagemaker = boto3.client("sagemaker")
    assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == []
    assert sagemaker.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []


def message(**hyperparameter: object) -> str:
    """The container's message for a hyperparameter it refuses (imgclf itself, run here)."""
    from imgclf_contract.errors import HyperparameterError
    from imgclf_contract.hyperparameters import Hyperparameters

    with pytest.raises(HyperparameterError) as refused:
        Hyperparameters.from_mapping(hyperparameter)
    return str(refused.value)


def data_message(channels: dict[str, Path]) -> str:
    """The container's message for data it refuses."""
    from imgclf.data import load_image_folders
    from imgclf_contract.errors import ContractError

    with pytest.raises(ContractError) as refused:
        load_image_folders(channels)
    return str(refused.value)
