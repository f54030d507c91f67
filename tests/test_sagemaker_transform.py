"""`launcher transform --backend sagemaker` against AWS clients answered by botocore's Stubber.

Covered: every request (ListObjectsV2 and PutObject of the images, stored once per content, and of the
manifest, CreateModel, CreateTransformJob, DescribeTransformJob, ListObjectsV2, GetObject, DeleteModel) is
validated by botocore against the real service models, and we check what CreateTransformJob receives: a manifest
of exactly the files to classify, one image per request, the content type by extension, the model server's
settings, the hosts' AMI for a GPU type; that the `.out` objects become the same JSON lines as on the other
backends, a bad image's error included; and that a rerun uploads no image again.
Not covered: the real service (whether it accepts the job, runs the image, or names the .out objects as here).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY
from conftest import draw_shape
from test_launcher_sagemaker import AWS_FLAGS, BUCKET, IMAGE, REGION, StubbedAWS

from launcher.cli import main
from launcher.records import RecordStore, TransformJob

MODEL = f"s3://{BUCKET}/imgclf/sm-job-1/output/model.tar.gz"
NAME = "tr1"
FILES = ["a/circle.jpg", "b/square.png", "broken.jpg"]


def images(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    draw_shape("circle").save(root / "a" / "circle.jpg")
    draw_shape("square").save(root / "b" / "square.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    return root


def body(data: dict) -> dict:
    raw = json.dumps(data).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw))}


def answer(label: str) -> dict:
    return {"predictions": [{"label": label, "index": 0, "probability": 0.9}], "logits": [2.0, 0.1, 0.0]}


def entry(data: Path, file: str) -> str:
    """Where an image of this machine lies under imgclf/data/ (and its .out under the output): its folder, the
    start of its SHA-256, its name."""
    folder, _, name = file.rpartition("/")
    digest = hashlib.sha256((data / file).read_bytes()).hexdigest()[:16]
    return "/".join(part for part in (folder, digest, name) if part)


def expect_transform(aws: StubbedAWS, data: Path, status: str = "Completed") -> None:
    s3, sagemaker = aws.stub("s3"), aws.stub("sagemaker")
    s3.add_response("list_objects_v2", {"KeyCount": 0})  # none of the images in S3 yet
    for file in FILES:  # the images, then the manifest
        key = f"imgclf/data/{entry(data, file)}"
        s3.add_response("put_object", {}, {"Bucket": BUCKET, "Key": key, "Body": ANY, "ChecksumAlgorithm": ANY})
    s3.add_response("put_object", {}, {"Bucket": BUCKET, "Key": ANY, "Body": ANY})
    sagemaker.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:111122223333:model/m"})
    sagemaker.add_response("create_transform_job", {"TransformJobArn": f"arn:aws:sagemaker:{REGION}:1:transform-job/t"})
    described = {
        "TransformJobName": "t",
        "TransformJobArn": f"arn:aws:sagemaker:{REGION}:111122223333:transform-job/t",
        "TransformJobStatus": status,
        "ModelName": "t",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m"}}},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
        "CreationTime": 1_700_000_000,
    }
    if status != "Completed":
        described["FailureReason"] = "ClientError: see the job's log"
    sagemaker.add_response("describe_transform_job", {**described, "TransformJobStatus": "InProgress"})
    sagemaker.add_response("describe_transform_job", described)


def expect_outputs(aws: StubbedAWS, data: Path, outputs: dict[str, dict]) -> None:
    s3 = aws.stub("s3")
    prefix = f"imgclf/{NAME}/output/"
    contents = [{"Key": f"{prefix}{NAME}-000000/{entry(data, file)}.out"} for file in outputs]
    s3.add_response("list_objects_v2", {"Contents": contents, "IsTruncated": False})
    for data in outputs.values():
        s3.add_response("get_object", body(data))
    aws.stub("sagemaker").add_response("delete_model", {})


def transform(workdir: Path, data: Path, *extra: str) -> int:
    return main(["--workdir", str(workdir), "transform", MODEL, "--input", str(data), "--backend", "sagemaker",
                 "--name", NAME, "--image", IMAGE, *AWS_FLAGS, *extra])  # fmt: skip


def test_a_transform_job_over_a_manifest_of_the_images(aws: StubbedAWS, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("launcher.backends.sagemaker.backend.time.strftime", lambda *_: "000000")
    data = images(tmp_path / "images")
    expect_transform(aws, data)
    broken = {"error": "the body is not a decodable image (UnidentifiedImageError: ...)", "status": 400}
    outputs = {"a/circle.jpg": answer("circle"), "b/square.png": answer("square"), "broken.jpg": broken}
    expect_outputs(aws, data, outputs)
    assert transform(tmp_path / "work", data, "--instance-type", "ml.m5.xlarge", "--top-k", "1") == 0
    aws.assert_all_answered()

    (manifest_put,) = [p for p in aws.sent("PutObject") if p["Key"].endswith(".manifest")]
    entries = [entry(data, file) for file in FILES]
    assert json.loads(manifest_put["Body"]) == [{"prefix": f"s3://{BUCKET}/imgclf/data/"}, *entries]
    (model,) = aws.sent("CreateModel")
    assert model["PrimaryContainer"]["Image"] == IMAGE and model["PrimaryContainer"]["ModelDataUrl"] == MODEL
    (request,) = aws.sent("CreateTransformJob")
    assert request["TransformJobName"] == request["ModelName"] == f"{NAME}-000000"
    assert request["BatchStrategy"] == "SingleRecord" and request["MaxPayloadInMB"] == 6
    assert request["Environment"] == {"IMGCLF_TOP_K": "1", "IMGCLF_ERRORS_AS_RECORDS": "true"}
    source = request["TransformInput"]["DataSource"]["S3DataSource"]
    assert source == {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/imgclf/{NAME}/{NAME}-000000.manifest"}
    assert request["TransformInput"]["ContentType"] == "application/x-image"  # JPEGs and a PNG
    assert request["TransformInput"]["SplitType"] == "None"
    assert request["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/imgclf/{NAME}/output/{NAME}-000000"
    assert request["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}
    assert [p["ModelName"] for p in aws.sent("DeleteModel")] == [f"{NAME}-000000"]

    output = tmp_path / "work" / "transforms" / NAME / "output"
    lines = {line["file"]: line for line in map(json.loads, (output / "predictions.jsonl").read_text().splitlines())}
    assert lines["a/circle.jpg"] == {"file": "a/circle.jpg", "predictions": answer("circle")["predictions"]}
    assert lines["broken.jpg"] == {"file": "broken.jpg", **broken}
    record = RecordStore(tmp_path / "work" / "records").load(TransformJob, NAME)
    assert (record.status, record.classified, record.failed, record.region) == ("Completed", 2, 1, REGION)


def test_a_gpu_type_needs_an_ami_whose_driver_runs_the_image(aws: StubbedAWS, tmp_path: Path, capsys, monkeypatch):
    data = images(tmp_path / "images")
    assert transform(tmp_path / "work", data, "--instance-type", "ml.g5.xlarge") == 1
    assert "SageMaker's batch transform hosts run NVIDIA driver 470 or 535" in capsys.readouterr().err
    assert aws.calls == []

    monkeypatch.setattr("launcher.backends.sagemaker.backend.time.strftime", lambda *_: "000000")
    expect_transform(aws, data)
    expect_outputs(aws, data, {file: answer("circle") for file in FILES})
    assert transform(tmp_path / "work2", data, "--instance-type", "ml.g5.xlarge",
                     "--transform-ami-version", "al2-ami-sagemaker-batch-gpu-580") == 0  # fmt: skip
    (request,) = aws.sent("CreateTransformJob")
    assert request["TransformResources"]["TransformAmiVersion"] == "al2-ami-sagemaker-batch-gpu-580"


def test_files_without_an_answer_are_tried_again_by_the_next_run(aws: StubbedAWS, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("launcher.backends.sagemaker.backend.time.strftime", lambda *_: "000000")
    data = images(tmp_path / "images")
    expect_transform(aws, data, status="Failed")
    expect_outputs(aws, data, {"a/circle.jpg": answer("circle")})  # the job failed before the others
    assert transform(tmp_path / "work", data, "--instance-type", "ml.m5.xlarge") == 0
    output = tmp_path / "work" / "transforms" / NAME / "output"
    lines = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert {line["file"]: line.get("status") for line in lines} == {"a/circle.jpg": None, "b/square.png": 503,
                                                                   "broken.jpg": 503}  # fmt: skip

    aws.calls.clear()
    s3 = aws.stub("s3")  # the images are in S3 since the first run: only the manifest is put
    s3.add_response("list_objects_v2", {"Contents": [{"Key": f"imgclf/data/{entry(data, file)}"} for file in FILES]})
    s3.add_response("put_object", {}, {"Bucket": BUCKET, "Key": ANY, "Body": ANY})
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:111122223333:model/m"})
    sagemaker.add_response("create_transform_job", {"TransformJobArn": f"arn:aws:sagemaker:{REGION}:1:transform-job/t"})
    described = {"TransformJobName": "t", "TransformJobArn": f"arn:aws:sagemaker:{REGION}:1:transform-job/t",
                 "TransformJobStatus": "Completed", "ModelName": "t", "CreationTime": 1_700_000_000,
                 "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m"}}},
                 "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}}  # fmt: skip
    sagemaker.add_response("describe_transform_job", described)
    expect_outputs(aws, data, {file: answer("square") for file in FILES[1:]})
    assert transform(tmp_path / "work", data, "--instance-type", "ml.m5.xlarge") == 0
    aws.assert_all_answered()
    (manifest_put,) = [p for p in aws.sent("PutObject") if p["Key"].endswith(".manifest")]
    assert json.loads(manifest_put["Body"])[1:] == [entry(data, file) for file in FILES[1:]]  # what was not finished
    assert [p["Key"] for p in aws.sent("PutObject")] == [manifest_put["Key"]]  # no image uploaded again


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StubbedAWS:
    from test_launcher_sagemaker import stub_aws

    return stub_aws(monkeypatch, tmp_path)
