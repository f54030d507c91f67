"""The sagemaker backend through the CLI, against AWS clients answered by botocore's Stubber.

Covered: launcher.backends.sagemaker.api builds every request from our options, and botocore validates each request,
and each stubbed answer, against the real service models of SageMaker, SageMaker Runtime, S3 and CloudWatch Logs,
so field names, types and required members are AWS's own. We check what CreateTrainingJob receives (image, input
mode, metric regexes, JSON-encoded hyperparameters, channels, output, resources, Debugger/Profiler settings, spot
training), that local channels are uploaded with PutObject, that the job's log is streamed and its record kept,
that a sagemaker job's report is downloaded with GetObject; and for endpoints: CreateModel, CreateEndpointConfig,
CreateEndpoint and the DescribeEndpoint wait, InvokeEndpoint as the original project's client calls it (an
error from the container included), and the three deletions of `stop`.
Not covered: credentials, IAM (the role's trust and permissions), S3 permissions, ECR, and the real service:
whether SageMaker accepts the job or endpoint, runs our container, or runs Debugger's rule jobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from imgclf_contract import metrics
from launcher import contract
from launcher.backends.sagemaker import api as sagemaker_api
from launcher.cli import main
from launcher.records import Endpoint, RecordStore, TrainingJob

REGION = "eu-west-1"
ROLE = "arn:aws:iam::111122223333:role/imgclf-training"
BUCKET = "imgclf-artifacts"
IMAGE = f"111122223333.dkr.ecr.{REGION}.amazonaws.com/imgclf:latest"
JOB = "sm-job-1"
ARTIFACTS = f"s3://{BUCKET}/imgclf/{JOB}/output"


class StubbedAWS(boto3.Session):
    """A boto3 session whose clients, one per service, answer from Stubbers and record the calls made to them."""

    def __init__(self, key_id: str = "testing", secret: str = "testing", token: str | None = None) -> None:
        super().__init__(aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token,
                         region_name=REGION)  # fmt: skip
        self.clients: dict[str, Any] = {}
        self.stubbers: dict[str, Stubber] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (operation, parameters), in order

    def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        if service_name not in self.clients:
            client = super().client(service_name, *args, **kwargs)
            client.meta.events.register("provide-client-params", self._record)
            self.stubbers[service_name] = Stubber(client)
            self.stubbers[service_name].activate()
            self.clients[service_name] = client
        return self.clients[service_name]

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def stub(self, service_name: str) -> Stubber:
        self.client(service_name)
        return self.stubbers[service_name]

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]

    def assert_all_answered(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


def stub_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StubbedAWS:
    """Stubbed AWS behind sagemaker_api's one seam (boto_session), an environment without AWS settings or
    credentials, and no pause between the Describe* calls of a wait."""
    monkeypatch.setattr(sagemaker_api, "POLL_SECONDS", 0)
    for name in ("IMGCLF_SAGEMAKER_ROLE", "IMGCLF_S3_BUCKET", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    stubbed = StubbedAWS()

    def boto_session(region: str) -> StubbedAWS:
        assert region == REGION
        return stubbed

    monkeypatch.setattr(sagemaker_api, "boto_session", boto_session)
    return stubbed


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StubbedAWS:
    return stub_aws(monkeypatch, tmp_path)


def description(status: str = "Completed", **fields: Any) -> dict[str, Any]:
    """A DescribeTrainingJob answer (the Stubber checks it against the service model)."""
    return {
        "TrainingJobName": JOB,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:111122223333:training-job/{JOB}",
        "ModelArtifacts": {"S3ModelArtifacts": f"{ARTIFACTS}/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "CreationTime": 1_700_000_000,
        **fields,
    }


def expect_job(aws: StubbedAWS, answer: dict[str, Any], log: list[str]) -> None:
    """CreateTrainingJob, then what following it asks: the job's state, its log stream and events, its state."""
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response(
        "create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:111122223333:training-job/{JOB}"}
    )
    sagemaker.add_response("describe_training_job", answer)
    logs = aws.stub("logs")
    logs.add_response("describe_log_streams", {"logStreams": [{"logStreamName": f"{JOB}/algo-1-1700000000"}]})
    events = [{"timestamp": 1_700_000_000_000 + i, "message": line, "ingestionTime": 0} for i, line in enumerate(log)]
    logs.add_response("get_log_events", {"events": events, "nextForwardToken": "f/1", "nextBackwardToken": "b/0"})
    logs.add_response("get_log_events", {"events": [], "nextForwardToken": "f/1", "nextBackwardToken": "b/0"})
    sagemaker.add_response("describe_training_job", answer)


def train(workdir: Path, *extra: str) -> int:
    return main([
        "--workdir", str(workdir), "train", "--backend", "sagemaker", "--job-name", JOB, "--image", IMAGE,
        "--instance-type", "ml.g4dn.xlarge", *extra,
    ])  # fmt: skip


AWS_FLAGS = ("--role", ROLE, "--bucket", BUCKET, "--region", REGION)
HYPERPARAMETERS = ("-H", "epochs=3", "-H", "learning_rate=0.01", "-H", "model_name=resnet50", "-H", "pretrained=false",
                   "-H", 'batch_size="128"')  # fmt: skip


def read_record(workdir: Path) -> dict[str, Any]:
    return RecordStore(workdir / "records").load(TrainingJob, JOB).to_json()


def test_train_sends_our_contract_and_uploads_local_data(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    data = tmp_path / "shapes"
    for split in ("train", "valid", "test"):
        (data / split / "circle").mkdir(parents=True)
        (data / split / "circle" / "0.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    s3 = aws.stub("s3")
    s3.add_response("list_objects_v2", {"KeyCount": 0})  # no manifest of this dataset version yet
    s3.add_response("list_objects_v2", {"KeyCount": 0})  # none of its files
    for _ in range(4):  # three images, then the manifest
        s3.add_response("put_object", {"ETag": '"0"'})
    final = [{"MetricName": "test accuracy", "Value": 0.75}, {"MetricName": "average test loss", "Value": 0.5}]
    expect_job(aws, description(FinalMetricDataList=final), ["epoch 1 train loss: 0.9", "average test loss: 0.5"])

    pretrained = f"s3://{BUCKET}/weights/resnet50.pth"
    assert (
        train(tmp_path, *AWS_FLAGS, *HYPERPARAMETERS, "--data", str(data), "--channel", f"pretrained={pretrained}") == 0
    )
    aws.assert_all_answered()
    captured = capsys.readouterr()
    assert "epoch 1 train loss: 0.9\naverage test loss: 0.5" in captured.out  # the job's log, streamed
    assert f"0 of 3 files of {data} already in s3://{BUCKET}/imgclf/data/; uploading 3" in captured.err

    *images, manifest = aws.sent("PutObject")
    digest = hashlib.sha256(b"\xff\xd8 not really a JPEG").hexdigest()[:16]
    keys = [f"{split}/circle/{digest}/0.jpg" for split in ("test", "train", "valid")]
    assert sorted(put["Key"] for put in images) == [f"imgclf/data/{key}" for key in keys]  # one key per content
    assert manifest["Key"].startswith("imgclf/datasets/") and manifest["Key"].endswith(".manifest")
    assert json.loads(manifest["Body"]) == [{"prefix": f"s3://{BUCKET}/imgclf/data/"}, *keys]
    (request,) = aws.sent("CreateTrainingJob")
    algorithm = request["AlgorithmSpecification"]
    assert (algorithm["TrainingImage"], algorithm["TrainingInputMode"]) == (IMAGE, "File")
    assert algorithm["MetricDefinitions"] == metrics.METRIC_DEFINITIONS
    regexes = {d["Name"]: re.compile(d["Regex"]) for d in algorithm["MetricDefinitions"]}
    assert regexes["average test loss"].search("average test loss: 0.5").group(1) == "0.5"
    assert regexes["test accuracy"].search("test accuracy: 7.5e-01").group(1) == "7.5e-01"
    # JSON-encoded strings, exactly as the process backend writes hyperparameters.json
    assert request["HyperParameters"] == contract.encode_hyperparameters(
        {"epochs": 3, "learning_rate": 0.01, "model_name": "resnet50", "pretrained": False, "batch_size": "128"}
    )
    assert (
        request["HyperParameters"]["model_name"] == '"resnet50"' and request["HyperParameters"]["pretrained"] == "false"
    )
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels == {
        "training": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/{manifest['Key']}",
                     "S3DataDistributionType": "FullyReplicated"},
        "pretrained": {"S3DataType": "S3Prefix", "S3Uri": pretrained, "S3DataDistributionType": "FullyReplicated"},
    }  # fmt: skip
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/imgclf"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert (request["RoleArn"], request["TrainingJobName"]) == (ROLE, JOB)
    # Debugger and Profiler off: no hook, no rule jobs, the profiler explicitly disabled.
    assert request["ProfilerConfig"] == {"DisableProfiler": True}
    for absent in ("DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"):
        assert absent not in request

    record = read_record(tmp_path)
    assert record["status"] == "Completed" and record["backend"] == "sagemaker" and record["region"] == REGION
    assert (record["model_data"], record["output_data"]) == (f"{ARTIFACTS}/model.tar.gz", f"{ARTIFACTS}/output.tar.gz")
    assert record["test_metrics"] == {"accuracy": 0.75, "loss": 0.5}
    assert "test accuracy 0.7500, average test loss 0.5000" in captured.err


# sagemaker-core warns that framework profiling is deprecated (it stopped at PyTorch 2.0); the original project has it.
@pytest.mark.filterwarnings("ignore:Framework profiling:DeprecationWarning")
def test_sagemaker_debugger_sends_the_original_configuration(aws: StubbedAWS, tmp_path: Path):
    expect_job(aws, description(), ["training"])
    assert train(tmp_path, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes", "--sagemaker-debugger") == 0
    aws.assert_all_answered()
    (request,) = aws.sent("CreateTrainingJob")

    hook = request["DebugHookConfig"]
    assert hook["HookParameters"] == {"train.save_interval": "100", "eval.save_interval": "10"}
    assert hook["S3OutputPath"] == f"s3://{BUCKET}/imgclf"
    rules = {rule["RuleConfigurationName"]: rule for rule in request["DebugRuleConfigurations"]}
    assert list(rules) == ["LossNotDecreasing", "Overfit", "Overtraining"]
    assert all(r["RuleEvaluatorImage"].endswith("/sagemaker-debugger-rules:latest") for r in rules.values())
    profiler_rules = [rule["RuleConfigurationName"] for rule in request["ProfilerRuleConfigurations"]]
    assert profiler_rules == ["LowGPUUtilization", "ProfilerReport"]
    profiler = request["ProfilerConfig"]
    assert profiler["ProfilingIntervalInMilliseconds"] == 500 and profiler["DisableProfiler"] is False
    # sagemaker-core writes these as almost-JSON strings with a trailing comma: '{"StartStep": 0, "NumSteps": 10, }'
    assert '"NumSteps": 10' in profiler["ProfilingParameters"]["DetailedProfilingConfig"]
    assert read_record(tmp_path)["sagemaker_debugger"] is True


def test_failed_job_is_recorded_with_its_reason(aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture):
    reason = "AlgorithmError: the valid split (/opt/ml/input/data/training/valid) has no readable images"
    expect_job(aws, description("Failed", FailureReason=reason), ["Traceback ..."])
    assert train(tmp_path, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes") == 1
    aws.assert_all_answered()
    assert f"training job {JOB} failed: {reason}" in capsys.readouterr().err
    record = read_record(tmp_path)
    assert (record["status"], record["failure_reason"]) == ("Failed", reason)


def test_credentials_never_reach_the_console_or_the_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
):
    secrets = {"key_id": "AKIAEXAMPLESECRETID1", "secret": "wJalrXUtnFEMI/K7MDENG/EXAMPLESECRET",
               "token": "IQoJb3JpZ2luX2VjEXAMPLETOKEN"}  # fmt: skip
    stub_aws(monkeypatch, tmp_path)
    aws = StubbedAWS(**secrets)
    monkeypatch.setattr(sagemaker_api, "boto_session", lambda region: aws)
    for name, value in zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), secrets.values(),
                           strict=True):  # fmt: skip
        monkeypatch.setenv(name, value)
    # A job that fails, then a call that AWS refuses: both print errors, and the records keep what happened.
    expect_job(aws, description("Failed", FailureReason="AlgorithmError: out of memory"), ["Traceback ..."])
    aws.stub("sagemaker").add_client_error(
        "create_model", "AccessDeniedException", "User: arn:aws:sts::111122223333:assumed-role/ci is not authorized"
    )
    work = tmp_path / "work"
    assert train(work, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes") == 1
    assert main(["--workdir", str(work), "deploy", f"s3://{BUCKET}/model.tar.gz", "--backend", "sagemaker",
                 "--image", IMAGE, *AWS_FLAGS, "--instance-type", "ml.m5.large"]) == 1  # fmt: skip
    aws.assert_all_answered()
    printed = "".join(capsys.readouterr())
    assert "out of memory" in printed and "is not authorized" in printed
    written = "".join(p.read_text(errors="replace") for p in work.rglob("*") if p.is_file())
    for value in secrets.values():
        assert value not in printed and value not in written


def test_settings_come_from_the_environment(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("IMGCLF_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("IMGCLF_S3_BUCKET", BUCKET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    aws.stub("sagemaker").add_client_error(
        "create_training_job", "ResourceLimitExceeded", "account-level service limit exceeded", 400
    )
    assert train(tmp_path, "--data", f"s3://{BUCKET}/shapes") == 1
    aws.assert_all_answered()
    (request,) = aws.sent("CreateTrainingJob")
    assert (request["RoleArn"], request["OutputDataConfig"]["S3OutputPath"]) == (ROLE, f"s3://{BUCKET}/imgclf")
    err = capsys.readouterr().err
    assert f"SageMaker did not start training job {JOB}" in err and "ResourceLimitExceeded" in err
    assert not RecordStore(tmp_path / "records").exists(TrainingJob, JOB)


@pytest.mark.parametrize(
    ("leave_out", "message"),
    [
        ("--role", "an IAM role for the job (--role ARN or $IMGCLF_SAGEMAKER_ROLE)"),
        ("--bucket", "an S3 bucket for artifacts and uploaded data (--bucket NAME or $IMGCLF_S3_BUCKET)"),
        ("--region", "an AWS region (--region NAME or $AWS_REGION or $AWS_DEFAULT_REGION)"),
    ],
)
def test_missing_setting_is_named(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture, leave_out: str, message: str
):
    flags = [arg for flag, value in zip(AWS_FLAGS[::2], AWS_FLAGS[1::2], strict=True) if flag != leave_out
             for arg in (flag, value)]  # fmt: skip
    assert train(tmp_path, *flags, "--data", f"s3://{BUCKET}/shapes") == 1
    assert capsys.readouterr().err == f"launcher: error: the sagemaker backend needs {message}\n"
    assert aws.calls == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instance-type", "local"], "needs a SageMaker instance type such as ml.g4dn.xlarge"),
        (["--image", "imgclf:latest"], "SageMaker pulls images from ECR, not 'imgclf:latest'"),
        (["--output", "out"], "give --output an s3:// URI, not"),
        (["--data", "no-such-folder"], "channel 'training': "),
        (["--instance-type", "ml.p3.8xlarge"], "ml.p3.8xlarge has K80 or V100 GPUs"),
    ],
)
def test_unusable_options_are_refused_before_any_call(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
):
    assert train(tmp_path, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes", *extra) == 1
    assert message in capsys.readouterr().err
    assert aws.calls == []


def test_report_of_a_sagemaker_job_is_downloaded(aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture):
    report = {
        "rule": "Overfit",
        "kind": "training",
        "status": "IssuesFound",
        "steps": [10, 20],
        "explanation": "Validation loss rose while training loss fell.",
        "recommendation": None,
        "parameters": {},
    }
    (tmp_path / "data" / "report").mkdir(parents=True)
    (tmp_path / "data" / "report" / "Overfit.json").write_text(json.dumps(report))
    archive = contract.pack(tmp_path / "data", tmp_path / "output.tar.gz").read_bytes()
    key = f"imgclf/{JOB}/output/output.tar.gz"
    s3 = aws.stub("s3")
    s3.add_response(
        "get_object", {"Body": StreamingBody(io.BytesIO(archive), len(archive))}, {"Bucket": BUCKET, "Key": key}
    )
    s3.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404)
    workdir = tmp_path / "work"
    job = {"name": JOB, "backend": "sagemaker", "status": "Completed", "region": REGION,
           "output_data": f"{ARTIFACTS}/output.tar.gz"}  # fmt: skip
    RecordStore(workdir / "records").save(TrainingJob(**job))

    assert main(["--workdir", str(workdir), "report", JOB]) == 0
    out = capsys.readouterr().out
    assert "Overfit  training  IssuesFound  2      Validation loss rose while training loss fell." in out
    assert (workdir / "reports" / JOB / "Overfit.json").is_file()

    assert main(["--workdir", str(workdir), "report", JOB]) == 1
    assert f"{ARTIFACTS}/output.tar.gz does not exist (yet)" in capsys.readouterr().err
    aws.assert_all_answered()


def test_spot_training_asks_for_spot_capacity_and_checkpoints(aws: StubbedAWS, tmp_path: Path):
    expect_job(aws, description(), ["training"])
    assert train(tmp_path, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes", "--spot", "--max-run", "3600") == 0
    aws.assert_all_answered()
    (request,) = aws.sent("CreateTrainingJob")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    checkpoints = f"s3://{BUCKET}/imgclf/{JOB}/checkpoints"
    assert request["CheckpointConfig"] == {"S3Uri": checkpoints, "LocalPath": "/opt/ml/checkpoints"}
    assert read_record(tmp_path)["spot"] == {"max_wait": 7200, "checkpoint_s3_uri": checkpoints}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--spot", "--max-run", "3600", "--max-wait", "600"],
            "--max-wait (600 s) must be at least --max-run (3600 s)",
        ),
        (["--max-wait", "600"], "--max-wait applies to spot training only"),
    ],
)
def test_spot_limits_are_checked_before_any_call(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
):
    assert train(tmp_path, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes", *extra) == 1
    assert message in capsys.readouterr().err
    assert aws.calls == [] and not any(tmp_path.iterdir())  # refused before anything is written


def test_without_spot_the_run_limit_is_sent_alone(aws: StubbedAWS, tmp_path: Path):
    aws.stub("sagemaker").add_client_error("create_training_job", "ResourceLimitExceeded", "limit", 400)
    assert train(tmp_path, *AWS_FLAGS, "--data", f"s3://{BUCKET}/shapes") == 1
    (request,) = aws.sent("CreateTrainingJob")
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request


ENDPOINT = "sm-endpoint-1"
SERVING_INSTANCE = "ml.m5.large"
ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:111122223333:endpoint/{ENDPOINT}"


def endpoint_description(status: str, **fields: Any) -> dict[str, Any]:
    """A DescribeEndpoint answer."""
    return {
        "EndpointName": ENDPOINT,
        "EndpointArn": ENDPOINT_ARN,
        "EndpointConfigName": ENDPOINT,
        "EndpointStatus": status,
        "CreationTime": 1_700_000_000,
        "LastModifiedTime": 1_700_000_000,
        **fields,
    }


def expect_endpoint(aws: StubbedAWS, *statuses: str, **fields: Any) -> None:
    """CreateModel, CreateEndpointConfig, CreateEndpoint, then one DescribeEndpoint answer per status."""
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:111122223333:model/{ENDPOINT}"})
    sagemaker.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:111122223333:endpoint-config/{ENDPOINT}"},
    )
    sagemaker.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
    for status in statuses:
        sagemaker.add_response("describe_endpoint", endpoint_description(status, **fields))


def deploy(workdir: Path, model: str, *extra: str) -> int:
    return main([
        "--workdir", str(workdir), "deploy", model, "--backend", "sagemaker", "--image", IMAGE,
        "--instance-type", SERVING_INSTANCE, "--endpoint-name", ENDPOINT, *extra,
    ])  # fmt: skip


def save_completed_job(workdir: Path) -> None:
    job = {"name": JOB, "backend": "sagemaker", "status": "Completed", "region": REGION,
           "model_data": f"{ARTIFACTS}/model.tar.gz"}  # fmt: skip
    RecordStore(workdir / "records").save(TrainingJob(**job))


def read_endpoint(workdir: Path) -> dict[str, Any]:
    return RecordStore(workdir / "records").load(Endpoint, ENDPOINT).to_json()


def test_deploy_creates_model_config_and_endpoint_and_waits_until_in_service(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    save_completed_job(tmp_path)
    expect_endpoint(aws, "Creating", "Creating", "InService")
    # The job's record gives the region; the role comes from the command line.
    assert deploy(tmp_path, JOB, "--role", ROLE, "--workers", "2") == 0
    aws.assert_all_answered()

    (model,) = aws.sent("CreateModel")
    assert model["ModelName"] == ENDPOINT and model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"] == {
        "Image": IMAGE,
        "ModelDataUrl": f"{ARTIFACTS}/model.tar.gz",
        "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    }
    (config,) = aws.sent("CreateEndpointConfig")
    assert config["EndpointConfigName"] == ENDPOINT
    (variant,) = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        ENDPOINT, SERVING_INSTANCE, 1,
    )  # fmt: skip
    (endpoint,) = aws.sent("CreateEndpoint")
    assert (endpoint["EndpointName"], endpoint["EndpointConfigName"]) == (ENDPOINT, ENDPOINT)
    assert aws.sent("DescribeEndpoint") == [{"EndpointName": ENDPOINT}] * 3

    record = read_endpoint(tmp_path)
    assert {key: record[key] for key in ("name", "backend", "region", "status", "image", "model_data", "job_name")} == {
        "name": ENDPOINT, "backend": "sagemaker", "region": REGION, "status": "InService", "image": IMAGE,
        "model_data": f"{ARTIFACTS}/model.tar.gz", "job_name": JOB,
    }  # fmt: skip
    assert (record["endpoint_name"], record["endpoint_config_name"], record["model_name"]) == (ENDPOINT,) * 3
    assert f"endpoint {ENDPOINT} is in service" in capsys.readouterr().err


def test_deploying_a_job_without_image_serves_it_with_the_image_it_trained_in(aws: StubbedAWS, tmp_path: Path):
    job = {"name": JOB, "backend": "sagemaker", "status": "Completed", "region": REGION, "image": IMAGE,
           "model_data": f"{ARTIFACTS}/model.tar.gz"}  # fmt: skip
    RecordStore(tmp_path / "records").save(TrainingJob(**job))
    expect_endpoint(aws, "InService")
    assert main(["--workdir", str(tmp_path), "deploy", JOB, "--backend", "sagemaker", "--role", ROLE,
                 "--instance-type", SERVING_INSTANCE, "--endpoint-name", ENDPOINT]) == 0  # fmt: skip
    aws.assert_all_answered()
    (model,) = aws.sent("CreateModel")
    assert model["PrimaryContainer"]["Image"] == IMAGE and read_endpoint(tmp_path)["image"] == IMAGE


def test_a_failed_endpoint_is_recorded_with_its_reason(aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture):
    save_completed_job(tmp_path)
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    expect_endpoint(aws, "Creating", "Failed", FailureReason=reason)
    assert deploy(tmp_path, JOB, "--role", ROLE) == 1
    aws.assert_all_answered()
    assert f"endpoint {ENDPOINT} is Failed: {reason}" in capsys.readouterr().err
    record = read_endpoint(tmp_path)
    assert (record["status"], record["failure_reason"]) == ("Failed", reason)


def test_deploy_uploads_a_local_model(aws: StubbedAWS, tmp_path: Path):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"not really a model")
    aws.stub("s3").add_response("put_object", {"ETag": '"0"'})
    expect_endpoint(aws, "InService")
    assert deploy(tmp_path, str(archive), *AWS_FLAGS) == 0
    aws.assert_all_answered()
    (put,) = aws.sent("PutObject")
    assert (put["Bucket"], put["Key"]) == (BUCKET, f"imgclf/{ENDPOINT}/model.tar.gz")
    uploaded = f"s3://{BUCKET}/imgclf/{ENDPOINT}/model.tar.gz"
    assert aws.sent("CreateModel")[0]["PrimaryContainer"]["ModelDataUrl"] == uploaded
    assert read_endpoint(tmp_path)["model_data"] == uploaded


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (f"{ARTIFACTS}/model.tar.gz", ["--instance-type", "local"], "needs a SageMaker instance type"),
        (f"{ARTIFACTS}/model.tar.gz", ["--role", ROLE], "the sagemaker backend needs an AWS region"),
        ("model.tar.gz", ["--role", ROLE, "--region", REGION], "no training job named 'model.tar.gz'"),
    ],
)
def test_deploy_refuses_unusable_options_before_any_call(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture, model: str, extra: list[str], message: str
):
    assert deploy(tmp_path, model, *extra) == 1
    assert message in capsys.readouterr().err
    assert aws.calls == []


def test_deploying_an_s3_model_needs_no_bucket_and_other_backends_refuse_it(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    expect_endpoint(aws, "InService")
    assert deploy(tmp_path, f"{ARTIFACTS}/model.tar.gz", "--role", ROLE, "--region", REGION) == 0
    aws.assert_all_answered()
    assert main(["--workdir", str(tmp_path), "deploy", f"{ARTIFACTS}/model.tar.gz"]) == 1
    assert "the process backend reads a model.tar.gz on this machine" in capsys.readouterr().err


def save_endpoint(workdir: Path) -> None:
    endpoint = {"name": ENDPOINT, "backend": "sagemaker", "status": "InService", "region": REGION,
                "endpoint_name": ENDPOINT, "endpoint_config_name": ENDPOINT, "model_name": ENDPOINT}  # fmt: skip
    RecordStore(workdir / "records").save(Endpoint(**endpoint))


def test_predict_sends_the_jpeg_and_decodes_the_json_answer(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    save_endpoint(tmp_path)
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0 a JPEG")
    answer = {"predictions": [{"label": "dog", "index": 1, "probability": 0.9}], "logits": [0.1, 2.3]}
    body = json.dumps(answer).encode()
    aws.stub("sagemaker-runtime").add_response(
        "invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"}
    )
    assert main(["--workdir", str(tmp_path), "predict", str(image)]) == 0  # the only endpoint in service
    aws.assert_all_answered()
    assert json.loads(capsys.readouterr().out) == answer
    (request,) = aws.sent("InvokeEndpoint")
    assert request == {
        "EndpointName": ENDPOINT, "Body": image.read_bytes(), "ContentType": "image/jpeg", "Accept": "application/json"
    }  # fmt: skip


def test_an_error_answered_by_the_container_is_reported_with_its_message(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    save_endpoint(tmp_path)
    image = tmp_path / "empty.jpg"
    image.write_bytes(b"")
    container_answer = json.dumps({"error": "the request body is empty: send the image's bytes", "status": 400})
    aws.stub("sagemaker-runtime").add_client_error(
        "invoke_endpoint",
        "ModelError",
        f'Received client error (400) from primary with message "{container_answer}".',
        424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": container_answer},
    )
    assert main(["--workdir", str(tmp_path), "predict", "--endpoint", ENDPOINT, str(image)]) == 1
    aws.assert_all_answered()
    assert capsys.readouterr().err == (
        f"launcher: error: endpoint {ENDPOINT} answered 400: the request body is empty: send the image's bytes\n"
    )


def test_stop_deletes_endpoint_config_and_model_and_tolerates_one_already_gone(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    save_endpoint(tmp_path)
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
    sagemaker.add_response("delete_endpoint_config", {}, {"EndpointConfigName": ENDPOINT})
    message = f'Could not find model "arn:aws:sagemaker:{REGION}:111122223333:model/{ENDPOINT}".'
    sagemaker.add_client_error("delete_model", "ValidationException", message, 400)
    assert main(["--workdir", str(tmp_path), "stop"]) == 0
    aws.assert_all_answered()
    assert [name for name, _ in aws.calls] == ["DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]
    assert aws.sent("DeleteModel") == [{"ModelName": ENDPOINT}]
    err = capsys.readouterr().err
    assert f"already deleted: model {ENDPOINT}" in err and f"endpoint {ENDPOINT} stopped" in err
    assert read_endpoint(tmp_path)["status"] == "Deleted"


def test_stop_reports_other_errors_and_keeps_the_record(aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture):
    save_endpoint(tmp_path)
    aws.stub("sagemaker").add_client_error("delete_endpoint", "AccessDeniedException", "not authorized", 400)
    assert main(["--workdir", str(tmp_path), "stop", ENDPOINT]) == 1
    assert f"deleting endpoint {ENDPOINT}" in capsys.readouterr().err
    assert read_endpoint(tmp_path)["status"] == "InService"


@pytest.mark.parametrize(
    ("instance_type", "extra", "ami_version"),
    [
        ("ml.g5.xlarge", [], "al2023-ami-sagemaker-inference-gpu-4-1"),  # GPU: the AMI with driver 580 (CUDA 13)
        ("ml.p4d.24xlarge", [], "al2023-ami-sagemaker-inference-gpu-4-1"),
        ("ml.m5.large", [], None),  # CPU: none
        ("ml.g5.xlarge", ["--inference-ami-version", "none"], None),  # dropped on request
        ("ml.g5.xlarge", ["--inference-ami-version", "al2-ami-sagemaker-inference-gpu-3-1"],
         "al2-ami-sagemaker-inference-gpu-3-1"),
    ],
)  # fmt: skip
def test_gpu_endpoints_get_an_ami_whose_driver_runs_the_image(
    aws: StubbedAWS, tmp_path: Path, instance_type: str, extra: list[str], ami_version: str | None
):
    # The Stubber checks CreateEndpointConfig against botocore's service model; the enum value is checked here.
    expect_endpoint(aws, "InService")
    model = f"{ARTIFACTS}/model.tar.gz"
    assert deploy(tmp_path, model, "--role", ROLE, "--region", REGION, "--instance-type", instance_type, *extra) == 0
    aws.assert_all_answered()
    (variant,) = aws.sent("CreateEndpointConfig")[0]["ProductionVariants"]
    assert variant["InstanceType"] == instance_type and variant.get("InferenceAmiVersion") == ami_version
    if ami_version:
        assert ami_version in sagemaker_api.inference_ami_versions()
    assert read_endpoint(tmp_path)["inference_ami_version"] == ami_version


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instance-type", "ml.p3.2xlarge"], "ml.p3.2xlarge has K80 or V100 GPUs"),
        (["--instance-type", "ml.p2.xlarge"], "ml.p2.xlarge has K80 or V100 GPUs"),
        (["--instance-type", "ml.g5.xlarge", "--inference-ami-version", "al2-gpu-0"], "unknown inference AMI version"),
    ],
)
def test_unusable_gpus_and_unknown_amis_are_refused_before_any_call(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
):
    assert deploy(tmp_path, f"{ARTIFACTS}/model.tar.gz", "--role", ROLE, "--region", REGION, *extra) == 1
    assert message in capsys.readouterr().err
    assert aws.calls == []


def save_promoted_endpoint(workdir: Path) -> None:
    """An endpoint that served the model of `JOB`, then (generation 2) another one, as a promotion leaves it."""
    first = {"generation": 1, "job_name": JOB, "model_data": f"{ARTIFACTS}/model.tar.gz", "model_name": ENDPOINT,
             "endpoint_config_name": ENDPOINT, "since": 1_700_000_000, "reason": "deployed"}  # fmt: skip
    second = {**first, "generation": 2, "job_name": "sm-job-2", "model_data": f"s3://{BUCKET}/imgclf/sm-job-2/m.tar.gz",
              "model_name": f"{ENDPOINT}-2", "endpoint_config_name": f"{ENDPOINT}-2", "reason": "promoted"}  # fmt: skip
    endpoint = {"name": ENDPOINT, "backend": "sagemaker", "status": "InService", "region": REGION, "image": IMAGE,
                "instance_type": SERVING_INSTANCE, "endpoint_name": ENDPOINT, "endpoint_config_name": f"{ENDPOINT}-2",
                "model_name": f"{ENDPOINT}-2", "model_data": second["model_data"], "job_name": "sm-job-2",
                "generation": 2, "environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
                "history": [first, second]}  # fmt: skip
    RecordStore(workdir / "records").save(Endpoint(**endpoint))


def expect_update(aws: StubbedAWS, *answers: tuple[str, str]) -> None:
    """CreateModel, CreateEndpointConfig and UpdateEndpoint, then a DescribeEndpoint per (status, config) answer."""
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:111122223333:model/m-3"})
    config = f"arn:aws:sagemaker:{REGION}:111122223333:endpoint-config/c-3"
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": config})
    sagemaker.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
    for status, config in answers:
        sagemaker.add_response("describe_endpoint", endpoint_description(status, EndpointConfigName=config))


def test_rollback_is_a_blue_green_update_that_alarms_can_roll_back(aws: StubbedAWS, tmp_path: Path):
    # Validated against botocore's service model by the Stubber: CreateModel, CreateEndpointConfig and UpdateEndpoint
    # with its DeploymentConfig. Not covered: SageMaker's own health checks, traffic shift and alarm evaluation.
    save_promoted_endpoint(tmp_path)
    expect_update(aws, ("Updating", ENDPOINT), ("InService", f"{ENDPOINT}-3"))
    command = ["--workdir", str(tmp_path), "rollback", ENDPOINT, "--role", ROLE, "--rollback-alarm", "imgclf-5xx"]
    assert main(command) == 0
    aws.assert_all_answered()
    (model,) = aws.sent("CreateModel")
    assert (
        model["ModelName"] == f"{ENDPOINT}-3"
        and model["PrimaryContainer"]["ModelDataUrl"] == f"{ARTIFACTS}/model.tar.gz"
    )
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    (update,) = aws.sent("UpdateEndpoint")
    assert update["EndpointName"] == ENDPOINT and update["EndpointConfigName"] == f"{ENDPOINT}-3"
    assert update["DeploymentConfig"] == {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
            "TerminationWaitInSeconds": 300,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "imgclf-5xx"}]},
    }
    record = read_endpoint(tmp_path)
    assert (record["generation"], record["job_name"], record["endpoint_config_name"]) == (3, JOB, f"{ENDPOINT}-3")
    assert [entry["model_name"] for entry in record["history"]] == [ENDPOINT, f"{ENDPOINT}-2", f"{ENDPOINT}-3"]


def test_an_update_that_sagemaker_rolled_back_leaves_the_record_as_it_was(
    aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture
):
    save_promoted_endpoint(tmp_path)
    failure = "the alarm imgclf-5xx fired during the baking period"
    sagemaker = aws.stub("sagemaker")
    expect_update(aws, ("RollingBack", f"{ENDPOINT}-2"))
    sagemaker.add_response("describe_endpoint", endpoint_description("InService", EndpointConfigName=f"{ENDPOINT}-2",
                                                                     FailureReason=failure))  # fmt: skip
    assert main(["--workdir", str(tmp_path), "rollback", ENDPOINT, "--role", ROLE]) == 1
    assert failure in capsys.readouterr().err
    record = read_endpoint(tmp_path)
    assert (record["generation"], record["job_name"], record["endpoint_config_name"]) == (
        2,
        "sm-job-2",
        f"{ENDPOINT}-2",
    )


def test_rollback_alarms_are_refused_where_there_is_no_blue_green_update(tmp_path: Path, capsys: pytest.CaptureFixture):
    RecordStore(tmp_path / "records").save(Endpoint(name="ep", backend="process", status="InService"))
    assert main(["--workdir", str(tmp_path), "rollback", "ep", "--rollback-alarm", "a"]) == 1
    assert (
        "--rollback-alarms is an option of --backend sagemaker, not of the process backend" in capsys.readouterr().err
    )
