"""The retrain loop's steps — tune, train, deploy, predict, transform, evaluate — each recording its lineage; the
`launcher` commands and `launcher run` both call these."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import mimetypes
import time
from pathlib import Path
from typing import Any

from imgclf_contract import metrics
from launcher import evaluation, evaluation_page, lineage, preflight, report
from launcher.backends import (
    Backend,
    DeploySpec,
    Hosts,
    TrainingSpec,
    Trains,
    Transforms,
    TransformSpec,
    TunesAsService,
)
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, Evaluation, TrainingJob, TransformJob, TuningRun
from launcher.transform import CONTENT_TYPES, PREDICTIONS_FILE, SUMMARY_FILE, Predictions, image_files
from launcher.tuning import OptunaTuner, TuningSpec

MATRIX_FILE = "confusion_matrix.png"  # beside an evaluation's page


def record_dataset(backend: Backend, channels: dict[str, str]) -> dict[str, Any]:
    """Hash the job's input files into a manifest (once per tuning run or training job) and say so."""
    dataset = lineage.dataset_manifest(channels, backend.workdir / "manifests")
    if dataset["files"]:  # nothing to say of S3 data, which is named, not listed
        say(
            f"dataset {dataset['digest'][:12]}: {dataset['files']} files, {dataset['bytes'] / 1e6:.1f} MB "
            f"(manifest {dataset['manifest']})"
        )
    return dataset


def tune(backend: Trains, spec: TuningSpec) -> TuningRun:
    """Run a tuning run (an MLflow parent run, its trials children); its record gets the dataset and code it tuned
    on. Fails if no trial completed, or before anything starts if the image would refuse its trials."""
    preflight.check_tuning(spec)
    dataset = record_dataset(backend, spec.training.channels)
    tracker = backend.tracker
    parent = tracker.start(
        spec.name, "tuning", params=spec.tracked_params(), tags={"imgclf.backend": backend.name}, reuse=True
    )
    with tracker.ending_on_error(parent):
        folder = backend.workdir / "tuning" / spec.name
        if isinstance(backend, TunesAsService):
            run = backend.tune(spec, folder, parent)
        else:
            run = OptunaTuner(spec, backend, folder, parent).run()
    run.mlflow_run = parent
    run.lineage = {
        "dataset": dataset,
        "code_revision": lineage.code_revision(),
        "image": backend.image_identity(spec.training.image),
    }
    backend.records.save(run)
    tracker.log_dataset(parent, dataset)
    if run.best:
        tracker.log_metrics(parent, {f"best {spec.objective_metric}": run.best["objective"]})
        tracker.set_tags(parent, {"imgclf.best_job": run.best["job_name"]})
    tracker.log_artifacts(parent, [Path(p) for p in (run.results, run.plot) if p])
    tracker.end(parent, run.status, run.failure_reason)
    if not run.best:
        raise LauncherError(f"tuning run {spec.name} ended without a completed trial; see the table above")
    say(f"best trial: job {run.best['job_name']}, {spec.objective_metric} {run.best['objective']:.6g}")
    say(f"best hyperparameters: {run.best['tuned_hyperparameters']}")
    return run


def train(backend: Trains, spec: TrainingSpec, tuning: TuningRun | None = None) -> TrainingJob:
    """Run a training job to completion as an MLflow run; its record gets its lineage, its model a version in the
    model registry. Fails unless the job completed, or before anything starts if the image would refuse it."""
    preflight.check_training(spec)
    dataset = record_dataset(backend, spec.channels)
    run_id = start_training_run(backend, spec.job_name, spec.instance_type, spec.hyperparameters, tuning)
    with backend.tracker.ending_on_error(run_id):
        job = backend.train(spec)
    return record_model(backend, job, run_id, dataset, backend.image_identity(spec.image), tuning)


def take_best_trial(backend: Trains, tuning: TuningRun) -> TrainingJob:
    """The tuning run's best trial as the model, recorded as `train` records a job's (lineage, MLflow run,
    registered version): a configuration already trained is not trained a second time."""
    job = backend.records.load(TrainingJob, tuning.best["job_name"])
    say(f"the model: best trial {job.name}'s (trained with {tuning.best['tuned_hyperparameters']})")
    trials = tuning.lineage or {}  # the dataset and image the trials ran on
    dataset = trials.get("dataset") or record_dataset(backend, job.channels)
    image = trials.get("image") or backend.image_identity(job.image or tuning.image or "")
    run_id = start_training_run(backend, job.name, job.instance_type, job.hyperparameters, tuning)
    return record_model(backend, job, run_id, dataset, image, tuning)


def start_training_run(
    backend: Trains,
    job_name: str,
    instance_type: str | None,
    hyperparameters: dict[str, Any],
    tuning: TuningRun | None,
) -> str | None:
    """The MLflow run of a job whose model the launcher keeps; its id."""
    tags = {
        "imgclf.backend": backend.name,
        "imgclf.job_name": job_name,
        "imgclf.instance_type": instance_type,
        "imgclf.tuning_run": tuning.name if tuning else None,
        "imgclf.tuning_mlflow_run": tuning.mlflow_run if tuning else None,
    }
    return backend.tracker.start(job_name, "training", params=hyperparameters, tags=tags)


def record_model(
    backend: Trains,
    job: TrainingJob,
    run_id: str | None,
    dataset: dict[str, Any],
    image: dict[str, Any],
    tuning: TuningRun | None,
) -> TrainingJob:
    """A job that ended: its lineage (`image`: the backend's identity of its image) and MLflow run recorded, its
    model registered; fails unless it completed."""
    job.lineage = lineage.training_lineage(dataset, image, tuning, job.model_data)
    job.mlflow_run = run_id
    backend.records.save(job)
    if run_id:
        job.model_version = track_training(backend, job, run_id, dataset)
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
    if job.model_version:
        say(f"registered model: {job.model_version}")
    return job


def track_training(backend: Backend, job: TrainingJob, run_id: str, dataset: dict[str, Any]) -> str | None:
    """What a finished training job's MLflow run gets: its epochs' and test metrics, its dataset, its identity as
    tags, its report page, metrics.json and log, and (once completed) its model as a registered version."""
    tracker, facts = backend.tracker, job.lineage or {}
    log = Path(job.log) if job.log and Path(job.log).is_file() else None
    for epoch, values in metrics.epochs(log.read_text(errors="replace")) if log else []:
        tracker.log_metrics(run_id, values, step=epoch)
    tracker.log_metrics(
        run_id, {name: (job.test_metrics or {}).get(key) for name, key in metrics.TEST_METRIC_KEYS.items()}
    )
    tracker.log_dataset(run_id, dataset)
    identity = {
        "imgclf.code_revision": facts.get("code_revision"),
        "imgclf.image": (facts.get("image") or {}).get("image"),
        "imgclf.image_digest": (facts.get("image") or {}).get("digest"),
        "imgclf.model_sha256": facts.get("model_sha256"),
        "imgclf.model_data": job.model_data,
    }
    tracker.set_tags(run_id, identity)
    files = [log] if log else []
    if job.status == "Completed" and job.output_data:
        with contextlib.suppress(LauncherError):  # a job without a report still gets its run
            files += report.job_report_files(job, backend.workdir / "reports" / job.name)
    tracker.log_artifacts(run_id, files)
    version = None
    if job.status == "Completed" and job.model_data:
        version_tags = {
            "model_sha256": facts.get("model_sha256"),
            "image": identity["imgclf.image"],
            "job_name": job.name,
            "test_metrics": job.test_metrics,
            "backend": backend.name,
        }
        version = tracker.register_model(run_id, job.model_data, version_tags)
    tracker.end(run_id, job.status, job.failure_reason)
    return version


def deploy(backend: Hosts, spec: DeploySpec) -> Endpoint:
    """Start an endpoint; its record gets the hash of the model it serves, and the model's MLflow run and version a
    tag saying where it serves."""
    endpoint = backend.deploy(spec)
    endpoint.lineage = {"job_name": spec.job_name, "model_sha256": lineage.model_hash(spec.model_data)}
    job = job_record(backend, spec.job_name)
    endpoint.mlflow_run = job.mlflow_run if job else None
    backend.records.save(endpoint)
    track_endpoint(backend, endpoint, "deployed")
    return endpoint


def stop(backend: Hosts, endpoint: Endpoint) -> None:
    """Stop an endpoint; the model's MLflow run and version say when it stopped serving there."""
    backend.stop(endpoint)
    track_endpoint(backend, endpoint, "stopped")


def job_record(backend: Backend, job_name: str | None) -> TrainingJob | None:
    """The recorded training job of that name, if there is one."""
    return (
        backend.records.load(TrainingJob, job_name)
        if job_name and backend.records.exists(TrainingJob, job_name)
        else None
    )


def track_endpoint(backend: Backend, endpoint: Endpoint, event: str) -> None:
    """The tag trail of where a model served: `imgclf.endpoint.<name>.<event>` on its job's run and model version."""
    job = job_record(backend, endpoint.job_name)
    if job is None or not job.mlflow_run:
        return
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sha = (endpoint.lineage or {}).get("model_sha256") or (job.lineage or {}).get("model_sha256")
    tags = {f"imgclf.endpoint.{endpoint.name}.{event}": f"{when} {endpoint.backend} model_sha256={sha}"}
    backend.tracker.set_tags(job.mlflow_run, tags)
    backend.tracker.tag_model_version(job.model_version, tags)


def content_type_of(image: Path, given: str | None = None) -> str:
    """The request content type: as given, else from the file extension."""
    content_type = given or CONTENT_TYPES.get(image.suffix.lower()) or mimetypes.guess_type(image)[0]
    if content_type is None:
        raise LauncherError(f"cannot tell the content type of {image}; pass --content-type image/jpeg or image/png")
    return content_type


def predict(backend: Hosts, endpoint: Endpoint, image: Path, content_type: str | None = None) -> Any:
    """Send an image file to an endpoint; return its decoded JSON answer."""
    if not image.is_file():
        raise LauncherError(f"no image file at {image}")
    return backend.predict(endpoint, image.read_bytes(), content_type_of(image, content_type))


def use_run(backend: Backend, kind: str, name: str, job_name: str | None, parent: str | None = None) -> str | None:
    """The MLflow run of a use of a model (an evaluation, a transform), linked to the run of the job that made it."""
    job = job_record(backend, job_name)
    tags = {
        "imgclf.backend": backend.name,
        "imgclf.job_name": job_name,
        "imgclf.training_run": job.mlflow_run if job else None,
    }
    return backend.tracker.start(name, kind, parent=parent, tags=tags)


def transform(backend: Transforms, spec: TransformSpec, parent_run: str | None = None) -> TransformJob:
    """Run a batch transform as an MLflow run; its record gets the model's hash and the input's manifest. Fails if
    nothing was classified."""
    dataset = record_dataset(backend, {"input": spec.input})
    tracker = backend.tracker
    run_id = use_run(backend, "transform", spec.name, spec.job_name, parent_run)
    with tracker.ending_on_error(run_id):
        job = backend.transform(spec)
    job.lineage = {"job_name": spec.job_name, "model_sha256": lineage.model_hash(spec.model_data), "dataset": dataset}
    job.mlflow_run = run_id
    backend.records.save(job)
    tracker.log_dataset(run_id, dataset)
    tracker.log_metrics(run_id, {"files": job.files, "classified": job.classified, "failed": job.failed})
    tracker.log_artifacts(run_id, [Path(job.output) / SUMMARY_FILE])
    tracker.end(run_id, job.status, job.failure_reason)
    if job.status != "Completed":
        raise LauncherError(f"transform {job.name} {job.status.lower()}: {job.failure_reason or ''}")
    failed = f"; {job.failed} could not be (listed with the reason)" if job.failed else ""
    say(f"transform {job.name}: {job.classified} of {job.files} files classified{failed}")
    say(f"predictions: {Path(job.output) / PREDICTIONS_FILE}; summary: {Path(job.output) / SUMMARY_FILE}")
    return job


def evaluate(backend: Transforms, spec: TransformSpec) -> Evaluation:
    """Classify the labelled images under `spec.input` (its test/ split, if it has one) with `spec`'s model; write
    `<spec.output>/evaluation.json` and `evaluation.html`; record the evaluation with the model's lineage."""
    tracker = backend.tracker
    run_id = use_run(backend, "evaluation", spec.name, spec.job_name)
    with tracker.ending_on_error(run_id):
        record = _evaluate(backend, spec, run_id)
    tracker.log_metrics(run_id, {k: v for k, v in record.metrics.items() if isinstance(v, int | float)})
    tracker.log_dataset(run_id, (record.lineage or {}).get("dataset") or {})
    tracker.log_artifacts(run_id, [Path(record.page), Path(record.report), Path(record.page).with_name(MATRIX_FILE)])
    tracker.end(run_id, record.status)
    return record


def _evaluate(backend: Transforms, spec: TransformSpec, run_id: str | None) -> Evaluation:
    classes = evaluation.model_classes(backend.model_archive(spec.model_data, spec.output, spec.options, spec.job_name))
    root = evaluation.labelled_root(Path(spec.input))
    labels = evaluation.labels_of(image_files(root))
    job = transform(
        backend, dataclasses.replace(spec, input=str(root), logits=True, output=spec.output / "transform"), run_id
    )
    scored, left_out = evaluation.score(classes, labels, Predictions(Path(job.output) / PREDICTIONS_FILE).lines())
    result = {"model": spec.model_data, "data": str(root), **evaluation.evaluate(classes, scored, left_out)}
    report = spec.output / "evaluation.json"
    report.write_text(json.dumps(result, indent=1))
    page = spec.output / "evaluation.html"
    matrix = evaluation_page.matrix_png(result["classes"], result["confusion_matrix"])
    page.with_name(MATRIX_FILE).write_bytes(matrix)
    page.write_text(evaluation_page.render(result, root, f"Evaluation {spec.name}: {root}", matrix))
    figures = {key: result[key] for key in ("images", "accuracy", "top_k", "top_k_accuracy", "loss")}
    origin = {
        "job_name": spec.job_name,
        "model_sha256": lineage.model_hash(spec.model_data),
        "dataset": (job.lineage or {}).get("dataset"),
    }
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
        mlflow_run=run_id,
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
