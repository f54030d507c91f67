"""Every use of the SageMaker Python SDK (2.x) and boto3 in the launcher: sessions, estimators, tuners, models,
predictors, endpoints, S3 transfers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from launcher import metrics
from launcher.contract import encode_hyperparameters
from launcher.errors import LauncherError

if TYPE_CHECKING:
    from launcher.tuning_spec import ParameterRange, TuningSpec

# The SDK reads these at import time: no v3 migration banner.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

DEFAULT_REGION = "us-east-1"
# Local mode never calls IAM, but the SDK insists on a role ARN.
LOCAL_ROLE = "arn:aws:iam::111111111111:role/imgclf-local-mode"
# The SDK otherwise reports usage to an AWS host, even in local mode.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
POLL_SECONDS = 30.0  # between Describe* calls while waiting for an endpoint or a tuning job
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # what SageMaker syncs with a spot job's checkpoint S3 URI


def boto_session(region: str) -> Any:
    """The one place AWS credentials come from (boto3's usual chain: environment, profile, instance role)."""
    import boto3

    return boto3.Session(region_name=region)


def aws_session(region: str) -> Any:
    """A SageMaker Session on AWS. Passing our SDK config opts out of telemetry and skips the SDK's own config
    lookup (which may read S3)."""
    from sagemaker.session import Session

    return Session(boto_session=boto_session(region), sagemaker_config=SDK_CONFIG)


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


class PublishedPort(int):
    """A serving port that local mode publishes on one address of this machine only. The SDK formats the port
    with `%d` where it connects to the endpoint (the number) and with `%s` in its compose file's `ports` entry,
    which then reads `ADDRESS:PORT:8080` instead of `PORT:8080` (every interface)."""

    address: str

    def __new__(cls, port: int, address: str) -> PublishedPort:
        published = super().__new__(cls, port)
        published.address = address
        return published

    def __str__(self) -> str:
        return f"{self.address}:{int(self)}"


def local_session(
    serving_port: int | None = None,
    container_root: Path | None = None,
    region: str | None = None,
    listen: str | None = None,
) -> Any:
    """A LocalSession: jobs and endpoints run in Docker on this machine through docker-compose.

    `container_root` is where the SDK writes its compose files (each job or endpoint in a folder of its own);
    `listen`, the address an endpoint's port is published on (None: every interface, the SDK's default).
    """
    import boto3
    from sagemaker.local import LocalSession

    session = LocalSession(
        boto_session=boto3.Session(region_name=region or os.environ.get("AWS_REGION") or DEFAULT_REGION),
        sagemaker_config=SDK_CONFIG,
    )
    config: dict[str, Any] = {"local": {"local_code": True}}
    if serving_port:
        config["local"]["serving_port"] = PublishedPort(serving_port, listen) if listen else serving_port
    if container_root:
        config["local"]["container_root"] = str(container_root)
    session.config = config
    return session


class LocalContainer(NamedTuple):
    """A container of a local-mode job or endpoint."""

    id: str
    name: str


def local_mode_containers(container_root: Path, *statuses: str) -> list[LocalContainer]:
    """The containers that local mode started from compose files under `container_root`, in one of `statuses`
    (Docker's: created, running, exited, ...; none given: any).

    Their compose working directory (a label) tells ours apart from every other container.
    """
    filters = [arg for status in statuses for arg in ("--filter", f"status={status}")]
    listed = subprocess.run(
        ["docker", "ps", "-a", *filters,
         "--format", '{{.ID}} {{.Names}} {{.Label "com.docker.compose.project.working_dir"}}'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    fields = [line.split(" ", 2) for line in listed.stdout.splitlines()]
    return [
        LocalContainer(field[0], field[1])
        for field in fields
        if len(field) == 3 and Path(field[2]).is_relative_to(container_root)
    ]


def stop_running_containers(container_root: Path, grace_seconds: int) -> int:
    """Stop the running containers of local mode under `container_root` as SageMaker stops a job: SIGTERM, then
    SIGKILL after `grace_seconds` (`docker stop`, which returns once they have exited). Returns how many were
    running."""
    running = [container.id for container in local_mode_containers(container_root, "running")]
    if running:
        subprocess.run(["docker", "stop", "--time", str(grace_seconds), *running], capture_output=True, check=False)
    return len(running)


def remove_containers(container_root: Path, grace_seconds: int) -> int:
    """Remove every container that local mode started from compose files under `container_root`.

    docker-compose leaves its containers behind when a job ends or an endpoint stops, and may still be stopping
    them when the SDK returns; running ones are stopped first (as `stop_running_containers`), so none is left
    whatever state compose's own shutdown reached. Returns how many were removed.
    """
    stop_running_containers(container_root, grace_seconds)
    ours = [container.id for container in local_mode_containers(container_root)]
    if ours:
        subprocess.run(["docker", "rm", "--force", *ours], capture_output=True, check=False)
    return len(ours)


def estimator(
    session: Any,
    *,
    image: str,
    role: str,
    instance_type: str,
    instance_count: int,
    output_path: str,
    hyperparameters: dict[str, Any],
    base_job_name: str = "imgclf",
    **options: Any,
) -> Any:
    """An Estimator for our image; metric definitions let SageMaker chart the metric lines of the log.

    Hyperparameters are JSON-encoded here, as the container expects: the SDK itself only calls `str()` on each
    value, which would turn True into "True" and "resnet50" into an undecodable bare word.
    """
    from sagemaker.estimator import Estimator

    return Estimator(
        image_uri=image,
        role=role,
        instance_type=instance_type,
        instance_count=instance_count,
        output_path=output_path,
        hyperparameters=encode_hyperparameters(hyperparameters),
        base_job_name=base_job_name,
        sagemaker_session=session,
        metric_definitions=metrics.METRIC_DEFINITIONS,
        **options,
    )


def debugger_options(enabled: bool) -> dict[str, Any]:
    """Estimator arguments for SageMaker Debugger and Profiler.

    Off: no hook, no profiler and no AWS rule jobs (Debugger is closed to new customers; our container runs its
    own rules and writes its own report either way). On: the original project's configuration, unchanged.
    """
    if not enabled:
        return {"debugger_hook_config": False, "disable_profiler": True}
    from sagemaker.debugger import (
        DebuggerHookConfig,
        FrameworkProfile,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    return {
        "rules": [
            Rule.sagemaker(rule_configs.loss_not_decreasing()),
            ProfilerRule.sagemaker(rule_configs.LowGPUUtilization()),
            ProfilerRule.sagemaker(rule_configs.ProfilerReport()),
            Rule.sagemaker(rule_configs.overfit()),
            Rule.sagemaker(rule_configs.overtraining()),
        ],
        "profiler_config": ProfilerConfig(
            system_monitor_interval_millis=500, framework_profile_params=FrameworkProfile(num_steps=10)
        ),
        "debugger_hook_config": DebuggerHookConfig(
            hook_parameters={"train.save_interval": "100", "eval.save_interval": "10"}
        ),
    }


def spot_options(max_wait: int, checkpoint_s3_uri: str) -> dict[str, Any]:
    """Estimator arguments for managed spot training: SageMaker syncs CHECKPOINT_DIR with `checkpoint_s3_uri`,
    so a trainer that saves checkpoints there can resume when an interrupted job is started again."""
    return {
        "use_spot_instances": True,
        "max_wait": max_wait,
        "checkpoint_s3_uri": checkpoint_s3_uri,
        "checkpoint_local_path": CHECKPOINT_DIR,
    }


def upload(session: Any, path: Path, bucket: str, key_prefix: str) -> str:
    """Upload a local folder (recursively) or file under s3://bucket/key_prefix; return the channel's S3 URI."""
    with aws_errors(f"uploading {path} to s3://{bucket}/{key_prefix}"):
        return session.upload_data(str(path), bucket=bucket, key_prefix=key_prefix)


def start_training_job(estimator: Any, inputs: dict[str, str], job_name: str) -> None:
    """CreateTrainingJob, without waiting for it."""
    with aws_errors(f"SageMaker did not start training job {job_name}"):
        estimator.fit(inputs, job_name=job_name, wait=False)


def follow_training_job(session: Any, job_name: str) -> dict[str, Any]:
    """Stream a job's CloudWatch log until the job ends; return its DescribeTrainingJob description.

    A failed or stopped job returns normally: its description says why.
    """
    from sagemaker.exceptions import UnexpectedStatusException

    with aws_errors(f"following training job {job_name} failed (the job may still be running)"):
        with contextlib.suppress(UnexpectedStatusException):
            session.logs_for_job(job_name, wait=True)
        return session.sagemaker_client.describe_training_job(TrainingJobName=job_name)


def download(uri: str, destination: Path, region: str) -> Path:
    """Copy one S3 object to a local file."""
    from botocore.exceptions import ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    with aws_errors(f"downloading {uri}"):
        try:
            response = boto_session(region).client("s3").get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise LauncherError(f"{uri} does not exist (yet): the job has no output there") from err
            raise
        with open(destination, "wb") as file:
            shutil.copyfileobj(response["Body"], file)
    return destination


def image_predictor(endpoint_name: str, session: Any) -> Any:
    """The original project's client: raw JPEG bytes in (IdentitySerializer), JSON out (JSONDeserializer)."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    return Predictor(
        endpoint_name,
        sagemaker_session=session,
        serializer=IdentitySerializer("image/jpeg"),
        deserializer=JSONDeserializer(),
    )


def model(session: Any, *, image: str, model_data: str, role: str, name: str, env: dict[str, str]) -> Any:
    from sagemaker.model import Model

    return Model(
        image_uri=image,
        model_data=model_data,
        role=role,
        name=name,
        env=env,
        sagemaker_session=session,
        predictor_cls=lambda endpoint_name, sagemaker_session: image_predictor(endpoint_name, sagemaker_session),
    )


def create_endpoint(model: Any, *, instance_type: str, endpoint_name: str, inference_ami_version: str | None) -> None:
    """CreateModel, CreateEndpointConfig and CreateEndpoint, without waiting for the endpoint: the SDK's waiter
    polls every 30 s, cannot be told otherwise, and prints its progress to stdout; callers poll `describe_endpoint`.
    `inference_ami_version` picks the hosts' AMI (and so their NVIDIA driver); None leaves SageMaker's default."""
    with aws_errors(f"SageMaker did not create endpoint {endpoint_name}"):
        model.deploy(initial_instance_count=1, instance_type=instance_type, endpoint_name=endpoint_name, wait=False,
                     inference_ami_version=inference_ami_version)  # fmt: skip


def update_endpoint(session: Any, *, endpoint_name: str, name: str, image: str, model_data: str, role: str,
                    env: dict[str, str], instance_type: str, inference_ami_version: str | None,
                    rollback_alarms: list[str], termination_wait: int) -> None:  # fmt: skip
    """CreateModel and CreateEndpointConfig named `name`, then UpdateEndpoint to that config as a blue/green
    deployment: SageMaker starts the new fleet, shifts all traffic at once when its health checks pass and keeps
    the old fleet `termination_wait` seconds (the baking period), rolling back if one of `rollback_alarms` fires
    meanwhile. The endpoint keeps serving throughout; callers poll `describe_endpoint`."""
    client = session.sagemaker_client
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": instance_type}
    if inference_ami_version:
        variant["InferenceAmiVersion"] = inference_ami_version
    policy = {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
        "TerminationWaitInSeconds": termination_wait,
    }
    deployment: dict[str, Any] = {"BlueGreenUpdatePolicy": policy}
    if rollback_alarms:
        deployment["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": alarm} for alarm in rollback_alarms]}
    with aws_errors(f"SageMaker did not update endpoint {endpoint_name}"):
        container = {"Image": image, "ModelDataUrl": model_data, "Environment": env}
        client.create_model(ModelName=name, ExecutionRoleArn=role, PrimaryContainer=container)
        client.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
        client.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=name, DeploymentConfig=deployment)


def inference_ami_versions() -> list[str]:
    """The endpoint AMI versions that botocore's SageMaker service model knows (ProductionVariant's enum)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInferenceAmiVersion").enum)


def describe_endpoint(session: Any, endpoint_name: str) -> dict[str, Any]:
    with aws_errors(f"describing endpoint {endpoint_name}"):
        return session.sagemaker_client.describe_endpoint(EndpointName=endpoint_name)


def invoke_endpoint(session: Any, endpoint_name: str, body: bytes, content_type: str) -> Any:
    """InvokeEndpoint through the original project's predictor; return the decoded JSON answer.

    An error answered by the container reaches us as a ModelError carrying the container's status and body;
    it becomes a LauncherError with the container's own message.
    """
    from botocore.exceptions import ClientError

    predictor = image_predictor(endpoint_name, session)
    with aws_errors(f"invoking endpoint {endpoint_name}"):
        try:
            return predictor.predict(body, initial_args={"ContentType": content_type})
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ModelError":
                raise
            raise LauncherError(model_error_message(endpoint_name, err.response)) from err


def model_error_message(endpoint_name: str, response: dict[str, Any]) -> str:
    """`endpoint NAME answered STATUS: MESSAGE` from a ModelError; the container answers {"error": ..., "status": N}."""
    status = response.get("OriginalStatusCode", "an error")
    detail = response.get("OriginalMessage") or response.get("Error", {}).get("Message", "")
    with contextlib.suppress(ValueError, AttributeError):
        answer = json.loads(detail)
        status, detail = answer.get("status", status), answer["error"]
    return f"endpoint {endpoint_name} answered {status}: {detail}"


def delete_endpoint(session: Any, *, endpoint_name: str, config_names: list[str], model_names: list[str]) -> list[str]:
    """DeleteEndpoint, then DeleteEndpointConfig and DeleteModel for each config and model it served; return those
    that were already gone."""
    from botocore.exceptions import ClientError

    deletions = [(f"endpoint {endpoint_name}", lambda: session.delete_endpoint(endpoint_name))]
    for config_name, model_name in zip(config_names, model_names, strict=True):
        deletions += [
            (f"endpoint config {config_name}", lambda name=config_name: session.delete_endpoint_config(name)),
            (f"model {model_name}", lambda name=model_name: session.delete_model(name)),
        ]
    gone = []
    for what, delete in deletions:
        with aws_errors(f"deleting {what}"):
            try:
                delete()
            except ClientError as err:
                error = err.response.get("Error", {})
                if error.get("Code") != "ValidationException" or "Could not find" not in error.get("Message", ""):
                    raise
                gone.append(what)
    return gone


def parameter_range(spec: ParameterRange) -> Any:
    """A ContinuousParameter, IntegerParameter or CategoricalParameter.

    Categorical values are JSON-encoded here, as static hyperparameters are: for an Estimator that is not a
    framework's, the SDK sends `str(value)` of each (True -> "True", which the container cannot decode).
    """
    from sagemaker.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    if spec.kind == "continuous":
        return ContinuousParameter(spec.min_value, spec.max_value, scaling_type=spec.scaling)
    if spec.kind == "integer":
        return IntegerParameter(int(spec.min_value), int(spec.max_value), scaling_type=spec.scaling)
    return CategoricalParameter([json.dumps(value) for value in spec.values])


def tuning_metric_definitions(objective_metric: str, objective_regex: str) -> list[dict[str, str]]:
    """Our metric definitions with the objective's: the tuner sends only its own, not the estimator's."""
    ours = [definition for definition in metrics.METRIC_DEFINITIONS if definition["Name"] != objective_metric]
    return [*ours, {"Name": objective_metric, "Regex": objective_regex}]


def tuner(estimator: Any, spec: TuningSpec, hyperband_max_epochs: int | None = None) -> Any:
    """A HyperparameterTuner whose trials are `estimator`'s jobs with the hyperparameters of `spec.ranges`.

    `hyperband_max_epochs`: the Hyperband strategy's resource, from 1 epoch to that many (the SDK sends both
    bounds of a HyperbandStrategyConfig, so neither may be left out).
    """
    from sagemaker.tuner import (
        HyperbandStrategyConfig,
        HyperparameterTuner,
        StrategyConfig,
        WarmStartConfig,
        WarmStartTypes,
    )

    options: dict[str, Any] = {}
    if spec.warm_start_from:
        options["warm_start_config"] = WarmStartConfig(
            WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM, parents=set(spec.warm_start_from)
        )
    if hyperband_max_epochs is not None:
        options["strategy_config"] = StrategyConfig(
            HyperbandStrategyConfig(max_resource=hyperband_max_epochs, min_resource=1)
        )
    return HyperparameterTuner(
        estimator,
        objective_metric_name=spec.objective_metric,
        hyperparameter_ranges={r.name: parameter_range(r) for r in spec.ranges},
        metric_definitions=tuning_metric_definitions(spec.objective_metric, spec.objective_regex),
        strategy=spec.strategy,
        objective_type=spec.direction,
        max_jobs=spec.max_jobs,
        max_parallel_jobs=spec.max_parallel_jobs,
        early_stopping_type=spec.early_stopping,
        **options,
    )


def start_tuning_job(tuner: Any, inputs: dict[str, str], name: str) -> None:
    """CreateHyperParameterTuningJob, without waiting for it."""
    with aws_errors(f"SageMaker did not start tuning job {name}"):
        tuner.fit(inputs, job_name=name, wait=False)


def describe_tuning_job(session: Any, name: str) -> dict[str, Any]:
    with aws_errors(f"describing tuning job {name}"):
        return session.sagemaker_client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)


def tuning_job_trials(session: Any, name: str) -> list[dict[str, Any]]:
    """Every training job of a tuning job (ListTrainingJobsForHyperParameterTuningJob, all pages)."""
    with aws_errors(f"listing the training jobs of tuning job {name}"):
        pages = session.sagemaker_client.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        return [summary for page in pages.paginate(HyperParameterTuningJobName=name)
                for summary in page["TrainingJobSummaries"]]  # fmt: skip


def describe_training_job(session: Any, name: str) -> dict[str, Any]:
    with aws_errors(f"describing training job {name}"):
        return session.sagemaker_client.describe_training_job(TrainingJobName=name)


# -- batch transform ----------------------------------------------------------------------------------------------
def s3_keys(session: Any, bucket: str, prefix: str) -> list[str]:
    """Every object key under a prefix (ListObjectsV2, all pages)."""
    with aws_errors(f"listing s3://{bucket}/{prefix}"):
        pages = session.s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def put_object(session: Any, bucket: str, key: str, body: bytes) -> str:
    with aws_errors(f"writing s3://{bucket}/{key}"):
        session.s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def get_object(session: Any, bucket: str, key: str) -> bytes:
    with aws_errors(f"reading s3://{bucket}/{key}"):
        return session.s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def create_model(session: Any, *, name: str, image: str, model_data: str, role: str, env: dict[str, str]) -> None:
    container = {"Image": image, "ModelDataUrl": model_data, "Environment": env}
    with aws_errors(f"SageMaker did not create model {name}"):
        session.sagemaker_client.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role)


def delete_model(session: Any, name: str) -> None:
    with aws_errors(f"deleting model {name}"):
        session.sagemaker_client.delete_model(ModelName=name)


def create_transform_job(session: Any, request: dict[str, Any]) -> None:
    with aws_errors(f"SageMaker did not start transform job {request['TransformJobName']}"):
        session.sagemaker_client.create_transform_job(**request)


def describe_transform_job(session: Any, name: str) -> dict[str, Any]:
    with aws_errors(f"describing transform job {name}"):
        return session.sagemaker_client.describe_transform_job(TransformJobName=name)


def local_transform(session: Any, *, name: str, image: str, model_data: str, env: dict[str, str], instance_type: str,
                    input_uri: str, output_uri: str, content_type: str) -> None:  # fmt: skip
    """Local mode's batch transform, to its end: the image's `serve` in Docker, every file under `input_uri` sent
    as one request, each answer written to `<output_uri>/<file>.out` (answers with an error too: local mode does
    not check the status)."""
    transformer = model(session, image=image, model_data=model_data, role=LOCAL_ROLE, name=name, env=env).transformer(
        instance_count=1,
        instance_type=instance_type,
        strategy="SingleRecord",  # local mode cannot read the container's own SINGLE_RECORD
        output_path=output_uri,
        accept="application/json",
        max_payload=6,
        env=env,
    )
    transformer.transform(input_uri, content_type=content_type, split_type=None, wait=True, logs=False)
