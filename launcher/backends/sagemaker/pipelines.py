"""A SageMaker Pipeline's requests: put its definition and its endpoint's model package group, start, follow, list
and stop its executions, read the files its steps wrote."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from launcher.backends.sagemaker.api import (
    Aws,
    Hosting,
    aws_errors,
    describe_endpoint,
    describe_tuning_job,
    error_code,
    get_object,
    poll,
    put_object,
    s3_keys,
    update_endpoint,
)
from launcher.backends.sagemaker.backend import BLUE_GREEN_BAKING_SECONDS, ENDPOINT_BUSY
from launcher.contract import MANIFEST_SUFFIX, S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say

RUNNING = ("Executing", "Stopping")
MISSING = ("ResourceNotFound", "ValidationException")  # what Describe* answer for a name that does not exist


def describe_pipeline(aws: Aws, name: str) -> dict[str, Any] | None:
    """DescribePipeline, or None where there is no pipeline of that name."""
    from botocore.exceptions import ClientError

    try:
        return aws.sagemaker.describe_pipeline(PipelineName=name)
    except ClientError as err:
        if error_code(err) in MISSING:
            return None
        with aws_errors(f"describing pipeline {name}"):
            raise


def put_pipeline(aws: Aws, name: str, definition: dict[str, Any], role: str, description: str) -> tuple[str, bool]:
    """Create the pipeline, or update it to `definition`; its ARN and whether it was created."""
    request = {
        "PipelineName": name,
        "PipelineDefinition": json.dumps(definition),
        "PipelineDescription": description,
        "RoleArn": role,
    }
    if describe_pipeline(aws, name) is None:
        with aws_errors(f"SageMaker did not create pipeline {name}"):
            return aws.sagemaker.create_pipeline(**request, ClientRequestToken=str(uuid.uuid4()))["PipelineArn"], True
    with aws_errors(f"SageMaker did not update pipeline {name}"):
        return aws.sagemaker.update_pipeline(**request)["PipelineArn"], False


def ensure_model_package_group(aws: Aws, group: str, description: str) -> bool:
    """The model package group, created where it does not exist; whether it was."""
    from botocore.exceptions import ClientError

    try:
        aws.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
        return False
    except ClientError as err:
        if error_code(err) not in MISSING:
            with aws_errors(f"describing model package group {group}"):
                raise
    with aws_errors(f"SageMaker did not create model package group {group}"):
        aws.sagemaker.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=description)
    return True


def executions(aws: Aws, name: str) -> list[dict[str, Any]]:
    """The pipeline's executions, newest first (ListPipelineExecutions, all pages)."""
    with aws_errors(f"listing the executions of pipeline {name}"):
        pages = aws.sagemaker.get_paginator("list_pipeline_executions").paginate(
            PipelineName=name, SortBy="CreationTime", SortOrder="Descending"
        )
        return [summary for page in pages for summary in page["PipelineExecutionSummaries"]]


def start_execution(aws: Aws, name: str, parameters: dict[str, str], description: str) -> str:
    """StartPipelineExecution with `parameters`; its ARN, without waiting."""
    with aws_errors(f"SageMaker did not start pipeline {name}"):
        return aws.sagemaker.start_pipeline_execution(
            PipelineName=name,
            PipelineParameters=[{"Name": key, "Value": value} for key, value in parameters.items()],
            PipelineExecutionDescription=description,
            ClientRequestToken=str(uuid.uuid4()),
        )["PipelineExecutionArn"]


def describe_execution(aws: Aws, arn: str) -> dict[str, Any]:
    with aws_errors(f"describing pipeline execution {arn}"):
        return aws.sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)


def execution_steps(aws: Aws, arn: str) -> list[dict[str, Any]]:
    """An execution's steps in the order they started (ListPipelineExecutionSteps, all pages)."""
    with aws_errors(f"listing the steps of pipeline execution {arn}"):
        pages = aws.sagemaker.get_paginator("list_pipeline_execution_steps").paginate(
            PipelineExecutionArn=arn, SortOrder="Ascending"
        )
        return [step for page in pages for step in page["PipelineExecutionSteps"]]


def execution_parameters(aws: Aws, arn: str) -> dict[str, str]:
    """The parameters an execution was started with."""
    with aws_errors(f"listing the parameters of pipeline execution {arn}"):
        pages = aws.sagemaker.get_paginator("list_pipeline_parameters_for_execution").paginate(PipelineExecutionArn=arn)
        return {p["Name"]: p["Value"] for page in pages for p in page["PipelineParameters"]}


def stop_execution(aws: Aws, arn: str) -> None:
    with aws_errors(f"SageMaker did not stop pipeline execution {arn}"):
        aws.sagemaker.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=str(uuid.uuid4()))


def follow_execution(aws: Aws, arn: str, changed: Callable[[dict[str, Any], list[dict[str, Any]]], None]) -> dict:
    """Poll the execution until it ends; `changed` sees its description and steps whenever a status changes."""
    last: list[dict[str, Any]] = []

    def describe() -> dict[str, Any]:
        last[:] = execution_steps(aws, arn)
        return describe_execution(aws, arn)

    def state(description: dict[str, Any]) -> str:
        return description["PipelineExecutionStatus"] + "".join(f"|{s['StepName']}:{s['StepStatus']}" for s in last)

    return poll(describe, lambda d: d["PipelineExecutionStatus"] in RUNNING, state, lambda d: changed(d, last))


def best_trial(aws: Aws, tuning_job_arn: str) -> dict[str, Any]:
    """The tuning job's BestTrainingJob ({} before it has one)."""
    return describe_tuning_job(aws, tuning_job_arn.rsplit("/", 1)[-1]).get("BestTrainingJob", {})


def write_object(aws: Aws, uri: str, body: bytes) -> None:
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    put_object(aws, bucket, key, body)


def holds_objects(aws: Aws, prefix_uri: str) -> bool:
    """Whether any object's key starts with the URI's (one ListObjectsV2 of one key)."""
    bucket, _, key = prefix_uri.removeprefix(S3_SCHEME).partition("/")
    with aws_errors(f"listing {prefix_uri}"):
        return bool(aws.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount"))


def read_json(aws: Aws, uri: str) -> Any:
    """The JSON value at `uri`; None where there is none."""
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    if key not in s3_keys(aws, bucket, key):
        return None
    return json.loads(get_object(aws, bucket, key))


# -- triggers ---------------------------------------------------------------------------------------------------
def new_data_pattern(bucket: str, prefix: str) -> dict[str, Any]:
    """The EventBridge pattern of a new dataset version: an object created in `bucket` under `prefix` whose name
    ends in .manifest (the store writes a version's manifest last, after its files)."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"wildcard": f"{prefix}*{MANIFEST_SUFFIX}"}]}},
    }


def pipeline_target(pipeline_arn: str, role: str, parameters: dict[str, str]) -> dict[str, Any]:
    return {
        "Arn": pipeline_arn,
        "RoleArn": role,
        "SageMakerPipelineParameters": {
            "PipelineParameterList": [{"Name": key, "Value": value} for key, value in parameters.items()]
        },
    }


def send_bucket_events(aws: Aws, bucket: str) -> bool:
    """Turn on the bucket's notifications to EventBridge, keeping its other notifications; whether it was off."""
    with aws_errors(f"reading the notification configuration of bucket {bucket}"):
        config = aws.s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    if "EventBridgeConfiguration" in config:
        return False
    with aws_errors(f"turning on EventBridge notifications of bucket {bucket}"):
        aws.s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={**config, "EventBridgeConfiguration": {}}
        )
    return True


def put_new_data_rule(
    aws: Aws, rule: str, bucket: str, prefix: str, pipeline_arn: str, role: str, parameters: dict[str, str]
) -> str:
    """An EventBridge rule starting the pipeline (with `parameters`) on each new manifest under `prefix`; its ARN."""
    with aws_errors(f"EventBridge did not put rule {rule}"):
        arn = aws.events.put_rule(
            Name=rule,
            EventPattern=json.dumps(new_data_pattern(bucket, prefix)),
            State="ENABLED",
            Description=f"a new dataset version under s3://{bucket}/{prefix} starts {pipeline_arn}",
        )["RuleArn"]
        answer = aws.events.put_targets(
            Rule=rule, Targets=[{"Id": "pipeline", **pipeline_target(pipeline_arn, role, parameters)}]
        )
    if answer.get("FailedEntryCount"):
        failed = answer["FailedEntries"][0]
        raise LauncherError(f"EventBridge did not take the pipeline as rule {rule}'s target: {failed['ErrorMessage']}")
    return arn


def put_schedule(aws: Aws, name: str, expression: str, pipeline_arn: str, role: str, parameters: dict[str, str]) -> str:
    """An EventBridge Scheduler schedule starting the pipeline (with `parameters`); its ARN."""
    from botocore.exceptions import ClientError

    request = {
        "Name": name,
        "ScheduleExpression": expression,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": pipeline_target(pipeline_arn, role, parameters),
        "Description": f"starts {pipeline_arn}",
    }
    try:
        aws.scheduler.get_schedule(Name=name)
        exists = True
    except ClientError as err:
        if error_code(err) != "ResourceNotFoundException":
            with aws_errors(f"reading schedule {name}"):
                raise
        exists = False
    with aws_errors(f"EventBridge Scheduler did not {'update' if exists else 'create'} schedule {name}"):
        operation = aws.scheduler.update_schedule if exists else aws.scheduler.create_schedule
        return operation(**request)["ScheduleArn"]


# -- the shared record ------------------------------------------------------------------------------------------
def model_packages(aws: Aws, group: str, newest: int = 20) -> list[dict[str, Any]]:
    """The group's `newest` model packages, newest first, each as DescribeModelPackage answers; [] without a group."""
    from botocore.exceptions import ClientError

    try:
        listed = aws.sagemaker.list_model_packages(
            ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending", MaxResults=newest
        )["ModelPackageSummaryList"]
    except ClientError as err:
        if error_code(err) in MISSING:
            return []
        with aws_errors(f"listing the model packages of {group}"):
            raise
    with aws_errors(f"describing the model packages of {group}"):
        return [aws.sagemaker.describe_model_package(ModelPackageName=p["ModelPackageArn"]) for p in listed]


def endpoint_model(aws: Aws, endpoint: str) -> dict[str, Any] | None:
    """The endpoint's status, and the image and model.tar.gz its first variant serves; None where there is none."""
    from botocore.exceptions import ClientError

    try:
        described = aws.sagemaker.describe_endpoint(EndpointName=endpoint)
    except ClientError as err:
        if error_code(err) in MISSING:
            return None
        with aws_errors(f"describing endpoint {endpoint}"):
            raise
    with aws_errors(f"reading what endpoint {endpoint} serves"):
        config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        variant = config["ProductionVariants"][0]
        model = aws.sagemaker.describe_model(ModelName=variant["ModelName"])
    return {
        "status": described["EndpointStatus"],
        "endpoint_config": described["EndpointConfigName"],
        "instance_type": variant.get("InstanceType"),
        "inference_ami_version": variant.get("InferenceAmiVersion"),
        "image": model["PrimaryContainer"]["Image"],
        "model_data": model["PrimaryContainer"]["ModelDataUrl"],
        "environment": model["PrimaryContainer"].get("Environment", {}),
        "role": model.get("ExecutionRoleArn"),
    }


def package_model(package: dict[str, Any]) -> str:
    """The model.tar.gz a model package registers."""
    return package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]


def serve(aws: Aws, endpoint: str, name: str, hosting: Hosting, alarms: list[str]) -> dict[str, Any]:
    """A model and an endpoint config named `name`, and the endpoint updated to them blue/green (the old fleet serves
    until the new one is healthy, `alarms` roll it back while it bakes), followed to its end; the last description.
    """
    update_endpoint(aws, endpoint, name, hosting, alarms, BLUE_GREEN_BAKING_SECONDS)
    say(f"endpoint {endpoint} is being updated to {name} (blue/green, then {BLUE_GREEN_BAKING_SECONDS} s of baking)")
    return poll(
        lambda: describe_endpoint(aws, endpoint),
        lambda described: described["EndpointStatus"] in ENDPOINT_BUSY,
        lambda described: f"{described['EndpointStatus']} {described['EndpointConfigName']}",
        lambda described: say(f"endpoint {endpoint}: {described['EndpointStatus']}"),
    )


def reject(aws: Aws, package_arn: str, why: str) -> None:
    """Mark a model package Rejected, saying why (a rolled-back champion)."""
    with aws_errors(f"SageMaker did not update model package {package_arn}"):
        aws.sagemaker.update_model_package(
            ModelPackageArn=package_arn, ModelApprovalStatus="Rejected", ApprovalDescription=why[:1024]
        )
