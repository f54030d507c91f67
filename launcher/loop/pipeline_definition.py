"""The retrain loop as a SageMaker Pipeline: its definition JSON, built from the same specs and requests as
`launcher run --backend sagemaker` sends, so that no one's machine has to stay up for a cycle.

Steps: **Resolve** (a Processing job of the image: `resolve` picks the execution's dataset version — the given one,
else the store's newest — and its champion — the group's latest Approved model, else the endpoint's — and skips the
execution while an earlier one runs) → **Proceed** (a condition; **Skip** fails the execution with the reason) →
**Tune** (the config's tuning job; its best trial's model is the challenger, not trained again) → **Evaluate** (the
image's `evaluate` scores the challenger and the champion on the test split of the same dataset version and writes
the decision of `imgclf_contract.judging.Rule`, the rule `launcher promote` uses, as the property file `Evaluation`)
→ **Decide** (promote if `decision.promote` is true) → **RegisterChampion** (an Approved model package in the group
named after the endpoint), then **Model**, **EndpointConfig** and **Deploy** (the endpoint created, or updated to
the new model: SageMaker starts the new fleet and shifts the traffic once it is healthy, with no availability
loss), or **RegisterRejected** (the same evidence, Rejected). A dataset version is a ManifestFile of the
content-addressed store, never rewritten: a version stored while an execution runs changes nothing it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imgclf_contract.judging import MODEL_ARCHIVE, NEWEST, NO_MODEL
from launcher.backends.sagemaker import (
    VOLUME_SIZE_GB,
    Hosting,
    SageMakerOptions,
    check_training_spec,
    check_tuning_spec,
    endpoint_ami_version,
    endpoint_config_request,
    model_request,
    training_request,
    tuning_request,
)
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.transform import CONTENT_TYPES
from launcher.tuning import TuningSpec

VERSION = "2020-12-01"  # the only pipeline definition version SageMaker takes
ENTRYPOINT = "/usr/local/bin/imgclf-entrypoint"  # the image's (docker/Dockerfile)
TRAINING_CHANNEL = "training"  # the dataset version's channel: train/, valid/, test/ under it
PROCESSING = "/opt/ml/processing"
EVALUATION_FILE = "evaluation.json"
RESOLVED_FILE = "resolved.json"
RESOLVE_INSTANCE_TYPE = "ml.t3.medium"  # a few AWS calls
EVALUATION_MAX_RUN = 3600
JSON = "application/json"
RESOLVE, PROCEED, SKIP = "Resolve", "Proceed", "Skip"
TUNE, EVALUATE, DECIDE, REGISTER, REJECT = "Tune", "Evaluate", "Decide", "RegisterChampion", "RegisterRejected"
MODEL, ENDPOINT_CONFIG, DEPLOY = "Model", "EndpointConfig", "Deploy"
NAME_ROOM = 63 - 13  # SageMaker's names take 63 characters: the endpoint's, "-" and the execution's 12-character ID


def get(path: str) -> dict[str, str]:
    """A value SageMaker fills in when the execution runs: `Parameters.X`, `Steps.S.Property`, `Execution.X`."""
    return {"Get": path}


def join(*values: Any, on: str = "") -> dict[str, Any]:
    return {"Std:Join": {"On": on, "Values": list(values)}}


def json_get(step: str, property_file: str, path: str) -> dict[str, Any]:
    """A value of a step's JSON property file."""
    return {"Std:JsonGet": {"PropertyFile": get(f"Steps.{step}.PropertyFiles.{property_file}"), "Path": path}}


@dataclass(frozen=True)
class PipelinePlan:
    """One endpoint's retrain loop on SageMaker."""

    name: str  # the pipeline's
    endpoint: str  # the endpoint it challenges and updates; its model package group has its name
    tuning: TuningSpec  # the trials' job (image, instance, fixed hyperparameters, options) and the search
    role: str  # the role the pipeline and its jobs run as
    output_path: str  # s3://bucket/prefix: <output>/<trial>/output/model.tar.gz, <output>/pipelines/<name>/...
    datasets: str  # the S3 prefix under which the data store writes dataset versions (ManifestFiles)
    evaluation_instance_type: str
    endpoint_instance_type: str
    min_improvement: float = 0.0
    code_revision: str = "unknown"
    inference_ami_version: str = "auto"  # as `launcher deploy --inference-ami-version`
    serving_environment: dict[str, str] = field(default_factory=dict)  # the model server's variables

    @property
    def folder(self) -> str:
        """The pipeline's own S3 prefix: its NO_MODEL file and each execution's resolved inputs and evaluation."""
        return f"{self.output_path}/pipelines/{self.name}"

    @property
    def no_model(self) -> str:
        return f"{self.folder}/{NO_MODEL}"


def parameters(plan: PipelinePlan) -> list[dict[str, Any]]:
    """What each execution may set (`launcher pipeline start` sets the data; a trigger leaves it NEWEST)."""
    training = plan.tuning.training

    def string(name: str, default: str) -> dict[str, Any]:
        return {"Name": name, "Type": "String", "DefaultValue": default}

    return [
        string("DatasetVersion", NEWEST),
        {"Name": "MinImprovement", "Type": "Float", "DefaultValue": plan.min_improvement},
        string("TrainingInstanceType", training.instance_type),
        {"Name": "TrainingInstanceCount", "Type": "Integer", "DefaultValue": training.instance_count},
        string("EvaluationInstanceType", plan.evaluation_instance_type),
    ]


def resolved(path: str) -> dict[str, Any]:
    """A value the Resolve step decided."""
    return json_get(RESOLVE, "Resolved", path)


def execution_folder(plan: PipelinePlan, name: str) -> dict[str, Any]:
    """Where this execution's step `name` writes its file."""
    return join(plan.folder, get("Execution.PipelineExecutionId"), name, on="/")


def processing_request(
    plan: PipelinePlan, command: str, arguments: list[Any], output: str, inputs: list[dict[str, Any]], instance: Any
) -> dict[str, Any]:
    """CreateProcessingJob running the image's `command`, writing its file to `execution_folder(output)`."""
    local = f"{PROCESSING}/{output}"
    destination = {"S3Uri": execution_folder(plan, output), "LocalPath": local, "S3UploadMode": "EndOfJob"}
    request = {
        "ProcessingResources": {
            "ClusterConfig": {"InstanceType": instance, "InstanceCount": 1, "VolumeSizeInGB": VOLUME_SIZE_GB}
        },
        "AppSpecification": {
            "ImageUri": plan.tuning.training.image,
            "ContainerEntrypoint": [ENTRYPOINT, command],
            "ContainerArguments": arguments,
        },
        "RoleArn": plan.role,
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": output, "S3Output": destination}]},
        "StoppingCondition": {"MaxRuntimeInSeconds": EVALUATION_MAX_RUN},
    }
    if inputs:
        request["ProcessingInputs"] = inputs
    return request


def resolve_step(plan: PipelinePlan) -> dict[str, Any]:
    """The image's `resolve`: this execution's dataset version and champion, and whether it runs."""
    arguments = [
        "--execution", get("Execution.PipelineExecutionArn"),
        "--dataset", get("Parameters.DatasetVersion"),
        "--datasets", plan.datasets,
        "--model-package-group", plan.endpoint,
        "--endpoint", plan.endpoint,
        "--no-model", plan.no_model,
        "--output", f"{PROCESSING}/resolved/{RESOLVED_FILE}",
    ]  # fmt: skip
    return {
        "Name": RESOLVE,
        "Type": "Processing",
        "Arguments": processing_request(plan, "resolve", arguments, "resolved", [], RESOLVE_INSTANCE_TYPE),
        "PropertyFiles": [{"PropertyFileName": "Resolved", "OutputName": "resolved", "FilePath": RESOLVED_FILE}],
    }


def data_channel() -> dict[str, Any]:
    source = {
        "S3DataType": resolved("dataset_type"),
        "S3Uri": resolved("dataset_version"),
        "S3DataDistributionType": "FullyReplicated",
    }
    return {"ChannelName": TRAINING_CHANNEL, "DataSource": {"S3DataSource": source}}


def tune_step(plan: PipelinePlan) -> dict[str, Any]:
    """The tuning job `launcher tune --backend sagemaker` would send, its data and trial instances parameters."""
    spec = plan.tuning
    check_training_spec(spec.training)
    hyperband_max_epochs = check_tuning_spec(spec)
    options = SageMakerOptions.of(spec.training.options)
    others = {name: uri for name, uri in spec.training.channels.items() if name != TRAINING_CHANNEL}
    local = [name for name, uri in others.items() if not uri.startswith(S3_SCHEME)]
    if local:
        raise LauncherError(
            f"a pipeline reads its channels from S3: give channel(s) {', '.join(local)} as s3:// URIs (the dataset "
            f"itself is the {TRAINING_CHANNEL!r} channel, given to `launcher pipeline start --data`)"
        )
    spot = None
    if options.spot:
        spot = {"max_wait": options.max_wait or 2 * options.max_run, "checkpoint_s3_uri": f"{plan.folder}/checkpoints"}
    name, role = spec.name, plan.role
    training = training_request(spec.training, name, role, plan.output_path, others, options.max_run, spot)
    training["InputDataConfig"] = [data_channel(), *training["InputDataConfig"]]
    training["ResourceConfig"].update(
        InstanceType=get("Parameters.TrainingInstanceType"), InstanceCount=get("Parameters.TrainingInstanceCount")
    )
    request = tuning_request(training, spec, hyperband_max_epochs)
    del request["HyperParameterTuningJobName"]  # SageMaker names each execution's
    return {"Name": TUNE, "Type": "Tuning", "Arguments": request}


def challenger_model(plan: PipelinePlan) -> dict[str, Any]:
    """The best trial's model.tar.gz."""
    return join(plan.output_path, get(f"Steps.{TUNE}.BestTrainingJob.TrainingJobName"), "output", MODEL_ARCHIVE, on="/")


def processing_input(name: str, uri: Any, data_type: Any = "S3Prefix") -> dict[str, Any]:
    source = {
        "S3Uri": uri,
        "LocalPath": f"{PROCESSING}/{name}",
        "S3DataType": data_type,
        "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated",
    }
    return {"InputName": name, "S3Input": source}


def evaluate_step(plan: PipelinePlan) -> dict[str, Any]:
    """The image's `evaluate` as a Processing job: both models on the dataset version's test split."""
    arguments = ["--data", f"{PROCESSING}/data"]
    for role in ("challenger", "champion"):
        arguments += ["--model", f"{role}={PROCESSING}/{role}"]
    arguments += ["--min-improvement", join(get("Parameters.MinImprovement"))]
    arguments += ["--output", f"{PROCESSING}/evaluation/{EVALUATION_FILE}"]
    inputs = [
        processing_input("data", resolved("dataset_version"), resolved("dataset_type")),
        processing_input("challenger", challenger_model(plan)),
        processing_input("champion", resolved("champion_model")),
    ]
    instance = get("Parameters.EvaluationInstanceType")
    return {
        "Name": EVALUATE,
        "Type": "Processing",
        "Arguments": processing_request(plan, "evaluate", arguments, "evaluation", inputs, instance),
        "PropertyFiles": [{"PropertyFileName": "Evaluation", "OutputName": "evaluation", "FilePath": EVALUATION_FILE}],
    }


def register_step(plan: PipelinePlan, name: str, status: str) -> dict[str, Any]:
    """The challenger as a model package of the endpoint's group, with the evaluation as its model metrics and where
    it came from as its metadata."""
    image = plan.tuning.training.image
    request = {
        "ModelPackageGroupName": plan.endpoint,
        "ModelPackageDescription": join("pipeline ", plan.name, ", execution ", get("Execution.PipelineExecutionId")),
        "ModelApprovalStatus": status,
        "InferenceSpecification": {
            "Containers": [{"Image": image, "ModelDataUrl": challenger_model(plan)}],
            "SupportedContentTypes": sorted(set(CONTENT_TYPES.values())),
            "SupportedResponseMIMETypes": [JSON],
            "SupportedRealtimeInferenceInstanceTypes": [plan.endpoint_instance_type],
        },
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {
                    "ContentType": JSON,
                    "S3Uri": join(execution_folder(plan, "evaluation"), EVALUATION_FILE, on="/"),
                }
            }
        },
        "CustomerMetadataProperties": {
            "dataset_version": resolved("dataset_version"),
            "tuning_job": get(f"Steps.{TUNE}.HyperParameterTuningJobName"),
            "training_job": get(f"Steps.{TUNE}.BestTrainingJob.TrainingJobName"),
            "champion_model": resolved("champion_model"),
            "code_revision": plan.code_revision,
            "pipeline": plan.name,
        },
    }
    return {"Name": name, "Type": "RegisterModel", "Arguments": request}


def deploy_steps(plan: PipelinePlan) -> list[dict[str, Any]]:
    """The challenger behind the endpoint: a model and an endpoint config named after the endpoint and the
    execution, then the endpoint created or updated to that config. SageMaker's Endpoint step takes no
    DeploymentConfig: the update is SageMaker's own (the new fleet takes the traffic once healthy, the old one is
    then removed), without the rollback alarms `launcher promote --rollback-alarm` sets."""
    name = join(plan.endpoint[:NAME_ROOM], get("Execution.PipelineExecutionId"), on="-")
    hosting = Hosting(
        image=plan.tuning.training.image,
        model_data=challenger_model(plan),  # a value SageMaker fills in, where Hosting takes a URI
        role=plan.role,
        env=plan.serving_environment,
        instance_type=plan.endpoint_instance_type,
        ami_version=endpoint_ami_version(plan.endpoint_instance_type, plan.inference_ami_version),
    )
    config = endpoint_config_request("", hosting)
    config["EndpointConfigName"] = name
    config["ProductionVariants"][0]["ModelName"] = get(f"Steps.{MODEL}.ModelName")
    return [
        {"Name": MODEL, "Type": "Model", "Arguments": {**model_request("", hosting), "ModelName": name},
         "DependsOn": [REGISTER]},
        {"Name": ENDPOINT_CONFIG, "Type": "EndpointConfig", "Arguments": config},
        {"Name": DEPLOY, "Type": "Endpoint", "Arguments": {
            "EndpointName": plan.endpoint, "EndpointConfigName": get(f"Steps.{ENDPOINT_CONFIG}.EndpointConfigName")}},
    ]  # fmt: skip


def decide_step(plan: PipelinePlan) -> dict[str, Any]:
    promote = {"Type": "Equals", "LeftValue": json_get(EVALUATE, "Evaluation", "decision.promote"), "RightValue": True}
    return {
        "Name": DECIDE,
        "Type": "Condition",
        "Arguments": {
            "Conditions": [promote],
            "IfSteps": [register_step(plan, REGISTER, "Approved"), *deploy_steps(plan)],
            "ElseSteps": [register_step(plan, REJECT, "Rejected")],
        },
    }


def proceed_step(plan: PipelinePlan) -> dict[str, Any]:
    """The loop, unless Resolve said to skip this execution: then Skip ends it, Failed, with the reason."""
    proceed = {"Type": "Equals", "LeftValue": resolved("proceed"), "RightValue": True}
    skip = {"Name": SKIP, "Type": "Fail", "Arguments": {"ErrorMessage": resolved("reason")}}
    return {
        "Name": PROCEED,
        "Type": "Condition",
        "Arguments": {
            "Conditions": [proceed],
            "IfSteps": [tune_step(plan), evaluate_step(plan), decide_step(plan)],
            "ElseSteps": [skip],
        },
    }


def definition(plan: PipelinePlan) -> dict[str, Any]:
    """The pipeline definition (CreatePipeline's PipelineDefinition, as JSON)."""
    return {
        "Version": VERSION,
        "Metadata": {},
        "Parameters": parameters(plan),
        "PipelineExperimentConfig": {
            "ExperimentName": get("Execution.PipelineName"),
            "TrialName": get("Execution.PipelineExecutionId"),
        },
        "Steps": [resolve_step(plan), proceed_step(plan)],
    }


@dataclass(frozen=True)
class PutPipeline:
    """What a definition `definition()` built says of itself: the endpoint it serves and its S3 folder."""

    endpoint: str
    folder: str
    datasets: str  # the S3 prefix its executions take their newest dataset version from

    @property
    def no_model(self) -> str:
        return f"{self.folder}/{NO_MODEL}"

    @classmethod
    def of(cls, name: str, definition: dict[str, Any]) -> PutPipeline:
        try:
            steps = {step["Name"]: step for step in every_step(definition["Steps"])}
            endpoint = steps[REGISTER]["Arguments"]["ModelPackageGroupName"]
            arguments = steps[RESOLVE]["Arguments"]["AppSpecification"]["ContainerArguments"]
            no_model = arguments[arguments.index("--no-model") + 1]
            datasets = arguments[arguments.index("--datasets") + 1]
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise LauncherError(
                f"pipeline {name} was not made by `launcher pipeline put` (its definition has no {err}): put it again"
            ) from None
        return cls(endpoint=endpoint, folder=no_model.removesuffix(f"/{NO_MODEL}"), datasets=datasets)


def every_step(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps in order, each condition's branches after it."""
    found = []
    for step in steps:
        found.append(step)
        if step["Type"] == "Condition":
            found += every_step(step["Arguments"].get("IfSteps", []) + step["Arguments"].get("ElseSteps", []))
    return found
