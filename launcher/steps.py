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
from launcher.tuning import run_tuning
from launcher.tuning_spec import TuningSpec

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def record_dataset(backend: Backend, channels: dict[str, str]) -> dict[str, Any]:
    """Hash the job's input files into a manifest (once per tuning run or training job) and say so."""
    dataset = lineage.dataset_manifest(channels, backend.workdir / "manifests")
    if dataset["files"]:  # nothing to say of S3 data, which is named, not listed
        say(f"dataset {dataset['digest'][:12]}: {dataset['files']} files, {dataset['bytes'] / 1e6:.1f} MB "
            f"(manifest {dataset['manifest']})")  # fmt: skip
    return dataset


def tune(backend: Backend, spec: TuningSpec) -> dict[str, Any]:
    """Run a tuning run; its record gets the dataset and code it tuned on. Fails if no trial completed."""
    dataset = record_dataset(backend, spec.training.channels)
    record = run_tuning(spec, backend, backend.workdir, backend.records)
    record["lineage"] = {
        "dataset": dataset,
        "code_revision": lineage.code_revision(),
        "image": backend.image_identity(spec.training.image),
    }
    backend.records.save("tuning", record)
    best = record.get("best")
    if not best:
        raise LauncherError(f"tuning run {spec.name} ended without a completed trial; see the table above")
    say(f"best trial: job {best['job_name']}, {spec.objective_metric} {best['objective']:.6g}")
    say(f"best hyperparameters: {best['tuned_hyperparameters']}")
    return record


def train(backend: Backend, spec: TrainingSpec, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a training job to completion; its record gets its lineage. Fails unless the job completed."""
    dataset = record_dataset(backend, spec.channels)
    record = backend.train(spec)
    image = backend.image_identity(spec.image)
    record["lineage"] = lineage.training_lineage(dataset, image, tuning, record.get("model_data"))
    backend.records.save("jobs", record)
    if record["status"] != "Completed":
        raise LauncherError(
            f"training job {spec.job_name} {record['status'].lower()}: {record.get('failure_reason', '')}"
        )
    test = record.get("test_metrics") or {}
    say(
        f"training job {spec.job_name} completed: test accuracy {test.get('accuracy', float('nan')):.4f}, "
        f"average test loss {test.get('loss', float('nan')):.4f}"
    )
    say(f"model artifact: {record['model_data']}")
    say(f"output artifact: {record['output_data']}")
    return record


def deploy(backend: Backend, spec: DeploySpec) -> dict[str, Any]:
    """Start an endpoint; its record gets the hash of the model it serves."""
    record = backend.deploy(spec)
    record["lineage"] = {"job_name": spec.job_name, "model_sha256": lineage.model_hash(spec.model_data)}
    backend.records.save("endpoints", record)
    return record


def content_type_of(image: Path, given: str | None = None) -> str:
    """The request content type: as given, else from the file extension."""
    content_type = given or CONTENT_TYPES.get(image.suffix.lower()) or mimetypes.guess_type(image)[0]
    if content_type is None:
        raise LauncherError(f"cannot tell the content type of {image}; pass --content-type image/jpeg or image/png")
    return content_type


def predict(backend: Backend, endpoint: dict[str, Any], image: Path, content_type: str | None = None) -> Any:
    """Send an image file to an endpoint; return its decoded JSON answer."""
    if not image.is_file():
        raise LauncherError(f"no image file at {image}")
    return backend.predict(endpoint, image.read_bytes(), content_type_of(image, content_type))
