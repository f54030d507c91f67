"""Every AWS request of the launcher: SageMaker's (training, tuning, endpoints, batch transform), S3's and
CloudWatch Logs', built here as the service takes them (the tuning job's own in `tuning`)
and sent with boto3, whose botocore validates each against AWS's own service model. The same training and model
requests run in SageMaker local mode (`local_mode`).

They are the requests the SageMaker Python SDK's Estimator, HyperparameterTuner, Model and Predictor send;
building them here keeps the launcher off the SDK's high-level classes, which differ between its 2.x and 3.x
lines: only sagemaker-core comes along (local mode, Debugger's rule configurations).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from imgclf_contract import metrics
from launcher import contract
from launcher.contract import MANIFEST_SUFFIX, S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.specs import TrainingSpec

POLL_SECONDS = 30.0  # between Describe* calls while waiting for a job or an endpoint
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # what SageMaker syncs with a spot job's checkpoint S3 URI
VOLUME_SIZE_GB = 30  # each training instance's EBS volume
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
JOB_ENDED = ("Completed", "Failed", "Stopped")
JSON = "application/json"
TRANSFORM_MAX_PAYLOAD_MB = 6  # a request's largest body; the image's model server takes 6.25 MB
Description = dict[str, Any]  # a Describe* answer


def poll(
    describe: Callable[[], Description],
    busy: Callable[[Description], bool],
    state: Callable[[Description], str],
    changed: Callable[[Description], None],
) -> Description:
    """Call `describe` every POLL_SECONDS while its answer is `busy`; `changed` sees each answer whose `state`
    differs from the one before (to save a record, to say so). Returns the last answer."""
    last = None
    while True:
        description = describe()
        if state(description) != last:
            last = state(description)
            changed(description)
        if not busy(description):
            return description
        time.sleep(POLL_SECONDS)


def boto_session(region: str) -> Any:
    """The one place AWS credentials come from (boto3's usual chain: environment, profile, instance role)."""
    import boto3

    return boto3.Session(region_name=region)


class Aws:
    """The AWS clients of one region, each made when first used."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.boto = boto_session(region)

    @cached_property
    def sagemaker(self) -> Any:
        return self.boto.client("sagemaker")

    @cached_property
    def runtime(self) -> Any:
        return self.boto.client("sagemaker-runtime")

    @cached_property
    def s3(self) -> Any:
        return self.boto.client("s3")

    @cached_property
    def logs(self) -> Any:
        return self.boto.client("logs")

    @cached_property
    def events(self) -> Any:
        return self.boto.client("events")

    @cached_property
    def scheduler(self) -> Any:
        return self.boto.client("scheduler")


@contextlib.contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn AWS client errors into LauncherErrors that say what was being done."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as err:
        raise LauncherError(
            f"{doing}: no AWS credentials found; configure them (aws configure, AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from err
    except (BotoCoreError, ClientError, S3UploadFailedError) as err:
        raise LauncherError(f"{doing}: {err}") from err


def error_code(err: Exception) -> str | None:
    return getattr(err, "response", {}).get("Error", {}).get("Code")


# -- training jobs ----------------------------------------------------------------------------------------------
def channel(name: str, uri: str) -> dict[str, Any]:
    """An input channel: an S3 prefix, a manifest of S3 objects (a URI ending in .manifest), or (local mode) a
    folder of this machine as a file:// URI."""
    if uri.startswith("file://"):
        source = {"FileDataSource": {"FileUri": uri, "FileDataDistributionType": "FullyReplicated"}}
    else:
        kind = "ManifestFile" if uri.endswith(MANIFEST_SUFFIX) else "S3Prefix"
        source = {"S3DataSource": {"S3DataType": kind, "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}
    return {"ChannelName": name, "DataSource": source}


def training_request(
    spec: TrainingSpec,
    name: str,
    role: str,
    output_path: str,
    channels: dict[str, str],
    max_run: int,
    spot: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """CreateTrainingJob for `spec`'s image, hosts and hyperparameters, the job called `name`, its channels as
    `channels` say, stopped after `max_run` seconds; metric definitions let SageMaker chart the metric lines of the log.

    Hyperparameters are JSON-encoded, as the container expects (SageMaker passes strings through). `spot`: managed
    spot training's `max_wait` and `checkpoint_s3_uri`, which SageMaker syncs with CHECKPOINT_DIR so that a trainer
    saving checkpoints there resumes when an interrupted job starts again.
    """
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": spec.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metrics.METRIC_DEFINITIONS,
        },
        "RoleArn": role,
        "HyperParameters": contract.encode_hyperparameters(spec.hyperparameters),
        "InputDataConfig": [channel(channel_name, uri) for channel_name, uri in channels.items()],
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max_run},
    }
    if spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = spot["max_wait"]
        request["CheckpointConfig"] = {"S3Uri": spot["checkpoint_s3_uri"], "LocalPath": CHECKPOINT_DIR}
    return request


def debugger_request(enabled: bool, region: str, output_path: str) -> dict[str, Any]:
    """CreateTrainingJob's SageMaker Debugger and Profiler members.

    Off: no hook, no profiler and no AWS rule jobs (Debugger is closed to new customers; our container runs its
    own rules and writes its own report either way). On: the original project's configuration, unchanged: rules
    LossNotDecreasing, Overfit and Overtraining on the saved tensors, LowGPUUtilization and ProfilerReport on the
    profile, the system sampled every 500 ms and 10 steps profiled in detail.
    """
    if not enabled:
        return {"ProfilerConfig": {"DisableProfiler": True}}
    from sagemaker.core.debugger import (
        FrameworkProfile,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        get_rule_container_image_uri,
        rule_configs,
    )

    image = get_rule_container_image_uri(None, region)
    rules = [
        Rule.sagemaker(rule())
        for rule in (rule_configs.loss_not_decreasing, rule_configs.overfit, rule_configs.overtraining)
    ]
    profiler_rules = [
        ProfilerRule.sagemaker(rule()) for rule in (rule_configs.LowGPUUtilization, rule_configs.ProfilerReport)
    ]
    for rule in (*rules, *profiler_rules):
        rule.image_uri = image
    collections = {c.name: c.parameters for rule in rules for c in rule.collection_configs or ()}
    hook = {
        "S3OutputPath": output_path,
        "HookParameters": {"train.save_interval": "100", "eval.save_interval": "10"},
        "CollectionConfigurations": [
            {"CollectionName": name, "CollectionParameters": parameters} for name, parameters in collections.items()
        ],
    }  # the tensors the rules read, saved as often as they ask
    profiler = ProfilerConfig(
        s3_output_path=output_path,
        system_monitor_interval_millis=500,
        framework_profile_params=FrameworkProfile(num_steps=10),
    )
    return {
        "DebugHookConfig": hook,
        "DebugRuleConfigurations": [rule.to_debugger_rule_config_dict() for rule in rules],
        "ProfilerConfig": profiler._to_request_dict(),  # the odd strings of ProfilingParameters are its to write
        "ProfilerRuleConfigurations": [rule.to_profiler_rule_config_dict() for rule in profiler_rules],
    }


def upload_file(aws: Aws, path: Path, bucket: str, key: str) -> str:
    """Upload one file of this machine to s3://bucket/key; return that URI."""
    with aws_errors(f"uploading {path} to s3://{bucket}/{key}"):
        aws.s3.upload_file(str(path), bucket, key)
    return f"{S3_SCHEME}{bucket}/{key}"


def start_training_job(aws: Aws, request: dict[str, Any]) -> None:
    """CreateTrainingJob, without waiting for it."""
    with aws_errors(f"SageMaker did not start training job {request['TrainingJobName']}"):
        aws.sagemaker.create_training_job(**request)


def describe_training_job(aws: Aws, name: str) -> dict[str, Any]:
    with aws_errors(f"describing training job {name}"):
        return aws.sagemaker.describe_training_job(TrainingJobName=name)


def follow_training_job(aws: Aws, job_name: str) -> dict[str, Any]:
    """Print a job's CloudWatch log as it comes until the job has ended; return its last DescribeTrainingJob.

    A failed or stopped job returns normally: its description says why.
    """
    tokens: dict[str, str] = {}

    def describe() -> Description:
        description = aws.sagemaker.describe_training_job(TrainingJobName=job_name)
        print_new_log_events(aws.logs, job_name, tokens)
        return description

    with aws_errors(f"following training job {job_name} failed (the job may still be running)"):
        poll(
            describe,
            lambda description: description["TrainingJobStatus"] not in JOB_ENDED,
            lambda description: description.get("SecondaryStatus"),
            lambda description: say(f"training job {job_name}: {description.get('SecondaryStatus')}"),
        )  # then described again: the final metrics may come after the status
        return aws.sagemaker.describe_training_job(TrainingJobName=job_name)


def print_new_log_events(logs: Any, job_name: str, tokens: dict[str, str]) -> None:
    """Print what each of the job's log streams (one per instance) gained since `tokens`, and move them on."""
    from botocore.exceptions import ClientError

    try:
        streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/")["logStreams"]
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            return  # no log yet
        raise
    for stream in streams:
        name = stream["logStreamName"]
        prefix = f"[{name.removeprefix(job_name + '/')}] " if len(streams) > 1 else ""
        while True:
            position = {"nextToken": tokens[name]} if name in tokens else {}
            page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=name, startFromHead=True, **position)
            for event in page["events"]:
                print(prefix + event["message"], flush=True)
            tokens[name] = page["nextForwardToken"]
            if not page["events"]:
                break


def download(uri: str, destination: Path, region: str) -> Path:
    """Copy one S3 object to a local file."""
    from botocore.exceptions import ClientError

    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    with aws_errors(f"downloading {uri}"):
        try:
            response = Aws(region).s3.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if error_code(err) == "NoSuchKey":
                raise LauncherError(f"{uri} does not exist (yet): the job has no output there") from err
            raise
        with open(destination, "wb") as file:
            shutil.copyfileobj(response["Body"], file)
    return destination


# -- endpoints --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hosting:
    """A SageMaker model (the image, its model.tar.gz, the role it runs as, its environment) and the hosts that
    serve it: their instance type and AMI version, which picks their NVIDIA driver (None: SageMaker's default)."""

    image: str
    model_data: str
    role: str
    env: dict[str, str]
    instance_type: str
    ami_version: str | None = None


def model_request(name: str, hosting: Hosting) -> dict[str, Any]:
    """CreateModel (local mode takes it too, with its placeholder role)."""
    container = {"Image": hosting.image, "ModelDataUrl": hosting.model_data, "Environment": hosting.env}
    return {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": hosting.role}


def endpoint_config_request(name: str, hosting: Hosting) -> dict[str, Any]:
    """CreateEndpointConfig for model `name`: one production variant, all traffic on one host."""
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "InitialVariantWeight": 1,
        "InitialInstanceCount": 1,
        "InstanceType": hosting.instance_type,
    }
    if hosting.ami_version:
        variant["InferenceAmiVersion"] = hosting.ami_version
    return {"EndpointConfigName": name, "ProductionVariants": [variant]}


def transform_request(
    name: str, hosting: Hosting, data_source: dict[str, str], content_type: str, output: str
) -> dict[str, Any]:
    """CreateTransformJob with model `name`: one image per request (SplitType None and SingleRecord, which local mode
    needs said: it does not read the container's own), answers in JSON."""
    resources: dict[str, Any] = {"InstanceType": hosting.instance_type, "InstanceCount": 1}
    if hosting.ami_version:
        resources["TransformAmiVersion"] = hosting.ami_version
    return {
        "TransformJobName": name,
        "ModelName": name,
        "BatchStrategy": "SingleRecord",
        "MaxPayloadInMB": TRANSFORM_MAX_PAYLOAD_MB,
        "Environment": hosting.env,
        "TransformInput": {
            "DataSource": {"S3DataSource": data_source},
            "ContentType": content_type,
            "SplitType": "None",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output, "Accept": JSON, "AssembleWith": "None"},
        "TransformResources": resources,
    }


def create_model(aws: Aws, name: str, hosting: Hosting) -> None:
    with aws_errors(f"SageMaker did not create model {name}"):
        aws.sagemaker.create_model(**model_request(name, hosting))


def create_model_and_config(aws: Aws, name: str, hosting: Hosting) -> None:
    create_model(aws, name, hosting)
    with aws_errors(f"SageMaker did not create endpoint config {name}"):
        aws.sagemaker.create_endpoint_config(**endpoint_config_request(name, hosting))


def create_endpoint(aws: Aws, name: str, hosting: Hosting) -> None:
    """A model, an endpoint config and an endpoint, all named `name`, without waiting for the endpoint: callers poll
    `describe_endpoint`."""
    create_model_and_config(aws, name, hosting)
    with aws_errors(f"SageMaker did not create endpoint {name}"):
        aws.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)


def update_endpoint(
    aws: Aws, endpoint_name: str, name: str, hosting: Hosting, rollback_alarms: list[str], termination_wait: int
) -> None:
    """A model and an endpoint config named `name`, then UpdateEndpoint to that config as a blue/green deployment:
    SageMaker starts the new fleet, shifts all traffic at once when its health checks pass and keeps the old fleet
    `termination_wait` seconds (the baking period), rolling back if one of `rollback_alarms` fires meanwhile. The
    endpoint keeps serving throughout; callers poll `describe_endpoint`."""
    policy = {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
        "TerminationWaitInSeconds": termination_wait,
    }
    deployment: dict[str, Any] = {"BlueGreenUpdatePolicy": policy}
    if rollback_alarms:
        deployment["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": alarm} for alarm in rollback_alarms]}
    create_model_and_config(aws, name, hosting)
    with aws_errors(f"SageMaker did not update endpoint {endpoint_name}"):
        aws.sagemaker.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=name, DeploymentConfig=deployment)


def inference_ami_versions() -> list[str]:
    """The endpoint AMI versions that botocore's SageMaker service model knows (ProductionVariant's enum)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInferenceAmiVersion").enum)


def describe_endpoint(aws: Aws, endpoint_name: str) -> dict[str, Any]:
    with aws_errors(f"describing endpoint {endpoint_name}"):
        return aws.sagemaker.describe_endpoint(EndpointName=endpoint_name)


def invoke_endpoint(aws: Aws, endpoint_name: str, body: bytes, content_type: str) -> Any:
    """InvokeEndpoint as the original project's client calls it (the raw bytes, JSON asked for); return the
    decoded JSON answer.

    An error answered by the container reaches us as a ModelError carrying the container's status and body;
    it becomes a LauncherError with the container's own message.
    """
    from botocore.exceptions import ClientError

    with aws_errors(f"invoking endpoint {endpoint_name}"):
        try:
            answer = aws.runtime.invoke_endpoint(
                EndpointName=endpoint_name, Body=body, ContentType=content_type, Accept=JSON
            )
        except ClientError as err:
            if error_code(err) != "ModelError":
                raise
            raise LauncherError(model_error_message(endpoint_name, err.response)) from err
        return json.loads(answer["Body"].read())


def model_error_message(endpoint_name: str, response: dict[str, Any]) -> str:
    """`endpoint NAME answered STATUS: MESSAGE` from a ModelError; the container answers {"error": ..., "status": N}."""
    status = response.get("OriginalStatusCode", "an error")
    detail = response.get("OriginalMessage") or response.get("Error", {}).get("Message", "")
    error = contract.error_answer(detail)
    if error:
        detail, status = error[0], error[1] or status
    return f"endpoint {endpoint_name} answered {status}: {detail}"


def delete_endpoint(aws: Aws, *, endpoint_name: str, config_names: list[str], model_names: list[str]) -> list[str]:
    """DeleteEndpoint, then DeleteEndpointConfig and DeleteModel for each config and model it served; return those
    that were already gone."""
    from botocore.exceptions import ClientError

    client = aws.sagemaker
    deletions = [(f"endpoint {endpoint_name}", client.delete_endpoint, {"EndpointName": endpoint_name})]
    for config_name, model_name in zip(config_names, model_names, strict=True):
        deletions += [
            (f"endpoint config {config_name}", client.delete_endpoint_config, {"EndpointConfigName": config_name}),
            (f"model {model_name}", client.delete_model, {"ModelName": model_name}),
        ]
    gone = []
    for what, delete, names in deletions:
        with aws_errors(f"deleting {what}"):
            try:
                delete(**names)
            except ClientError as err:
                message = err.response.get("Error", {}).get("Message", "")
                if error_code(err) != "ValidationException" or "Could not find" not in message:
                    raise
                gone.append(what)
    return gone


# -- tuning jobs (their request: tuning) ------------------------------------------------------------------------
def start_tuning_job(aws: Aws, request: dict[str, Any]) -> None:
    """CreateHyperParameterTuningJob, without waiting for it."""
    with aws_errors(f"SageMaker did not start tuning job {request['HyperParameterTuningJobName']}"):
        aws.sagemaker.create_hyper_parameter_tuning_job(**request)


def describe_tuning_job(aws: Aws, name: str) -> dict[str, Any]:
    with aws_errors(f"describing tuning job {name}"):
        return aws.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)


def tuning_job_trials(aws: Aws, name: str) -> list[dict[str, Any]]:
    """Every training job of a tuning job (ListTrainingJobsForHyperParameterTuningJob, all pages)."""
    with aws_errors(f"listing the training jobs of tuning job {name}"):
        pages = aws.sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        return [
            summary
            for page in pages.paginate(HyperParameterTuningJobName=name)
            for summary in page["TrainingJobSummaries"]
        ]


# -- batch transform --------------------------------------------------------------------------------------------
def s3_keys(aws: Aws, bucket: str, prefix: str) -> list[str]:
    """Every object key under a prefix (ListObjectsV2, all pages)."""
    with aws_errors(f"listing s3://{bucket}/{prefix}"):
        pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def put_object(aws: Aws, bucket: str, key: str, body: bytes) -> str:
    with aws_errors(f"writing s3://{bucket}/{key}"):
        aws.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"{S3_SCHEME}{bucket}/{key}"


def get_object(aws: Aws, bucket: str, key: str) -> bytes:
    with aws_errors(f"reading s3://{bucket}/{key}"):
        return aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def delete_model(aws: Aws, name: str) -> None:
    with aws_errors(f"deleting model {name}"):
        aws.sagemaker.delete_model(ModelName=name)


def create_transform_job(aws: Aws, request: dict[str, Any]) -> None:
    with aws_errors(f"SageMaker did not start transform job {request['TransformJobName']}"):
        aws.sagemaker.create_transform_job(**request)


def describe_transform_job(aws: Aws, name: str) -> dict[str, Any]:
    with aws_errors(f"describing transform job {name}"):
        return aws.sagemaker.describe_transform_job(TransformJobName=name)
