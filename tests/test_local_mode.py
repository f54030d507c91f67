"""launcher.backends.local_mode against local mode's own code (sagemaker-core): the compose file local mode would
hand docker-compose is generated and read back (no engine needed, but local mode insists on docker-compose)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sagemaker.core.local.image import _SageMakerContainer

from launcher.backends import local_mode


@pytest.fixture
def offline_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from the environment, so boto3 looks nowhere else (no instance-metadata call)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def serving_ports(session, tmp_path: Path) -> list[list[str]]:
    container = _SageMakerContainer("local", 1, "imgclf:test", sagemaker_session=session)
    container.container_root = str(tmp_path)
    compose = container._generate_compose_file("serve")
    return [service["ports"] for service in compose["services"].values()]


@pytest.mark.docker
@pytest.mark.usefixtures("offline_credentials")
def test_a_local_endpoint_is_published_on_the_given_address_only(tmp_path: Path):
    session = local_mode.session(serving_port=18123, container_root=tmp_path, listen="127.0.0.1")
    assert serving_ports(session, tmp_path) == [["127.0.0.1:18123:8080"]]
    # Where local mode connects (its runtime client's invocations, its pings) it formats the bare number.
    port = session.sagemaker_runtime_client.serving_port
    assert port == 18123 and "%d" % port == "18123"  # noqa: UP031 (local mode's way)


@pytest.mark.docker
@pytest.mark.usefixtures("offline_credentials")
def test_without_an_address_local_mode_publishes_on_every_interface(tmp_path: Path):
    session = local_mode.session(serving_port=18123, container_root=tmp_path)
    assert serving_ports(session, tmp_path) == [["18123:8080"]]
