"""What every backend does, and the specs the CLI hands it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from launcher.records import RecordStore


@dataclass(frozen=True)
class TrainingSpec:
    job_name: str
    channels: dict[str, str]  # channel name -> local folder (or s3:// URI on SageMaker)
    hyperparameters: dict[str, Any]
    output_path: str  # artifacts go to <output_path>/<job_name>/output/{model,output}.tar.gz
    instance_type: str = "local"
    instance_count: int = 1


@dataclass(frozen=True)
class DeploySpec:
    endpoint_name: str
    model_data: str  # a model.tar.gz
    job_name: str | None = None  # the job that produced it, if known
    port: int = 0  # 0: any free port
    workers: int | None = None  # model server workers; None: the server's default
    startup_timeout: float = 240.0  # SageMaker fails an endpoint whose pings do not pass within 4 minutes
    environment: dict[str, str] = field(default_factory=dict)


class Backend(ABC):
    """Runs the image's `train` and `serve` somewhere; talks to them only through the SageMaker contract."""

    name: ClassVar[str]

    def __init__(self, workdir: Path, records: RecordStore):
        self.workdir = workdir
        self.records = records

    @abstractmethod
    def train(self, spec: TrainingSpec) -> dict[str, Any]:
        """Run a training job to completion; return its record (also saved)."""

    @abstractmethod
    def deploy(self, spec: DeploySpec) -> dict[str, Any]:
        """Start an endpoint and wait until it answers pings; return its record (also saved)."""

    @abstractmethod
    def predict(self, endpoint: dict[str, Any], body: bytes, content_type: str) -> Any:
        """Send one request to the endpoint; return the decoded JSON answer."""

    @abstractmethod
    def stop(self, endpoint: dict[str, Any]) -> None:
        """Stop the endpoint and release what it holds; mark its record deleted."""
