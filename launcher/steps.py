"""The pipeline's steps — tune, train, deploy, predict — each recording its lineage; the `launcher` commands
and `launcher run` both call these."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from launcher import lineage
from launcher.backends.base import Backend, DeploySpec, TrainingSpec
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, TrainingJob, TuningRun
from launcher.tuning_spec import TuningSpec

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def record_dataset(backend: Backend, channels: dict[str, str]) -> dict[str, Any]:
    """Hash the job's input files into a manifest (once per tuning run or training job) and say so."""
    dataset = lineage.dataset_manifest(channels, backend.workdir / "manifests")
    if dataset["files"]:  # nothing to say of S3 data, which is named, not listed
        say(f"dataset {dataset['digest'][:12]}: {dataset['files']} files, {dataset['bytes'] / 1e6:.1f} MB "
            f"(manifest {dataset['manifest']})")  # fmt: skip
    return dataset


def tune(backend: Backend, spec: TuningSpec) -> TuningRun:
    """Run a tuning run; its record gets the dataset and code it tuned on. Fails if no trial completed."""
    dataset = record_dataset(backend, spec.training.channels)
    run = backend.tune(spec, backend.workdir / "tuning" / spec.name)
    run.lineage = {
        "dataset": dataset,
        "code_revision": lineage.code_revision(),
        "image": backend.image_identity(spec.training.image),
    }
    backend.records.save(run)
    if not run.best:
        raise LauncherError(f"tuning run {spec.name} ended without a completed trial; see the table above")
    say(f"best trial: job {run.best['job_name']}, {spec.objective_metric} {run.best['objective']:.6g}")
    say(f"best hyperparameters: {run.best['tuned_hyperparameters']}")
    return run


def train(backend: Backend, spec: TrainingSpec, tuning: TuningRun | None = None) -> TrainingJob:
    """Run a training job to completion; its record gets its lineage. Fails unless the job completed."""
    dataset = record_dataset(backend, spec.channels)
    job = backend.train(spec)
    job.lineage = lineage.training_lineage(dataset, backend.image_identity(spec.image), tuning, job.model_data)
    backend.records.save(job)
    if job.status != "Completed":
        raise LauncherError(f"training job {job.name} {job.status.lower()}: {job.failure_reason or ''}")
    test = job.test_metrics or {}
    if {"accuracy", "loss"} <= test.keys():
        outcome = f"test accuracy {test['accuracy']:.4f}, average test loss {test['loss']:.4f}"
    else:
        outcome = "its log reported no test metrics"
    say(f"training job {job.name} completed: {outcome}")
    say(f"model artifact: {job.model_data}")
    say(f"output artifact: {job.output_data}")
    return job


def deploy(backend: Backend, spec: DeploySpec) -> Endpoint:
    """Start an endpoint; its record gets the hash of the model it serves."""
    endpoint = backend.deploy(spec)
    endpoint.lineage = {"job_name": spec.job_name, "model_sha256": lineage.model_hash(spec.model_data)}
    backend.records.save(endpoint)
    return endpoint


def content_type_of(image: Path, given: str | None = None) -> str:
    """The request content type: as given, else from the file extension."""
    content_type = given or CONTENT_TYPES.get(image.suffix.lower()) or mimetypes.guess_type(image)[0]
    if content_type is None:
        raise LauncherError(f"cannot tell the content type of {image}; pass --content-type image/jpeg or image/png")
    return content_type


def predict(backend: Backend, endpoint: Endpoint, image: Path, content_type: str | None = None) -> Any:
    """Send an image file to an endpoint; return its decoded JSON answer."""
    if not image.is_file():
        raise LauncherError(f"no image file at {image}")
    return backend.predict(endpoint, image.read_bytes(), content_type_of(image, content_type))
