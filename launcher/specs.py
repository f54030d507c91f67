"""What the commands hand a backend: a training job, an endpoint, a batch transform. Neutral: what only one backend
understands travels in `options`, an object of that backend's own `Options` class. How a model is served
(`EndpointSettings`, `TransformSettings`) is known before which model is: a loop plans with the settings and
completes them into a spec once it has the model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from imgclf_contract import platform
from launcher.records import Endpoint, TrainingJob, TransformJob

DEFAULT_IMAGE = "imgclf:latest"  # what `make build` tags


@dataclass(frozen=True)
class BackendOptions:
    """A backend's own options (none here). A backend with some subclasses this and names it as its `Options`; each
    field is also the command line's flag of that name (`max_run`: `--max-run`), refused on other backends."""


@dataclass(frozen=True)
class TrainingSpec:
    job_name: str
    channels: dict[str, str]  # channel name -> local folder or file (or s3:// URI where the backend reads S3)
    hyperparameters: dict[str, Any]
    # Artifacts go to <output_path>/<job_name>/output/{model,output}.tar.gz; None: the backend's default.
    output_path: str | None = None
    image: str = DEFAULT_IMAGE
    instance_type: str = "local"
    instance_count: int = 1
    echo: bool = True  # copy the job's log to the console (a tuner running several jobs turns it off)
    options: BackendOptions = field(default_factory=BackendOptions)

    def record(self, backend: str, **fields: Any) -> TrainingJob:
        """The job's record as it starts; `fields`: what the backend adds or says otherwise."""
        spec = {
            "image": self.image,
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "channels": dict(self.channels),
        }
        return TrainingJob(
            name=self.job_name, backend=backend, hyperparameters=self.hyperparameters, **{**spec, **fields}
        )


@dataclass(frozen=True, kw_only=True)
class EndpointSettings:
    """How a model is served behind an endpoint, whichever model: what `serve` completes into a DeploySpec."""

    image: str = DEFAULT_IMAGE
    instance_type: str = "local"
    port: int = 0  # 0: any free port
    listen: str = "127.0.0.1"  # endpoints on this machine: the address they listen on; 0.0.0.0: the network
    workers: int | None = None  # model server workers; None: the server's default
    startup_timeout: float = 240.0  # SageMaker fails an endpoint whose pings do not pass within 4 minutes
    environment: dict[str, str] = field(default_factory=dict)
    options: BackendOptions = field(default_factory=BackendOptions)

    def serve(self, endpoint_name: str, model_data: str, job_name: str | None = None) -> DeploySpec:
        """The endpoint `endpoint_name` serving `model_data` (of training job `job_name`, if known) this way."""
        return DeploySpec(endpoint_name=endpoint_name, model_data=model_data, job_name=job_name, **_own(self))

    def serving_environment(self) -> dict[str, str]:
        """The serving container's variables: the given ones, and the worker count if one was chosen."""
        workers = {platform.MODEL_SERVER_WORKERS_ENV: str(self.workers)} if self.workers else {}
        return {**self.environment, **workers}


@dataclass(frozen=True, kw_only=True)
class DeploySpec(EndpointSettings):
    endpoint_name: str
    model_data: str  # a model.tar.gz
    job_name: str | None = None  # the job that produced it, if known

    def record(self, backend: str, **fields: Any) -> Endpoint:
        """The endpoint's record as it starts; `fields`: what the backend adds."""
        return Endpoint(
            name=self.endpoint_name,
            backend=backend,
            image=self.image,
            model_data=self.model_data,
            job_name=self.job_name,
            instance_type=self.instance_type,
            **fields,
        )


@dataclass(frozen=True, kw_only=True)
class TransformSettings:
    """How a batch transform serves its model, whichever model and images: what `classify` completes into a
    TransformSpec."""

    image: str = DEFAULT_IMAGE
    instance_type: str = "local"
    top_k: int = 5
    concurrency: int | None = None  # requests at once; None: what the model server asks for (/execution-parameters)
    startup_timeout: float = 240.0
    options: BackendOptions = field(default_factory=BackendOptions)

    def classify(
        self, name: str, model_data: str, input: str, output: Path, job_name: str | None = None, logits: bool = False
    ) -> TransformSpec:
        """The transform `name` classifying the images under `input` with `model_data` this way, into `output`."""
        spec = {"model_data": model_data, "input": input, "output": output, "job_name": job_name, "logits": logits}
        return TransformSpec(name=name, **spec, **_own(self))

    def serving_environment(self) -> dict[str, str]:
        """The model server's variables for a transform: how many classes to answer, and bad images answered as
        records (200 with the error), so that one bad file does not fail a SageMaker transform job."""
        return {"IMGCLF_TOP_K": str(self.top_k), "IMGCLF_ERRORS_AS_RECORDS": "true"}


@dataclass(frozen=True, kw_only=True)
class TransformSpec(TransformSettings):
    name: str
    model_data: str  # a model.tar.gz (a path here, or an s3:// URI)
    input: str  # a folder of images (any depth), or an s3:// prefix on backends that read S3
    output: Path  # this machine's folder for predictions.jsonl and summary.json
    job_name: str | None = None  # the training job that produced the model, if known
    logits: bool = False  # keep every class's logit in each line

    def record(self, backend: str, **fields: Any) -> TransformJob:
        return TransformJob(
            name=self.name,
            backend=backend,
            model_data=self.model_data,
            job_name=self.job_name,
            image=self.image,
            instance_type=self.instance_type,
            input=self.input,
            output=str(self.output),
            **fields,
        )


def _own(settings: EndpointSettings | TransformSettings) -> dict[str, Any]:
    """The settings' own fields (a spec's, those of the settings it extends), as they are."""
    kind = EndpointSettings if isinstance(settings, EndpointSettings) else TransformSettings
    return {f.name: getattr(settings, f.name) for f in fields(kind)}
