"""What every backend does, and the specs the CLI hands it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from imgclf_contract import metrics, platform
from launcher import transform
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, RecordStore, TrainingJob, TransformJob
from launcher.tracking import Tracker

MAX_RUN_SECONDS = 86400  # SageMaker's default limit on a training job's run time
DEFAULT_IMAGE = "imgclf:latest"  # what `make build` tags


@dataclass(frozen=True)
class AwsOptions:
    """What the user said about AWS on the command line; None: take it from the environment."""

    role: str | None = None  # IAM role ARN the job runs as
    bucket: str | None = None  # S3 bucket for artifacts and uploaded inputs
    region: str | None = None


@dataclass(frozen=True)
class TrainingSpec:
    job_name: str
    channels: dict[str, str]  # channel name -> local folder or file (or s3:// URI on SageMaker)
    hyperparameters: dict[str, Any]
    # Artifacts go to <output_path>/<job_name>/output/{model,output}.tar.gz; None: the backend's default.
    output_path: str | None = None
    image: str = DEFAULT_IMAGE
    instance_type: str = "local"
    instance_count: int = 1
    aws: AwsOptions = field(default_factory=AwsOptions)
    sagemaker_debugger: bool = False  # SageMaker Debugger's hook, rules and profiler (sagemaker backend)
    spot: bool = False  # managed spot training (sagemaker backend)
    max_run: int = MAX_RUN_SECONDS  # seconds a sagemaker job may run
    max_wait: int | None = None  # spot: seconds to wait for capacity and run, >= max_run; None: 2 * max_run
    echo: bool = True  # copy the job's log to the console (a tuner running several jobs turns it off)

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


@dataclass(frozen=True)
class DeploySpec:
    endpoint_name: str
    model_data: str  # a model.tar.gz
    job_name: str | None = None  # the job that produced it, if known
    image: str = DEFAULT_IMAGE
    instance_type: str = "local"
    port: int = 0  # 0: any free port
    listen: str = "127.0.0.1"  # process, local backends: the address the endpoint listens on; 0.0.0.0: the network
    workers: int | None = None  # model server workers; None: the server's default
    startup_timeout: float = 240.0  # SageMaker fails an endpoint whose pings do not pass within 4 minutes
    environment: dict[str, str] = field(default_factory=dict)
    aws: AwsOptions = field(default_factory=AwsOptions)  # sagemaker backend
    inference_ami_version: str = "auto"  # sagemaker backend: the hosts' AMI (NVIDIA driver); auto, none or a version
    rollback_alarms: tuple[str, ...] = ()  # sagemaker backend: CloudWatch alarms that roll a model swap back

    def serving_environment(self) -> dict[str, str]:
        """The serving container's variables: the given ones, and the worker count if one was chosen."""
        workers = {platform.MODEL_SERVER_WORKERS_ENV: str(self.workers)} if self.workers else {}
        return {**self.environment, **workers}

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


@dataclass(frozen=True)
class TransformSpec:
    name: str
    model_data: str  # a model.tar.gz (a path here, or an s3:// URI)
    input: str  # a folder of images (any depth), or an s3:// prefix on backends that read S3
    output: Path  # this machine's folder for predictions.jsonl and summary.json
    job_name: str | None = None  # the training job that produced the model, if known
    image: str = DEFAULT_IMAGE
    instance_type: str = "local"
    logits: bool = False  # keep every class's logit in each line
    top_k: int = 5
    concurrency: int | None = None  # requests at once; None: what the model server asks for (/execution-parameters)
    startup_timeout: float = 240.0
    aws: AwsOptions = field(default_factory=AwsOptions)  # sagemaker backend
    ami_version: str | None = None  # sagemaker backend: TransformAmiVersion (the hosts' NVIDIA driver)

    def serving_environment(self) -> dict[str, str]:
        """The model server's variables for a transform: how many classes to answer, and bad images answered as
        records (200 with the error), so that one bad file does not fail a SageMaker transform job."""
        return {"IMGCLF_TOP_K": str(self.top_k), "IMGCLF_ERRORS_AS_RECORDS": "true"}

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


class Backend(ABC):
    """Runs the image's `train` and `serve` somewhere; talks to them only through the SageMaker contract."""

    name: ClassVar[str]
    max_concurrent_jobs: ClassVar[int | None] = None  # training jobs it can run at once here; None: no limit
    # What only some backends offer; the CLI refuses the flags that ask for them elsewhere, naming who has them.
    spot: ClassVar[bool] = False  # managed spot capacity for training
    sagemaker_debugger: ClassVar[bool] = False  # SageMaker Debugger's hook, rules and profiler
    models_in_s3: ClassVar[bool] = False  # deploys a model.tar.gz from S3 (else only one on this machine)
    rollback_alarms: ClassVar[bool] = False  # a model swap that alarms roll back
    native_tuner: ClassVar[bool] = False  # tunes with its own service (else Optuna here, each trial one of its jobs)

    def __init__(self, workdir: Path, records: RecordStore, tracker: Tracker | None = None):
        self.workdir = workdir
        self.records = records
        self.tracker = tracker or Tracker.off()

    def output_dir_on_host(self, spec: TrainingSpec) -> Path:
        """Where a backend on this machine puts a job's artifacts: the given folder, or <workdir>/output."""
        if spec.output_path is None:
            return self.workdir / "output"
        if spec.output_path.startswith(S3_SCHEME):
            raise LauncherError(
                f"the {self.name} backend writes artifacts on this machine: give --output a folder, "
                f"not {spec.output_path}"
            )
        return Path(spec.output_path)

    def new_endpoint_dir(self, name: str) -> Path:
        folder = self.workdir / "endpoints" / name
        if folder.exists():
            raise LauncherError(f"endpoint folder {folder} already exists; choose another endpoint name")
        folder.mkdir(parents=True)
        return folder

    def train(self, spec: TrainingSpec) -> TrainingJob:
        """Run a training job to its end: launch it, follow it, then record its outcome and test metrics.

        The record is saved as each step ends. On Ctrl-C, `interrupted` says what became of the job."""
        job = self.launch(spec)
        self.records.save(job)
        try:
            final_metrics = self.run_to_end(job, spec)
        except KeyboardInterrupt:
            self.interrupted(job)
            raise
        if job.status == "Completed":
            job.test_metrics = metrics.test_metrics(final_metrics)
        job.ended = job.ended or time.time()
        self.records.save(job)
        return job

    @abstractmethod
    def launch(self, spec: TrainingSpec) -> TrainingJob:
        """Check the spec, prepare the job's inputs (and start it where it runs elsewhere); its record."""

    @abstractmethod
    def run_to_end(self, job: TrainingJob, spec: TrainingSpec) -> dict[str, float]:
        """Run or watch the job to its end, its log shown; set its status, failure reason and artifacts. Returns the
        final value of each metric its log printed (imgclf_contract.metrics names them)."""

    def interrupted(self, job: TrainingJob) -> None:
        """Ctrl-C while following: a job on this machine has been stopped with the launcher."""
        job.status, job.failure_reason, job.ended = "Stopped", "interrupted by the user", time.time()
        self.records.save(job)

    def stop_training(self, job_name: str) -> None:
        """Stop a training job that `train` is running in another thread (a tuner stopping a trial early)."""
        raise LauncherError(f"the {self.name} backend cannot stop a running training job early")

    def discard_checkpoints(self, job_name: str) -> None:
        """Free what a stopped job's checkpoints take once it will never resume (a trial stopped early). Only
        jobs run on this machine keep them here; local-mode containers keep them inside the container."""
        return None

    def default_endpoint_instance_type(self, training_instance_type: str | None) -> str:
        """What an endpoint runs on when no instance type is given: where its model trained, if known."""
        return training_instance_type or "local"

    def image_identity(self, image: str) -> dict[str, Any]:
        """The image a job ran in, for its lineage: its name (and digest where the name pins one)."""
        return {"image": image, "digest": image.split("@", 1)[1] if "@sha256:" in image else None}

    def transform(self, spec: TransformSpec) -> TransformJob:
        """Classify every image of the input into `<output>/predictions.jsonl`, skipping the files an earlier run
        into the same output finished; write `<output>/summary.json`. Ctrl-C keeps what was written."""
        files = self.transform_inputs(spec)
        batch = transform.Batch.open(spec.output, spec.model_data)
        finished = batch.predictions.finished().intersection(files)
        todo = [file for file in files if file not in finished]
        job = spec.record(self.name, files=len(files), status="InProgress")
        self.records.save(job)
        earlier = f" ({len(finished)} finished by an earlier run)" if finished else ""
        say(f"transform {spec.name}: {len(todo)} of {len(files)} files to classify{earlier}")
        progress = transform.Progress(f"transform {spec.name}", len(files), len(finished))
        try:
            if todo:
                self.classify(spec, job, todo, batch.predictions, progress)
        except KeyboardInterrupt:
            job.status, job.failure_reason, job.ended = "Stopped", "interrupted by the user", time.time()
            self.records.save(job)
            raise
        except LauncherError as err:
            job.status, job.failure_reason, job.ended = "Failed", str(err), time.time()
            self.records.save(job)
            raise
        progress.show()
        summary = transform.summarise(files, batch.predictions.lines(), progress.elapsed(), progress.new)
        batch.write_summary(summary)
        job.classified, job.failed = summary["classified"], summary["failed"] + summary["missing"]
        job.status = "Completed" if summary["classified"] else "Failed"
        if not summary["classified"]:
            job.failure_reason = "no file could be classified; see " + str(batch.predictions.path)
        job.ended = time.time()
        self.records.save(job)
        return job

    def model_archive(self, model_data: str, aws: AwsOptions, folder: Path) -> Path:
        """The model.tar.gz on this machine (a backend that reads models in S3 downloads it into `folder`)."""
        return Path(model_data)

    def transform_inputs(self, spec: TransformSpec) -> list[str]:
        """The image files to classify, relative to the input. Here: a folder on this machine."""
        if spec.input.startswith(S3_SCHEME):
            raise LauncherError(
                f"the {self.name} backend reads images on this machine, not {spec.input}: download them first, or "
                "use --backend sagemaker"
            )
        return transform.image_files(Path(spec.input))

    def classify(
        self,
        spec: TransformSpec,
        job: TransformJob,
        files: list[str],
        predictions: transform.Predictions,
        progress: transform.Progress,
    ) -> None:
        """Classify `files`, adding a line to `predictions` and a tick to `progress` for each as it is answered."""
        raise LauncherError(f"the {self.name} backend has no batch transform")

    @abstractmethod
    def deploy(self, spec: DeploySpec) -> Endpoint:
        """Start an endpoint and wait until it answers pings; return its record (also saved)."""

    @abstractmethod
    def predict(self, endpoint: Endpoint, body: bytes, content_type: str) -> Any:
        """Send one request to the endpoint; return the decoded JSON answer."""

    def swap_model(self, endpoint: Endpoint, spec: DeploySpec, reason: str) -> Endpoint:
        """Serve `spec`'s model behind the endpoint's name and address with no failed request; the record says which
        model serves (its `history` each one that did, and `reason`). If the new model cannot start, the old one
        keeps serving and this raises."""
        raise LauncherError(f"the {self.name} backend cannot replace an endpoint's model")

    @abstractmethod
    def stop(self, endpoint: Endpoint) -> None:
        """Stop the endpoint and release what it holds; mark its record deleted."""
