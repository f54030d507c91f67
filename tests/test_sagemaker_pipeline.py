"""The retrain loop as a SageMaker Pipeline: its definition, and `launcher pipeline put/start/status/stop`.

Covered: every step's Arguments, once the values SageMaker fills in at run time are replaced by values of their
type, validated against botocore's SageMaker model as the request the step makes (CreateHyperParameterTuningJob,
CreateProcessingJob, CreateModelPackage); every `Get` naming a declared parameter or an earlier step and every
property file a step writes; the Tune step being the tuning job `launcher tune --backend sagemaker` sends; put,
start (the data stored once, the champion found in the model registry) against a moto server, from a second work
folder too; status and stop, and a refused request, against botocore's Stubber (moto has no
ListPipelineExecutionSteps or StopPipelineExecution).
Not covered: SageMaker running the definition (moto stores it and marks every execution Succeeded); whether
SageMaker's own validation takes what botocore's model takes (expressions where strings go, Std:JsonGet).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator
from conftest import write_split
from test_launcher_sagemaker import REGION as STUBBED_REGION
from test_launcher_sagemaker import StubbedAWS, stub_aws
from test_sagemaker_moto import moto_server  # noqa: F401  (a fixture)

from imgclf_contract.judging import NO_MODEL
from launcher.backends import TrainingSpec
from launcher.backends.sagemaker import SageMakerOptions
from launcher.backends.sagemaker.api import training_request
from launcher.backends.sagemaker.tuning import tuning_request
from launcher.cli import main
from launcher.errors import LauncherError
from launcher.loop.pipeline_definition import (
    DECIDE,
    DEPLOY,
    ENDPOINT_CONFIG,
    EVALUATE,
    MODEL,
    REGISTER,
    TUNE,
    PipelinePlan,
    definition,
    every_step,
)
from launcher.tuning import TuningSpec

REGION = "us-east-1"
BUCKET = "imgclf-pipelines"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf:test"
PIPELINE, ENDPOINT = "shapes-loop", "shapes-ep"
ARN = f"arn:aws:sagemaker:{REGION}:123456789012"
RANGES = {"learning_rate": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"}}
CONFIG = f"""\
image: {IMAGE}
instance_type: ml.g4dn.xlarge
hyperparameters: {{epochs: 2, model_name: resnet18, pretrained: false}}
tuning:
  max_jobs: 4
  max_parallel_jobs: 2
  ranges:
    learning_rate: {{type: continuous, min: 0.001, max: 0.1, scaling: Logarithmic}}
    batch_size: CategoricalParameter([16, 32])
"""
OPERATIONS = {  # each step type: the request it makes, and the name SageMaker gives it
    "Tuning": ("CreateHyperParameterTuningJob", {"HyperParameterTuningJobName": "pipelines-abc-Tune-1"}),
    "Processing": ("CreateProcessingJob", {"ProcessingJobName": "pipelines-abc-Evaluate-1"}),
    "RegisterModel": ("CreateModelPackage", {}),
    "Model": ("CreateModel", {}),
    "EndpointConfig": ("CreateEndpointConfig", {}),
    "Endpoint": ("CreateEndpoint", {}),
}
RESOLVED = {  # what the image's `resolve` and `evaluate` write, by JSON path
    "dataset_version": f"s3://{BUCKET}/imgclf/datasets/abc.manifest",
    "dataset_type": "ManifestFile",
    "champion_model": f"s3://{BUCKET}/imgclf/old/output/model.tar.gz",
    "proceed": True,
    "reason": "",
    "decision.promote": True,
}


def plan(**fields: Any) -> PipelinePlan:
    training = TrainingSpec(
        job_name=PIPELINE,
        channels={},
        hyperparameters={"epochs": 2, "model_name": "resnet18", "debug_hook": True},
        output_path=f"s3://{BUCKET}/imgclf",
        image=IMAGE,
        instance_type="ml.g4dn.xlarge",
        options=SageMakerOptions(role=ROLE, bucket=BUCKET, region=REGION),
    )
    tuning = TuningSpec(name=PIPELINE, training=training, ranges=RANGES, max_jobs=4, max_parallel_jobs=2)
    return PipelinePlan(**{"name": PIPELINE, "endpoint": ENDPOINT, "tuning": tuning, "role": ROLE,
                           "output_path": f"s3://{BUCKET}/imgclf", "datasets": f"s3://{BUCKET}/imgclf/datasets/",
                           "evaluation_instance_type": "ml.m5.xlarge",
                           "endpoint_instance_type": "ml.m5.xlarge", "code_revision": "abc123", **fields})  # fmt: skip


def steps_of(built: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["Name"]: step for step in every_step(built["Steps"])}


class Resolver:
    """Replaces each expression by a value of its type, and checks what it refers to exists before it is used."""

    def __init__(self, built: dict[str, Any]):
        sample = {"String": "s3://bucket/imgclf/datasets/abc.manifest", "Integer": 1, "Float": 0.0}
        self.parameters = {p["Name"]: p.get("DefaultValue") or sample[p["Type"]] for p in built["Parameters"]}
        self.earlier: set[str] = set()
        self.property_files: set[str] = set()
        self.seen: list[str] = []

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Get"}:
            path = value["Get"]
            self.seen.append(path)
            kind, name, *rest = path.split(".")
            if kind == "Parameters":
                assert name in self.parameters, path
                return self.parameters[name]
            if kind == "Steps":
                assert name in self.earlier, f"{path}: step {name} does not run before"
                if rest[0] == "PropertyFiles":
                    assert f"{name}.{rest[1]}" in self.property_files, path
                return "pipelines-abc-Tune-1-004-1a2b3c4d"
            assert kind == "Execution" and name in ("PipelineExecutionId", "PipelineExecutionArn", "PipelineName"), path
            return "execution-id"
        if isinstance(value, dict) and set(value) == {"Std:Join"}:
            return value["Std:Join"]["On"].join(str(self(v)) for v in value["Std:Join"]["Values"])
        if isinstance(value, dict) and set(value) == {"Std:JsonGet"}:
            self(value["Std:JsonGet"]["PropertyFile"])
            return RESOLVED[value["Std:JsonGet"]["Path"]]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def test_every_step_is_a_request_sagemaker_takes():
    built = definition(plan())
    json.dumps(built)  # the definition is JSON
    model = botocore.session.get_session().get_service_model("sagemaker")
    validator = ParamValidator()
    create = {"PipelineName": PIPELINE, "PipelineDefinition": json.dumps(built), "RoleArn": ROLE,
              "ClientRequestToken": "x" * 32}  # fmt: skip
    assert not validator.validate(create, model.operation_model("CreatePipeline").input_shape).has_errors()
    resolve = Resolver(built)
    steps = every_step(built["Steps"])
    assert len({step["Name"] for step in steps}) == len(steps) == 11
    for step in steps:
        assert all(earlier in resolve.earlier for earlier in step.get("DependsOn", [])), step["Name"]
        if step["Type"] == "Condition":
            (condition,) = step["Arguments"]["Conditions"]
            assert resolve(condition["LeftValue"]) is True and condition["RightValue"] is True
        elif step["Type"] == "Fail":
            assert isinstance(resolve(step["Arguments"]["ErrorMessage"]), str)
        else:
            operation, name = OPERATIONS[step["Type"]]
            request = {**resolve(step["Arguments"]), **name}
            report = validator.validate(request, model.operation_model(operation).input_shape)
            assert not report.has_errors(), f"{step['Name']}: {report.generate_report()}"
        resolve.earlier.add(step["Name"])
        resolve.property_files |= {f"{step['Name']}.{p['PropertyFileName']}" for p in step.get("PropertyFiles", [])}
    assert {"Parameters.DatasetVersion", "Parameters.MinImprovement", "Steps.Resolve.PropertyFiles.Resolved",
            "Steps.Evaluate.PropertyFiles.Evaluation"} <= set(resolve.seen)  # fmt: skip


def test_the_tune_step_is_the_tuning_job_launcher_tune_sends():
    """Same search, same trials (hyperparameters with the diagnostics, image, metric definitions), the data and the
    instances left to each execution."""
    built, spec = definition(plan()), plan().tuning
    tune = steps_of(built)[TUNE]
    sent = tuning_request(training_request(spec.training, PIPELINE, ROLE, f"s3://{BUCKET}/imgclf", {}, 86400), spec)
    assert tune["Arguments"]["HyperParameterTuningJobConfig"] == sent["HyperParameterTuningJobConfig"]
    ours, theirs = tune["Arguments"]["TrainingJobDefinition"], sent["TrainingJobDefinition"]
    assert ours["StaticHyperParameters"] == theirs["StaticHyperParameters"]
    assert ours["StaticHyperParameters"]["debug_hook"] == "true"
    assert ours["AlgorithmSpecification"] == theirs["AlgorithmSpecification"]
    (channel,) = ours["InputDataConfig"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == {"Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.Resolve.PropertyFiles.Resolved"}, "Path": "dataset_version"}}  # fmt: skip
    resources = ours["HyperParameterTuningResourceConfig"]
    assert resources["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    defaults = {p["Name"]: p["DefaultValue"] for p in built["Parameters"]}
    assert defaults["TrainingInstanceType"] == "ml.g4dn.xlarge" and defaults["MinImprovement"] == 0.0


def test_the_decision_is_the_evaluation_files_and_both_branches_keep_the_evidence():
    built = definition(plan(min_improvement=0.05))
    evaluate, decide = steps_of(built)[EVALUATE], steps_of(built)[DECIDE]
    arguments = evaluate["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--min-improvement") + 1] == {
        "Std:Join": {"On": "", "Values": [{"Get": "Parameters.MinImprovement"}]}
    }
    (condition,) = decide["Arguments"]["Conditions"]
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == "decision.promote"
    (approved, model, config, deploy), (rejected,) = decide["Arguments"]["IfSteps"], decide["Arguments"]["ElseSteps"]
    assert [approved["Name"], model["Name"], config["Name"], deploy["Name"]] == [
        REGISTER,
        MODEL,
        ENDPOINT_CONFIG,
        DEPLOY,
    ]
    assert model["DependsOn"] == [REGISTER]  # served only once registered as the champion
    assert model["Arguments"]["PrimaryContainer"]["ModelDataUrl"] == approved["Arguments"]["InferenceSpecification"][
        "Containers"][0]["ModelDataUrl"]  # fmt: skip
    assert deploy["Arguments"]["EndpointName"] == ENDPOINT and "DeploymentConfig" not in deploy["Arguments"]
    (variant,) = config["Arguments"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.m5.xlarge" and "InferenceAmiVersion" not in variant  # a CPU type: none
    assert approved["Arguments"]["ModelApprovalStatus"] == "Approved"
    assert rejected["Arguments"]["ModelApprovalStatus"] == "Rejected"
    for step in (approved, rejected):
        assert step["Arguments"]["ModelPackageGroupName"] == ENDPOINT
        same = {k: v for k, v in step["Arguments"].items() if k != "ModelApprovalStatus"}
        assert same == {k: v for k, v in approved["Arguments"].items() if k != "ModelApprovalStatus"}
    assert approved["Arguments"]["CustomerMetadataProperties"]["code_revision"] == "abc123"
    resolve = steps_of(built)["Resolve"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert resolve[resolve.index("--no-model") + 1] == f"s3://{BUCKET}/imgclf/pipelines/{PIPELINE}/{NO_MODEL}"
    assert {p["Name"]: p for p in built["Parameters"]}["DatasetVersion"]["DefaultValue"] == "newest"


def test_what_sagemaker_would_refuse_is_refused_before_any_call():
    with pytest.raises(LauncherError, match="ECR"):
        unpushed = TrainingSpec(job_name=PIPELINE, channels={}, hyperparameters={}, image="imgclf:latest",
                                instance_type="ml.m5.xlarge")  # fmt: skip
        definition(plan(tuning=plan().tuning.model_copy(update={"training": unpushed})))
    local = TrainingSpec(job_name=PIPELINE, channels={"pretrained": "/tmp/weights.pth"}, hyperparameters={},
                         image=IMAGE, instance_type="ml.m5.xlarge")  # fmt: skip
    with pytest.raises(LauncherError, match="pretrained"):
        definition(plan(tuning=plan().tuning.model_copy(update={"training": local})))


# -- the commands against a moto server -------------------------------------------------------------------------
def put_args(workdir: Path, config: Path, region: str = REGION) -> list[str]:
    return ["--workdir", str(workdir), "pipeline", "put", PIPELINE, "--config", str(config), "--endpoint", ENDPOINT,
            "--role", ROLE, "--bucket", BUCKET, "--region", region]  # fmt: skip


def test_put_and_start_against_sagemaker_and_s3(moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture):  # noqa: F811
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {tmp_path / 'old-shapes'}\n{CONFIG}")  # a config's data is not the pipeline's
    assert main(put_args(tmp_path / "work", config)) == 0
    err = capsys.readouterr().err
    assert "pipeline shapes-loop created" in err and "old-shapes) is not part of a pipeline" in err
    sagemaker = boto3.client("sagemaker")
    stored = json.loads(sagemaker.describe_pipeline(PipelineName=PIPELINE)["PipelineDefinition"])
    saved = json.loads((tmp_path / "work" / "pipelines" / PIPELINE / "definition.json").read_text())
    limits = steps_of(stored)[TUNE]["Arguments"]["HyperParameterTuningJobConfig"]["ResourceLimits"]
    assert stored == saved and limits == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    assert sagemaker.describe_model_package_group(ModelPackageGroupName=ENDPOINT)["ModelPackageGroupName"] == ENDPOINT
    s3 = boto3.client("s3")
    assert s3.get_object(Bucket=BUCKET, Key=f"imgclf/pipelines/{PIPELINE}/{NO_MODEL}")["Body"].read()
    assert main(put_args(tmp_path / "work", config)) == 0
    assert "pipeline shapes-loop updated" in capsys.readouterr().err

    data = tmp_path / "shapes"
    for split in ("train", "valid", "test"):
        write_split(data / split, per_class=2)
    other_checkout = tmp_path / "empty-work"  # nothing of the pipeline on this machine: all is read from AWS
    start = ["--workdir", str(other_checkout), "pipeline", "start", PIPELINE, "--data", str(data), "--region", REGION]
    assert main(start) == 0
    printed = capsys.readouterr()
    assert f"against the champion of endpoint {ENDPOINT}" in printed.err
    (first,) = sagemaker.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]
    assert printed.out == f"{first['PipelineExecutionArn']}\n"  # the ARN alone on stdout
    version = execution_parameters(first)["DatasetVersion"]
    assert version.startswith(f"s3://{BUCKET}/imgclf/datasets/") and version.endswith(".manifest")
    entries = json.loads(s3.get_object(Bucket=BUCKET, Key=version.split("/", 3)[3])["Body"].read())[1:]
    assert sorted({entry.split("/")[0] for entry in entries}) == ["test", "train", "valid"]

    # The execution's Resolve step, the image's `resolve` against the same AWS: first cycle, no champion.
    no_model = f"s3://{BUCKET}/imgclf/pipelines/{PIPELINE}/{NO_MODEL}"
    assert resolve(tmp_path, first["PipelineExecutionArn"], version) == {
        "dataset_version": version, "dataset_type": "ManifestFile", "champion_model": no_model, "proceed": True,
        "reason": ""}  # fmt: skip

    # What the RegisterChampion step of that execution would have left: an Approved package, now the champion.
    champion = f"s3://{BUCKET}/imgclf/{PIPELINE}-tune-003/output/model.tar.gz"
    sagemaker.create_model_package(
        ModelPackageGroupName=ENDPOINT,
        ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": champion}],
                                "SupportedContentTypes": ["image/jpeg"],
                                "SupportedResponseMIMETypes": ["application/json"]},
    )  # fmt: skip
    assert main([*start, "--min-improvement", "0.02"]) == 0
    newest = sagemaker.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]
    assert len(newest) == 2
    second = next(e for e in newest if e["PipelineExecutionArn"] != first["PipelineExecutionArn"])
    parameters = execution_parameters(second)
    assert parameters["DatasetVersion"] == version  # the same data: stored once, the same version
    assert parameters["MinImprovement"] == "0.02"
    # A trigger's execution gets "newest": the store's newest manifest; the champion is the Approved package.
    resolved = resolve(tmp_path, second["PipelineExecutionArn"], "newest")
    assert resolved["dataset_version"] == version and resolved["champion_model"] == champion


def execution_parameters(summary: dict[str, Any]) -> dict[str, str]:
    listed = boto3.client("sagemaker").list_pipeline_parameters_for_execution(
        PipelineExecutionArn=summary["PipelineExecutionArn"]
    )
    return {p["Name"]: p["Value"] for p in listed["PipelineParameters"]}


def resolve(tmp_path: Path, execution: str, dataset: str) -> dict[str, Any]:
    """The image's `resolve` command, as the Resolve step runs it, against the AWS the environment points at."""
    output = tmp_path / "resolved.json"
    done = subprocess.run([str(Path(sys.executable).parent / "resolve"), "--execution", execution, "--dataset",
                           dataset, "--datasets", f"s3://{BUCKET}/imgclf/datasets/", "--model-package-group",
                           ENDPOINT, "--endpoint", ENDPOINT, "--no-model",
                           f"s3://{BUCKET}/imgclf/pipelines/{PIPELINE}/{NO_MODEL}", "--output", str(output)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(output.read_text())


def test_start_refuses_a_data_folder_without_its_splits_and_an_unknown_pipeline(
    moto_server: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    start = ["--workdir", str(tmp_path), "pipeline", "start", "no-such", "--data", str(tmp_path), "--region", REGION]
    assert main(start) == 1
    assert "no pipeline no-such in us-east-1: make it with `launcher pipeline put no-such" in capsys.readouterr().err
    config = tmp_path / "job.yaml"
    config.write_text(CONFIG)
    assert main(put_args(tmp_path / "work", config)) == 0
    write_split(tmp_path / "flat" / "train", per_class=1)
    start = ["--workdir", str(tmp_path), "pipeline", "start", PIPELINE, "--data", str(tmp_path / "flat")]
    assert main(start) == 1
    assert "has no test/ folder" in capsys.readouterr().err
    boto3.client("s3").put_object(Bucket=BUCKET, Key="flat/train/circle/a.jpg", Body=b"\xff\xd8")
    for data, reason in ((f"s3://{BUCKET}/flat/", "has no test/ split"),
                         (f"s3://{BUCKET}/imgclf/datasets/missing.manifest", "no dataset version at")):  # fmt: skip
        assert main(["--workdir", str(tmp_path), "pipeline", "start", PIPELINE, "--data", data]) == 1
        assert reason in capsys.readouterr().err
    assert not boto3.client("sagemaker").list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]


# -- status, stop and refusals against the Stubber -------------------------------------------------------------
@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StubbedAWS:
    return stub_aws(monkeypatch, tmp_path)


EXECUTION = f"{ARN}:pipeline/{PIPELINE}/execution/abc123def456"
STARTED = datetime.datetime(2026, 12, 8, 3, 0, tzinfo=datetime.UTC)


def expect_pipeline(aws: StubbedAWS, *executions: tuple[str, str]) -> None:
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("describe_pipeline", {"PipelineName": PIPELINE,
                                                 "PipelineDefinition": json.dumps(definition(plan()))})  # fmt: skip
    summaries = [{"PipelineExecutionArn": arn, "PipelineExecutionStatus": state, "StartTime": STARTED}
                 for arn, state in executions]  # fmt: skip
    sagemaker.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": summaries})


def test_status_shows_the_steps_the_best_trial_and_the_decision(aws: StubbedAWS, capsys: pytest.CaptureFixture):
    expect_pipeline(aws, (EXECUTION, "Succeeded"))
    sagemaker, s3 = aws.stub("sagemaker"), aws.stub("s3")
    sagemaker.add_response("describe_pipeline_execution", {"PipelineExecutionArn": EXECUTION,
                                                           "PipelineExecutionStatus": "Succeeded"})  # fmt: skip
    resolved = f"imgclf/pipelines/{PIPELINE}/abc123def456/resolved/resolved.json"
    s3.add_response("list_objects_v2", {"Contents": [{"Key": resolved}], "KeyCount": 1})
    inputs = {**RESOLVED, "champion_model": "s3://b/old/model.tar.gz"}
    s3.add_response("get_object", {"Body": _body(json.dumps(inputs).encode())})
    tuning = f"{ARN}:hyper-parameter-tuning-job/pipelines-abc-tune"
    package = f"{ARN}:model-package/{ENDPOINT}/2"
    sagemaker.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
        {"StepName": TUNE, "StepStatus": "Succeeded", "Metadata": {"TuningJob": {"Arn": tuning}}},
        {"StepName": EVALUATE, "StepStatus": "Succeeded",
         "Metadata": {"ProcessingJob": {"Arn": f"{ARN}:processing-job/pipelines-abc-evaluate"}}},
        {"StepName": DECIDE, "StepStatus": "Succeeded", "Metadata": {"Condition": {"Outcome": "True"}}},
        {"StepName": "RegisterChampion", "StepStatus": "Succeeded", "Metadata": {"RegisterModel": {"Arn": package}}},
    ]})  # fmt: skip
    sagemaker.add_response("describe_hyper_parameter_tuning_job", {
        "HyperParameterTuningJobName": "pipelines-abc-tune", "HyperParameterTuningJobArn": tuning,
        "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": "Completed", "CreationTime": STARTED,
        "TrainingJobStatusCounters": {}, "ObjectiveStatusCounters": {},
        "BestTrainingJob": {"TrainingJobName": "pipelines-abc-tune-003-1a2b", "TrainingJobArn": f"{ARN}:training-job/x",
                            "CreationTime": STARTED, "TrainingJobStatus": "Completed", "TunedHyperParameters": {},
                            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_loss", "Value": 0.4}},
    })  # fmt: skip
    key = f"imgclf/pipelines/{PIPELINE}/abc123def456/evaluation/evaluation.json"
    s3.add_response("list_objects_v2", {"Contents": [{"Key": key}], "KeyCount": 1})
    figures = {"accuracy": 0.9, "loss": 0.3, "images": 40}
    evaluation = {"models": {"challenger": figures, "champion": {**figures, "loss": 0.5, "accuracy": 0.8}},
                  "decision": {"promote": True, "reason": "loss 0.3000 < 0.5000", "min_improvement": 0.0}}  # fmt: skip
    s3.add_response("get_object", {"Body": _body(json.dumps(evaluation).encode())})
    assert main(["pipeline", "status", PIPELINE, "--region", STUBBED_REGION]) == 0
    out = capsys.readouterr().out
    assert f"retrain loop of endpoint {ENDPOINT}; 1 execution(s)" in out
    assert "best trial pipelines-abc-tune-003-1a2b: valid_loss 0.4" in out
    assert f"dataset {RESOLVED['dataset_version']}; champion s3://b/old/model.tar.gz" in out
    assert "promote: true" in out and package in out
    assert "decision: promote (loss 0.3000 < 0.5000)" in out and "champion: accuracy 0.8000" in out
    aws.assert_all_answered()


def _body(data: bytes) -> Any:
    import io

    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


def test_stop_stops_the_running_execution(aws: StubbedAWS, capsys: pytest.CaptureFixture):
    expect_pipeline(aws, (EXECUTION, "Executing"), (EXECUTION.replace("abc", "old"), "Succeeded"))
    aws.stub("sagemaker").add_response("stop_pipeline_execution", {"PipelineExecutionArn": EXECUTION})
    assert main(["pipeline", "stop", PIPELINE, "--region", STUBBED_REGION]) == 0
    assert [call["PipelineExecutionArn"] for call in aws.sent("StopPipelineExecution")] == [EXECUTION]
    aws.assert_all_answered()


def test_a_second_start_while_one_runs_is_refused_and_says_which(aws: StubbedAWS, capsys: pytest.CaptureFixture):
    expect_pipeline(aws, (EXECUTION, "Executing"))
    assert main(["pipeline", "start", PIPELINE, "--data", f"s3://{BUCKET}/shapes/", "--region", STUBBED_REGION]) == 1
    err = capsys.readouterr().err
    assert f"one execution at a time and {EXECUTION} is Executing" in err
    assert not aws.sent("StartPipelineExecution")


def test_a_refused_request_names_what_was_refused(aws: StubbedAWS, tmp_path: Path, capsys: pytest.CaptureFixture):
    config = tmp_path / "job.yaml"
    config.write_text(CONFIG)
    aws.stub("s3").add_response("put_object", {})
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("describe_model_package_group", {
        "ModelPackageGroupName": ENDPOINT, "ModelPackageGroupArn": f"{ARN}:model-package-group/{ENDPOINT}",
        "CreationTime": STARTED, "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})  # fmt: skip
    sagemaker.add_client_error("describe_pipeline", "ResourceNotFound", "no such pipeline")
    sagemaker.add_client_error("create_pipeline", "AccessDeniedException", "not authorized: sagemaker:CreatePipeline")
    assert main(put_args(tmp_path / "work", config, STUBBED_REGION)) == 1
    err = capsys.readouterr().err
    assert "SageMaker did not create pipeline shapes-loop" in err and "sagemaker:CreatePipeline" in err
    assert "Traceback" not in err


def test_a_failed_step_is_shown_with_its_reason_and_wait_says_the_execution_failed(
    aws: StubbedAWS, capsys: pytest.CaptureFixture
):
    """A failed tuning ends the execution before anything is registered or deployed; --wait follows it there."""
    from launcher.backends.sagemaker import Aws
    from launcher.loop import sagemaker_pipeline

    sagemaker = aws.stub("sagemaker")
    failed = {"StepName": TUNE, "StepStatus": "Failed", "FailureReason": "ClientError: image not found"}
    sagemaker.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
        {"StepName": TUNE, "StepStatus": "Executing"}]})  # fmt: skip
    sagemaker.add_response("describe_pipeline_execution", {"PipelineExecutionArn": EXECUTION,
                                                           "PipelineExecutionStatus": "Executing"})  # fmt: skip
    sagemaker.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [failed]})
    sagemaker.add_response("describe_pipeline_execution", {"PipelineExecutionArn": EXECUTION,
                                                           "PipelineExecutionStatus": "Failed",
                                                           "FailureReason": "Step failure: Tune"})  # fmt: skip
    with pytest.raises(LauncherError, match="ended Failed: Step failure: Tune"):
        sagemaker_pipeline.wait(Aws(STUBBED_REGION), EXECUTION)
    assert "Tune Executing" in capsys.readouterr().err

    expect_pipeline(aws, (EXECUTION, "Failed"))
    sagemaker.add_response("describe_pipeline_execution", {"PipelineExecutionArn": EXECUTION,
                                                           "PipelineExecutionStatus": "Failed",
                                                           "FailureReason": "Step failure: Tune"})  # fmt: skip
    aws.stub("s3").add_response("list_objects_v2", {"KeyCount": 0})  # no resolved inputs were written
    sagemaker.add_response("list_pipeline_parameters_for_execution", {"PipelineParameters": [
        {"Name": "DatasetVersion", "Value": "s3://b/given.manifest"}]})  # fmt: skip
    sagemaker.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [failed]})
    aws.stub("s3").add_response("list_objects_v2", {"KeyCount": 0})  # no evaluation was written
    assert main(["pipeline", "status", PIPELINE, "--region", STUBBED_REGION, "--execution", "abc123def456"]) == 0
    out = capsys.readouterr().out
    assert "execution abc123def456: Failed: Step failure: Tune" in out
    assert "ClientError: image not found" in out and "decision" not in out
    assert "dataset s3://b/given.manifest (as given; not resolved yet)" in out
    aws.assert_all_answered()


def test_an_execution_started_while_an_earlier_one_runs_skips_itself_and_says_why(tmp_path: Path):
    """The Resolve step's one-at-a-time rule, on ListPipelineExecutions answers from botocore's Stubber: the later
    of two running executions is skipped, the earlier proceeds, and a lone one proceeds."""
    from botocore.stub import Stubber

    from imgclf import resolve as resolving

    earlier, later = EXECUTION.replace("abc123", "aaa111"), EXECUTION
    summaries = [
        {"PipelineExecutionArn": later, "PipelineExecutionStatus": "Executing", "StartTime": STARTED},
        {"PipelineExecutionArn": earlier, "PipelineExecutionStatus": "Executing",
         "StartTime": STARTED - datetime.timedelta(minutes=5)},
        {"PipelineExecutionArn": EXECUTION.replace("abc123", "old000"), "PipelineExecutionStatus": "Succeeded",
         "StartTime": STARTED - datetime.timedelta(days=1)},
    ]  # fmt: skip
    session = boto3.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sagemaker, s3 = session.client("sagemaker"), session.client("s3")
    with Stubber(sagemaker) as stubber, Stubber(s3) as s3_stubber:
        stubber.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": summaries},
                             {"PipelineName": PIPELINE})  # fmt: skip
        assert resolving.earlier_running(sagemaker, earlier) is None  # the earlier one proceeds
        stubber.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": summaries[:1]})
        assert resolving.earlier_running(sagemaker, later) is None  # alone, it proceeds

        # The later one, through the whole step: its data and champion are resolved, and it is skipped.
        stubber.add_response("list_pipeline_executions", {"PipelineExecutionSummaries": summaries})
        s3_stubber.add_response("list_objects_v2", {"KeyCount": 0})  # no dataset version stored yet
        stubber.add_response("list_model_packages", {"ModelPackageSummaryList": []})
        stubber.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        resolved = resolving.resolve(Clients(sagemaker, s3), later, "newest", f"s3://{BUCKET}/imgclf/datasets/",
                                     ENDPOINT, ENDPOINT, "s3://b/no-model")  # fmt: skip
    assert resolved["proceed"] is False and resolved["champion_model"] == "s3://b/no-model"
    assert resolved["reason"] == f"skipped: execution {earlier} started earlier and still runs (one at a time)"


class Clients:
    """A boto3 session's `client`, handing out the given (stubbed) clients."""

    def __init__(self, sagemaker: Any, s3: Any):
        self.clients = {"sagemaker": sagemaker, "s3": s3}

    def client(self, name: str) -> Any:
        return self.clients[name]


def test_new_data_and_a_schedule_start_the_pipeline(moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture):  # noqa: F811
    """The rule's pattern matches the manifest the store writes last, not the images (checked through an SQS queue
    on a rule of its own with the same pattern: moto cannot deliver to a pipeline), and each trigger starts the
    pipeline on the newest version."""
    from launcher.backends.sagemaker.pipelines import new_data_pattern

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    config = tmp_path / "job.yaml"
    config.write_text(CONFIG)
    incoming = f"s3://{BUCKET}/incoming/"
    # The watching rule comes first: moto stops at the pipeline's rule, whose target it cannot deliver to.
    events, sqs = boto3.client("events"), boto3.client("sqs")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="new-versions")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="watch", EventPattern=json.dumps(new_data_pattern(BUCKET, "incoming/")))
    events.put_targets(Rule="watch", Targets=[{"Id": "queue", "Arn": queue_arn}])
    put = [*put_args(tmp_path / "work", config), "--on-new-data", incoming, "--schedule", "rate(7 days)"]
    assert main(put) == 0
    err = capsys.readouterr().err
    assert f"bucket {BUCKET} now sends its events to EventBridge" in err and "each new dataset version under" in err
    s3 = boto3.client("s3")
    # (moto does not answer the EventBridgeConfiguration back; it delivers the bucket's events below only with it.)
    pipeline_arn = boto3.client("sagemaker").describe_pipeline(PipelineName=PIPELINE)["PipelineArn"]
    (target,) = events.list_targets_by_rule(Rule=f"imgclf-{PIPELINE}-new-data")["Targets"]
    parameters = [{"Name": "DatasetVersion", "Value": "newest"}]
    assert target["Arn"] == pipeline_arn and target["RoleArn"] == ROLE
    assert target["SageMakerPipelineParameters"]["PipelineParameterList"] == parameters
    schedule = boto3.client("scheduler").get_schedule(Name=f"imgclf-{PIPELINE}")
    assert schedule["ScheduleExpression"] == "rate(7 days)" and schedule["Target"]["Arn"] == pipeline_arn
    assert schedule["Target"]["SageMakerPipelineParameters"]["PipelineParameterList"] == parameters
    assert main(put) == 0  # put again: updates the pipeline, the rule and the schedule
    assert "updated" in capsys.readouterr().err

    data = tmp_path / "shapes"
    for split in ("train", "valid", "test"):
        write_split(data / split, per_class=1)
    start = ["--workdir", str(tmp_path / "work"), "pipeline", "start", PIPELINE, "--data", str(data)]
    assert main([*start, "--region", REGION]) == 0
    version = capsys.readouterr().out.strip()
    s3.put_object(Bucket=BUCKET, Key="incoming/not-a-version.jpg", Body=b"\xff\xd8")  # no match: not a manifest
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    keys = [json.loads(m["Body"])["detail"]["object"]["key"] for m in received]
    assert len(keys) == 1 and keys[0].startswith("incoming/") and keys[0].endswith(".manifest")
    assert version  # the execution started by `start` names that version too
    (execution,) = boto3.client("sagemaker").list_pipeline_executions(PipelineName=PIPELINE)[
        "PipelineExecutionSummaries"]  # fmt: skip
    assert execution_parameters(execution)["DatasetVersion"] == f"s3://{BUCKET}/{keys[0]}"


def test_a_skipped_execution_says_why_and_stop_says_when_nothing_runs(aws: StubbedAWS, capsys: pytest.CaptureFixture):
    expect_pipeline(aws, (EXECUTION, "Failed"))
    sagemaker, s3 = aws.stub("sagemaker"), aws.stub("s3")
    reason = "skipped: execution arn:...:execution/aaa111 started earlier and still runs (one at a time)"
    sagemaker.add_response("describe_pipeline_execution", {"PipelineExecutionArn": EXECUTION,
                                                           "PipelineExecutionStatus": "Failed",
                                                           "FailureReason": f"Step failure: {reason}"})  # fmt: skip
    key = f"imgclf/pipelines/{PIPELINE}/abc123def456/resolved/resolved.json"
    s3.add_response("list_objects_v2", {"Contents": [{"Key": key}], "KeyCount": 1})
    s3.add_response(
        "get_object", {"Body": _body(json.dumps({**RESOLVED, "proceed": False, "reason": reason}).encode())}
    )
    sagemaker.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
        {"StepName": "Skip", "StepStatus": "Failed", "FailureReason": reason},
        {"StepName": "Proceed", "StepStatus": "Succeeded", "Metadata": {"Condition": {"Outcome": "False"}}},
        {"StepName": "Resolve", "StepStatus": "Succeeded"}]})  # fmt: skip
    s3.add_response("list_objects_v2", {"KeyCount": 0})
    assert main(["pipeline", "status", PIPELINE, "--region", STUBBED_REGION]) == 0
    out = capsys.readouterr().out
    assert f"Failed: Step failure: {reason}" in out and "proceed: false" in out

    expect_pipeline(aws, (EXECUTION, "Succeeded"))
    assert main(["pipeline", "stop", PIPELINE, "--region", STUBBED_REGION]) == 0
    assert "has no running execution" in capsys.readouterr().err
    assert not aws.sent("StopPipelineExecution")
    aws.assert_all_answered()


def test_lineage_from_an_empty_work_folder_reads_the_registry(
    moto_server: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
):
    """What the endpoint serves, the model package of that model and what it records, and the group's history: all
    from AWS, in a work folder that has never seen the endpoint."""
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=ENDPOINT)

    def register(model: str, status: str, dataset: str) -> None:
        sagemaker.create_model_package(
            ModelPackageGroupName=ENDPOINT, ModelApprovalStatus=status,
            InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": model}],
                                    "SupportedContentTypes": ["image/jpeg"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                          "S3Uri": f"s3://{BUCKET}/e/{status}.json"}}},
            CustomerMetadataProperties={"training_job": model.split("/")[4], "dataset_version": dataset,
                                        "pipeline": PIPELINE, "code_revision": "abc123"},
        )  # fmt: skip

    served = f"s3://{BUCKET}/imgclf/loop-tune-002/output/model.tar.gz"
    register(f"s3://{BUCKET}/imgclf/loop-tune-001/output/model.tar.gz", "Approved", "s3://b/v1.manifest")
    register(served, "Approved", "s3://b/v2.manifest")
    register(f"s3://{BUCKET}/imgclf/loop-tune-003/output/model.tar.gz", "Rejected", "s3://b/v3.manifest")
    sagemaker.create_model(ModelName="m2", ExecutionRoleArn=ROLE,
                           PrimaryContainer={"Image": IMAGE, "ModelDataUrl": served})  # fmt: skip
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "m2",
        "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.xlarge",
    }
    sagemaker.create_endpoint_config(EndpointConfigName="c2", ProductionVariants=[variant])
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="c2")

    empty = ["--workdir", str(tmp_path / "empty"), "lineage", ENDPOINT]
    assert main(empty) == 1  # without a region, this work folder's records only
    assert main([*empty, "--region", REGION, "--json"]) == 0
    chain = dict((step, facts) for step, facts in ((s["step"], s) for s in json.loads(capsys.readouterr().out)))
    assert chain["endpoint"]["model_data"] == served and chain["endpoint"]["instance_type"] == "ml.m5.xlarge"
    assert [line.split()[1] for line in chain["endpoint"]["served"]] == ["Approved", "Approved"]
    assert "loop-tune-003" in chain["endpoint"]["kept out"][0]
    assert chain["model package"]["evaluation"] == f"s3://{BUCKET}/e/Approved.json"
    assert chain["training job"]["name"] == "loop-tune-002" and chain["dataset"]["version"] == "s3://b/v2.manifest"
    assert main([*empty, "--region", REGION]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"endpoint:\n  name: {ENDPOINT}\n  status: InService") and "model package:" in out
    assert "dataset:\n        version: s3://b/v2.manifest" in out


def expect_registry(aws: StubbedAWS, served: str, packages: list[tuple[int, str, str]]) -> None:
    """DescribeEndpoint, its config and model (serving `served`), and the group's packages (version, status,
    model), newest first, as `launcher rollback` reads them."""
    sagemaker = aws.stub("sagemaker")
    sagemaker.add_response("describe_endpoint", {
        "EndpointName": ENDPOINT, "EndpointArn": f"{ARN}:endpoint/{ENDPOINT}", "EndpointConfigName": "c3",
        "EndpointStatus": "InService", "CreationTime": STARTED, "LastModifiedTime": STARTED})  # fmt: skip
    sagemaker.add_response("describe_endpoint_config", {
        "EndpointConfigName": "c3", "EndpointConfigArn": f"{ARN}:endpoint-config/c3", "CreationTime": STARTED,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m3", "InitialInstanceCount": 1,
                                "InstanceType": "ml.m5.xlarge"}]})  # fmt: skip
    sagemaker.add_response("describe_model", {
        "ModelName": "m3", "ModelArn": f"{ARN}:model/m3", "CreationTime": STARTED, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": served,
                             "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}}})  # fmt: skip
    arns = [f"{ARN}:model-package/{ENDPOINT}/{version}" for version, _, _ in packages]
    summaries = [{"ModelPackageArn": arn, "CreationTime": STARTED, "ModelPackageStatus": "Completed"} for arn in arns]
    sagemaker.add_response("list_model_packages", {"ModelPackageSummaryList": summaries})
    for arn, (version, status, model) in zip(arns, packages, strict=True):
        sagemaker.add_response("describe_model_package", {
            "ModelPackageName": f"{ENDPOINT}", "ModelPackageArn": arn, "CreationTime": STARTED,
            "ModelPackageStatus": "Completed", "ModelApprovalStatus": status, "ModelPackageVersion": version,
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": model}],
                                       "SupportedContentTypes": ["image/jpeg"],
                                       "SupportedResponseMIMETypes": ["application/json"]}})  # fmt: skip


def test_rollback_from_an_empty_work_folder_goes_through_the_registry(aws: StubbedAWS, tmp_path: Path, capsys):
    """The group's previous Approved model is served again, blue/green with the alarm, and only then is the current
    one marked Rejected; a champion the endpoint does not serve, or a failed update, changes nothing."""
    models = {version: f"s3://{BUCKET}/imgclf/loop-tune-00{version}/output/model.tar.gz" for version in (1, 2, 3)}
    packages = [(3, "Approved", models[3]), (2, "Rejected", models[2]), (1, "Approved", models[1])]
    rollback = ["--workdir", str(tmp_path / "empty"), "rollback", ENDPOINT, "--region", STUBBED_REGION,
                "--rollback-alarm", "ep-5xx"]  # fmt: skip
    expect_registry(aws, models[3], packages)
    sagemaker = aws.stub("sagemaker")
    name = f"{ENDPOINT}-3-to-1"
    sagemaker.add_response("create_model", {"ModelArn": f"{ARN}:model/{name}"})
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": f"{ARN}:endpoint-config/{name}"})
    sagemaker.add_response("update_endpoint", {"EndpointArn": f"{ARN}:endpoint/{ENDPOINT}"})
    for status in ("Updating", "InService"):
        sagemaker.add_response("describe_endpoint", {
            "EndpointName": ENDPOINT, "EndpointArn": f"{ARN}:endpoint/{ENDPOINT}", "EndpointConfigName": name,
            "EndpointStatus": status, "CreationTime": STARTED, "LastModifiedTime": STARTED})  # fmt: skip
    sagemaker.add_response("update_model_package", {"ModelPackageArn": f"{ARN}:model-package/{ENDPOINT}/3"})
    assert main(rollback) == 0
    (model,) = aws.sent("CreateModel")
    assert model["ModelName"] == name and model["PrimaryContainer"]["ModelDataUrl"] == models[1]
    assert model["ExecutionRoleArn"] == ROLE and model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}  # fmt: skip
    (update,) = aws.sent("UpdateEndpoint")
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "ep-5xx"}]}
    (rejected,) = aws.sent("UpdateModelPackage")
    assert rejected["ModelPackageArn"].endswith("/3") and rejected["ModelApprovalStatus"] == "Rejected"
    assert "serves" in rejected["ApprovalDescription"] and "is now Rejected" in capsys.readouterr().err
    aws.assert_all_answered()

    # The endpoint serves a model that is not the group's latest champion (deployed by hand): refused, nothing sent.
    expect_registry(aws, "s3://elsewhere/model.tar.gz", packages)
    assert main(rollback) == 1
    assert "roll it back from the work folder that deployed it" in capsys.readouterr().err
    assert len(aws.sent("CreateModel")) == 1

    # The update fails (an alarm fired while baking): the registry stays as it was.
    expect_registry(aws, models[3], packages)
    sagemaker.add_response("create_model", {"ModelArn": f"{ARN}:model/{name}"})
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": f"{ARN}:endpoint-config/{name}"})
    sagemaker.add_response("update_endpoint", {"EndpointArn": f"{ARN}:endpoint/{ENDPOINT}"})
    sagemaker.add_response("describe_endpoint", {
        "EndpointName": ENDPOINT, "EndpointArn": f"{ARN}:endpoint/{ENDPOINT}", "EndpointConfigName": "c3",
        "EndpointStatus": "InService", "CreationTime": STARTED, "LastModifiedTime": STARTED,
        "FailureReason": "alarm ep-5xx fired"})  # fmt: skip
    assert main(rollback) == 1
    assert "was not updated" in capsys.readouterr().err and len(aws.sent("UpdateModelPackage")) == 1
    aws.assert_all_answered()
