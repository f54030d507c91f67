"""Every use of the SageMaker Python SDK (2.x) in the launcher: sessions, estimators, models, predictors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

# The SDK reads these at import time: no v3 migration banner.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

DEFAULT_REGION = "us-east-1"
# Local mode never calls IAM, but the SDK insists on a role ARN.
LOCAL_ROLE = "arn:aws:iam::111111111111:role/imgclf-local-mode"
# The SDK otherwise reports usage to an AWS host, even in local mode.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def local_session(
    serving_port: int | None = None, container_root: Path | None = None, region: str | None = None
) -> Any:
    """A LocalSession: jobs and endpoints run in Docker on this machine through docker-compose.

    `container_root` is where the SDK writes its compose files (each job or endpoint in a folder of its own).
    """
    import boto3
    from sagemaker.local import LocalSession

    session = LocalSession(
        boto_session=boto3.Session(region_name=region or os.environ.get("AWS_REGION") or DEFAULT_REGION),
        sagemaker_config=SDK_CONFIG,
    )
    config: dict[str, Any] = {"local": {"local_code": True}}
    if serving_port:
        config["local"]["serving_port"] = serving_port
    if container_root:
        config["local"]["container_root"] = str(container_root)
    session.config = config
    return session


def remove_stopped_containers(container_root: Path) -> int:
    """Remove the stopped containers that local mode started from compose files under `container_root`.

    docker-compose leaves them behind after a job ends or an endpoint stops; their compose working directory
    (a label) tells ours apart. Returns how many were removed.
    """
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", "status=exited", "--filter", "status=created",
         "--format", '{{.ID}} {{.Label "com.docker.compose.project.working_dir"}}'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    ours = [
        line.split(" ", 1)[0]
        for line in listed.stdout.splitlines()
        if " " in line and Path(line.split(" ", 1)[1]).is_relative_to(container_root)
    ]
    if ours:
        subprocess.run(["docker", "rm", *ours], capture_output=True, check=False)
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
    """An Estimator for our image; metric definitions let SageMaker chart the metric lines of the log."""
    from sagemaker.estimator import Estimator

    return Estimator(
        image_uri=image,
        role=role,
        instance_type=instance_type,
        instance_count=instance_count,
        output_path=output_path,
        hyperparameters=hyperparameters,
        base_job_name=base_job_name,
        sagemaker_session=session,
        metric_definitions=METRIC_DEFINITIONS,
        **options,
    )


METRIC_DEFINITIONS = [
    {"Name": "train loss", "Regex": r"train loss: ([0-9.eE+-]+)"},
    {"Name": "valid loss", "Regex": r"valid loss: ([0-9.eE+-]+)"},
    {"Name": "valid accuracy", "Regex": r"valid accuracy: ([0-9.eE+-]+)"},
    {"Name": "average test loss", "Regex": r"average test loss: ([0-9.eE+-]+)"},
    {"Name": "test accuracy", "Regex": r"test accuracy: ([0-9.eE+-]+)"},
]


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
