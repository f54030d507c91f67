"""The pipeline's steps — tune, train, deploy, predict, transform, evaluate — each recording its lineage; the
`launcher` commands and `launcher run` both call these."""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import time
from pathlib import Path
from typing import Any

from launcher import evaluation, evaluation_page, lineage
from launcher.backends.base import Backend, DeploySpec, TrainingSpec, TransformSpec
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, Evaluation, TrainingJob, TransformJob, TuningRun
from launcher.transform import CONTENT_TYPES, PREDICTIONS_FILE, SUMMARY_FILE, Predictions, image_files
from launcher.tuning_spec import TuningSpec


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


def transform(backend: Backend, spec: TransformSpec) -> TransformJob:
    """Run a batch transform; its record gets the model's hash and the input's manifest. Fails if nothing was
    classified."""
    dataset = record_dataset(backend, {"input": spec.input})
    job = backend.transform(spec)
    job.lineage = {"job_name": spec.job_name, "model_sha256": lineage.model_hash(spec.model_data), "dataset": dataset}
    backend.records.save(job)
    if job.status != "Completed":
        raise LauncherError(f"transform {job.name} {job.status.lower()}: {job.failure_reason or ''}")
    failed = f"; {job.failed} could not be (listed with the reason)" if job.failed else ""
    say(f"transform {job.name}: {job.classified} of {job.files} files classified{failed}")
    say(f"predictions: {Path(job.output) / PREDICTIONS_FILE}; summary: {Path(job.output) / SUMMARY_FILE}")
    return job


def evaluate(backend: Backend, spec: TransformSpec, data: Path) -> Evaluation:
    """Classify the labelled images under `data` (its test/ split, if it has one) with `spec`'s model; write
    `<spec.output>/evaluation.json` and `evaluation.html`; record the evaluation with the model's lineage."""
    classes = evaluation.model_classes(backend.model_archive(spec.model_data, spec.aws, spec.output))
    root = evaluation.labelled_root(data)
    labels = evaluation.labels_of(image_files(root))
    job = transform(backend, dataclasses.replace(spec, input=str(root), logits=True, output=spec.output / "transform"))
    scored, left_out = evaluation.score(classes, labels, Predictions(Path(job.output) / PREDICTIONS_FILE).lines())
    result = {"model": spec.model_data, "data": str(root), **evaluation.evaluate(classes, scored, left_out)}
    report = spec.output / "evaluation.json"
    report.write_text(json.dumps(result, indent=1))
    page = spec.output / "evaluation.html"
    page.write_text(evaluation_page.render(result, root, f"Evaluation {spec.name}: {root}"))
    figures = {key: result[key] for key in ("images", "accuracy", "top_k", "top_k_accuracy", "loss")}
    origin = {"job_name": spec.job_name, "model_sha256": lineage.model_hash(spec.model_data),
              "dataset": (job.lineage or {}).get("dataset")}  # fmt: skip
    record = Evaluation(
        name=spec.name,
        backend=backend.name,
        status="Completed",
        ended=time.time(),
        model_data=spec.model_data,
        job_name=spec.job_name,
        data=str(root),
        transform=job.name,
        report=str(report),
        page=str(page),
        metrics={**figures, "unknown_classes": result["unknown_classes"], "failed": len(result["failed"])},
        lineage=origin,
    )
    backend.records.save(record)
    say(
        f"evaluation {spec.name} on {result['images']} images: accuracy {result['accuracy']:.4f}, "
        f"top-{result['top_k']} accuracy {result['top_k_accuracy']:.4f}, average loss {result['loss']:.4f}"
    )
    if result["unknown_classes"]:
        say(f"left out, classes the model does not know: {result['unknown_classes']}")
    say(f"report: {page} (and {report.name})")
    return record
