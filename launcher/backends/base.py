"""What a backend is, and the roles it may have: training, stopping a job early, hosting endpoints, swapping an
endpoint's model, batch transform, tuning as a service. A backend has a role
by implementing its class; the commands ask `isinstance`, never a flag, and refuse what a backend lacks by naming
those that have it (each role's `does` says what it is, for those messages)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from imgclf_contract import metrics
from launcher import transform
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, RecordStore, TrainingJob, TransformJob, TuningRun
from launcher.specs import BackendOptions, DeploySpec, TrainingSpec, TransformSpec
from launcher.tracking import Tracker
from launcher.tuning import TuningSpec


class Backend(ABC):
    """Runs the image somewhere; talks to it only through the SageMaker contract. Its roles are the classes below
    it implements."""

    name: ClassVar[str]
    does: ClassVar[str] = "run the image"  # what the role lets a backend do, for the messages that name who can
    Options: ClassVar[type[BackendOptions]] = BackendOptions  # what only this backend understands

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

    def default_endpoint_instance_type(self, training_instance_type: str | None) -> str:
        """What an endpoint runs on when no instance type is given: where its model trained, if known."""
        return training_instance_type or "local"

    def image_identity(self, image: str) -> dict[str, Any]:
        """The image a job ran in, for its lineage: its name (and digest where the name pins one)."""
        return {"image": image, "digest": image.split("@", 1)[1] if "@sha256:" in image else None}

    def check_model_data(self, model_data: str) -> None:
        """Refuse a model this backend cannot read, before anything starts. Here: models on this machine only."""
        if model_data.startswith(S3_SCHEME):
            raise LauncherError(
                f"the {self.name} backend reads a model.tar.gz on this machine, not {model_data}: download it first, "
                "or use a backend that reads S3 (--backend sagemaker)"
            )

    def model_archive(
        self, model_data: str, folder: Path, options: BackendOptions, job_name: str | None = None
    ) -> Path:
        """The model.tar.gz (of job `job_name`, if known) on this machine; a backend that reads models elsewhere
        downloads it into `folder`."""
        self.check_model_data(model_data)
        return Path(model_data)


class Trains(Backend):
    """Runs training jobs."""

    does: ClassVar[str] = "run training jobs"

    max_concurrent_jobs: ClassVar[int | None] = None  # training jobs it can run at once here; None: no limit

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


class StopsTraining(Trains):
    """Stops a running training job early (what the tuner here needs for early stopping)."""

    does: ClassVar[str] = "stop a running training job early"

    @abstractmethod
    def stop_training(self, job_name: str) -> None:
        """Stop a training job that `train` is running in another thread; it ends as Stopped."""

    def discard_checkpoints(self, job_name: str) -> None:
        """Free what a stopped job's checkpoints take once it will never resume (a trial stopped early)."""
        return None


class Hosts(Backend):
    """Serves models as endpoints."""

    does: ClassVar[str] = "host endpoints"

    @abstractmethod
    def deploy(self, spec: DeploySpec) -> Endpoint:
        """Start an endpoint and wait until it answers pings; return its record (also saved)."""

    @abstractmethod
    def predict(self, endpoint: Endpoint, body: bytes, content_type: str) -> Any:
        """Send one request to the endpoint; return the decoded JSON answer."""

    @abstractmethod
    def stop(self, endpoint: Endpoint) -> None:
        """Stop the endpoint and release what it holds; mark its record deleted."""


class SwapsModels(Hosts):
    """Replaces the model behind an endpoint with no failed request (promotion and rollback)."""

    does: ClassVar[str] = "replace an endpoint's model"

    @abstractmethod
    def swap_model(self, endpoint: Endpoint, spec: DeploySpec, reason: str) -> Endpoint:
        """Serve `spec`'s model behind the endpoint's name and address with no failed request; the record says which
        model serves (its `history` each one that did, and `reason`). If the new model cannot start, the old one
        keeps serving and this raises."""


class Transforms(Backend):
    """Classifies every image of a folder (batch transform), the way `launcher evaluate` scores a model too."""

    does: ClassVar[str] = "run batch transforms"

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

    def transform_inputs(self, spec: TransformSpec) -> list[str]:
        """The image files to classify, relative to the input. Here: a folder on this machine."""
        if spec.input.startswith(S3_SCHEME):
            raise LauncherError(
                f"the {self.name} backend reads images on this machine, not {spec.input}: download them first, or "
                "use a backend that reads S3 (--backend sagemaker)"
            )
        return transform.image_files(Path(spec.input))

    @abstractmethod
    def classify(
        self,
        spec: TransformSpec,
        job: TransformJob,
        files: list[str],
        predictions: transform.Predictions,
        progress: transform.Progress,
    ) -> None:
        """Classify `files`, adding a line to `predictions` and a tick to `progress` for each as it is answered."""


class TunesAsService(Trains):
    """Tunes with a service of its own (else the launcher tunes with Optuna here, each trial one of its jobs)."""

    does: ClassVar[str] = "tune with a service of its own"

    @abstractmethod
    def tune(self, spec: TuningSpec, folder: Path, parent_run: str | None) -> TuningRun:
        """Run the tuning to its end, writing its results table into `folder`; its record (trials under the MLflow
        run `parent_run`)."""
