"""SageMaker local mode (sagemaker-core's `sagemaker.core.local`): the same CreateTrainingJob, CreateModel /
CreateEndpointConfig / CreateEndpoint and CreateTransformJob requests as SageMaker's, run in Docker on this
machine through docker-compose; and the containers it leaves, found by their compose folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

from launcher.backends.sagemaker import Hosting, endpoint_config_request, model_request, transform_request

DEFAULT_REGION = "us-east-1"
# Local mode never calls IAM, but its requests carry a role ARN as SageMaker's do.
LOCAL_ROLE = "arn:aws:iam::111111111111:role/imgclf-local-mode"
# sagemaker-core otherwise reports usage to an AWS host, even in local mode, and looks for config files (in S3 too).
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


class PublishedPort(int):
    """A serving port that local mode publishes on one address of this machine only. Local mode formats the port
    with `%d` where it connects to the endpoint (the number) and with `%s` in its compose file's `ports` entry,
    which then reads `ADDRESS:PORT:8080` instead of `PORT:8080` (every interface)."""

    address: str

    def __new__(cls, port: int, address: str) -> PublishedPort:
        published = super().__new__(cls, port)
        published.address = address
        return published

    def __str__(self) -> str:
        return f"{self.address}:{int(self)}"


def session(
    serving_port: int | None = None,
    container_root: Path | None = None,
    region: str | None = None,
    listen: str | None = None,
) -> Any:
    """A local-mode session: its `sagemaker_client` runs training, hosting and transform requests in Docker on
    this machine through docker-compose.

    `container_root` is where local mode writes its compose files (each job or endpoint in a folder of its own);
    `listen`, the address an endpoint's port is published on (None: every interface, local mode's default).
    """
    import boto3
    from sagemaker.core.local import LocalSession

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


def containers(container_root: Path, *statuses: str) -> list[LocalContainer]:
    """The containers that local mode started from compose files under `container_root`, in one of `statuses`
    (Docker's: created, running, exited, ...; none given: any).

    Their compose working directory (a label) tells ours apart from every other container.
    """
    filters = [arg for status in statuses for arg in ("--filter", f"status={status}")]
    template = '{{.ID}} {{.Names}} {{.Label "com.docker.compose.project.working_dir"}}'
    listed = subprocess.run(
        ["docker", "ps", "-a", *filters, "--format", template], capture_output=True, text=True, check=False
    )
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
    running = [container.id for container in containers(container_root, "running")]
    if running:
        subprocess.run(["docker", "stop", "--time", str(grace_seconds), *running], capture_output=True, check=False)
    return len(running)


def remove_containers(container_root: Path, grace_seconds: int) -> int:
    """Remove every container that local mode started from compose files under `container_root`.

    docker-compose leaves its containers behind when a job ends or an endpoint stops, and may still be stopping
    them when local mode returns; running ones are stopped first (as `stop_running_containers`), so none is left
    whatever state compose's own shutdown reached. Returns how many were removed.
    """
    stop_running_containers(container_root, grace_seconds)
    ours = [container.id for container in containers(container_root)]
    if ours:
        subprocess.run(["docker", "rm", "--force", *ours], capture_output=True, check=False)
    return len(ours)


def run_training_job(session: Any, request: dict[str, Any]) -> None:
    """CreateTrainingJob in local mode, which runs the job to its end (it raises if a container fails)."""
    session.sagemaker_client.create_training_job(**request)


def deploy_endpoint(session: Any, name: str, hosting: Hosting) -> None:
    """CreateModel, CreateEndpointConfig and CreateEndpoint in local mode: returns once the container answers
    `/ping`; it serves while this process runs."""
    client = session.sagemaker_client
    client.create_model(**model_request(name, hosting))
    client.create_endpoint_config(**endpoint_config_request(name, hosting))
    client.create_endpoint(EndpointName=name, EndpointConfigName=name)


def delete_endpoint(session: Any, name: str) -> None:
    """Stop a local-mode endpoint's containers (docker-compose down) and forget its model and config."""
    client = session.sagemaker_client
    client.delete_endpoint(EndpointName=name)
    client.delete_endpoint_config(EndpointConfigName=name)
    client.delete_model(ModelName=name)


def transform(session: Any, name: str, hosting: Hosting, input_uri: str, output_uri: str, content_type: str) -> None:
    """Local mode's batch transform, to its end: the image's `serve` in Docker, every file under `input_uri` sent
    as one request, each answer written to `<output_uri>/<file>.out` (answers with an error too: local mode does
    not check the status)."""
    client = session.sagemaker_client
    client.create_model(**model_request(name, hosting))
    try:
        source = {"S3DataType": "S3Prefix", "S3Uri": input_uri}
        client.create_transform_job(**transform_request(name, hosting, source, content_type, output_uri))
    finally:
        client.delete_model(ModelName=name)
