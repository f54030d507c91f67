"""Local data goes to S3 once per content, against a real moto server (its S3 and SageMaker) and real boto3 clients:
reruns upload nothing, a grown folder only its new files, a changed file never overwrites what an earlier job read,
an interrupted upload resumes without duplicates and starts no job, and a tuning run and its final training job
share one upload. Uploads are counted by a botocore event hook on the launcher's own session (the calls still
reach moto). Not covered: SageMaker copying a ManifestFile channel into the container (moto runs no job), and
real S3's permissions."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from test_sagemaker_moto import BUCKET, IMAGE, REGION, ROLE, manifest_files, moto_server  # noqa: F401 (a fixture)

from launcher.backends import TrainingSpec
from launcher.backends.sagemaker import SageMakerOptions
from launcher.backends.sagemaker import api as sagemaker_api
from launcher.backends.sagemaker.training import prepare_training
from launcher.cli import main


class Uploads:
    """The launcher's boto3 session, counting the dataset files it puts into S3 (and failing one, if asked)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> None:
        self.keys: list[str] = []
        self.fail_at = fail_at
        session = boto3.Session(region_name=REGION)
        session.events.register("provide-client-params.s3.PutObject", self._count)
        session.events.register("provide-client-params.s3.CreateMultipartUpload", self._count)
        monkeypatch.setattr(sagemaker_api, "boto_session", lambda region: session)

    def _count(self, params: dict[str, Any], **_: Any) -> None:
        if not params["Key"].startswith("imgclf/data/"):
            return
        if self.fail_at is not None and len(self.keys) + 1 == self.fail_at:
            raise EndpointConnectionError(endpoint_url="http://s3 (the test cut the connection)")
        self.keys.append(params["Key"])

    def take(self) -> list[str]:
        taken, self.keys = self.keys, []
        return taken


def train(workdir: Path, data: Path, job: str) -> int:
    return main(["--workdir", str(workdir), "train", "--backend", "sagemaker", "--data", str(data), "--job-name", job,
                 "--image", IMAGE, "--instance-type", "ml.m5.xlarge", "--role", ROLE, "--bucket", BUCKET,
                 "-H", "epochs=1"])  # fmt: skip


def channel_of(job: str) -> str:
    (channel,) = boto3.client("sagemaker").describe_training_job(TrainingJobName=job)["InputDataConfig"]
    return channel["DataSource"]["S3DataSource"]["S3Uri"]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def object_keys() -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="imgclf/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture
def data(tmp_path: Path, shapes_dataset: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return shapes_dataset  # made for this test alone: it may change


def test_reruns_upload_only_what_changed_and_every_job_keeps_its_version(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    uploads, work = Uploads(monkeypatch), tmp_path / "work"
    first = files_of(data)
    assert train(work, data, "j1") == 0
    assert len(uploads.take()) == len(first)
    assert train(work, data, "j2") == 0
    assert uploads.take() == []  # the same folder: nothing uploaded
    assert channel_of("j2") == channel_of("j1")

    source = next((data / "train" / "circle").iterdir())
    for number in range(5):
        (data / "train" / "circle" / f"new-{number}.jpg").write_bytes(source.read_bytes() + bytes([number]))
    assert train(work, data, "j3") == 0
    assert sorted(Path(key).name for key in uploads.take()) == [f"new-{number}.jpg" for number in range(5)]
    assert dict(manifest_files(channel_of("j3"))) == files_of(data)  # exactly this version's files and bytes

    changed = data / "test" / "square" / sorted(p.name for p in (data / "test" / "square").iterdir())[0]
    changed.write_bytes(changed.read_bytes() + b"changed")
    assert train(work, data, "j4") == 0
    (key,) = uploads.take()
    assert key.endswith(f"/{hashlib.sha256(changed.read_bytes()).hexdigest()[:16]}/{changed.name}")
    assert dict(manifest_files(channel_of("j1"))) == first  # the earlier job's input still reads the old bytes
    assert dict(manifest_files(channel_of("j4"))) == files_of(data)
    data_keys = [key for key in object_keys() if key.startswith("imgclf/data/")]
    assert len(data_keys) == len(first) + 5 + 1  # one object per content, never one per job


def test_an_interrupted_upload_starts_no_job_and_its_rerun_uploads_the_rest_once(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    uploads = Uploads(monkeypatch, fail_at=3)
    assert train(tmp_path / "work", data, "cut") == 1
    assert "uploading" in capsys.readouterr().err
    assert len(uploads.take()) == 2
    assert not [key for key in object_keys() if key.startswith("imgclf/datasets/")]  # no version to train on
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []

    uploads.fail_at = None
    assert train(tmp_path / "work", data, "resumed") == 0
    assert len(uploads.take()) == len(files_of(data)) - 2
    data_keys = [key for key in object_keys() if key.startswith("imgclf/data/")]
    assert len(data_keys) == len(set(data_keys)) == len(files_of(data))
    assert dict(manifest_files(channel_of("resumed"))) == files_of(data)


def test_a_tuning_run_and_its_final_job_share_one_upload(data: Path, monkeypatch: pytest.MonkeyPatch):
    """What `launcher run --backend sagemaker` prepares: the tuning job's channels, then the final job's."""
    uploads = Uploads(monkeypatch)
    spec = TrainingSpec(job_name="final", channels={"training": str(data)}, hyperparameters={"epochs": 1},
                        image=IMAGE, instance_type="ml.m5.xlarge",
                        options=SageMakerOptions(ROLE, BUCKET, REGION))  # fmt: skip
    tuning = prepare_training(spec, "tuning-run")
    assert len(uploads.take()) == len(files_of(data))
    final = prepare_training(spec, "final")
    assert uploads.take() == [] and final.channels == tuning.channels


def test_a_missing_bucket_is_named(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["--workdir", str(tmp_path / "w"), "train", "--backend", "sagemaker", "--data", str(data),
                 "--image", IMAGE, "--instance-type", "ml.m5.xlarge", "--role", ROLE, "--bucket",
                 "no-such-bucket"]) == 1  # fmt: skip
    assert "bucket no-such-bucket does not exist" in capsys.readouterr().err
