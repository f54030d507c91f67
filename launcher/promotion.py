"""The retrain loop's decision: a newly trained model (the challenger) against the model an endpoint serves (the
champion), both evaluated on the same labelled test split; a rule the user can read and set says whether the
challenger replaces the champion behind the endpoint, with no failed request; `rollback` puts the previous one back.

Each decision is a `Promotion` record and an MLflow run (the rule, both evaluations' figures, the outcome); the
registered model's `champion` alias follows the model in service on promotion and rollback, and the challenger's
model version is tagged with the outcome either way.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from imgclf_contract import metrics
from imgclf_contract.judging import Rule, other_classes
from launcher import evaluation, hosted, lineage, steps
from launcher.backends import Backend, DeploySpec, EndpointSettings, SwapsModels, TransformSettings
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, Evaluation, Promotion, TrainingJob

CHAMPION_ALIAS = "champion"  # the registered model's alias for the version in service


def dataset_classes(data: Path) -> list[str] | None:
    """The class folders of a local data folder's train/ split (or of the folder itself); None for S3 data."""
    if str(data).startswith(S3_SCHEME) or not data.is_dir():
        return None
    root = data / "train" if (data / "train").is_dir() else data
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def served_endpoint(backend: Backend, name: str, classes: list[str] | None, folder: Path) -> Endpoint:
    """The endpoint a challenger is to replace the model of: recorded on this backend, in service, answering, and
    serving a model of the same classes (checked before any training, so that none is wasted)."""
    if not backend.records.exists(Endpoint, name):
        raise LauncherError(
            f"no endpoint named {name!r} on record: deploy the first model with `launcher deploy` "
            "or `launcher run` without --endpoint"
        )
    endpoint = backend.records.load(Endpoint, name)
    if endpoint.backend != backend.name:
        raise LauncherError(
            f"endpoint {name} runs on the {endpoint.backend} backend: pass --backend {endpoint.backend}"
        )
    if endpoint.status != "InService" or (endpoint.url and not hosted.model_ready(endpoint.url)):
        raise LauncherError(
            f"endpoint {name} is not in service (status {endpoint.status}"
            + (f", no answer at {endpoint.url}" if endpoint.url else "")
            + "): there is no champion to challenge; deploy a model first"
        )
    archive = backend.model_archive(endpoint.model_data, folder, backend.Options(), endpoint.job_name)
    served = evaluation.model_classes(archive)
    refusal = other_classes(served, classes) if classes is not None else None
    if refusal:
        raise LauncherError(f"endpoint {name}, against a challenger trained on this data's classes: {refusal}")
    return endpoint


def contest(
    backend: SwapsModels,  # one that Transforms too: the contest evaluates both models
    endpoint: Endpoint,
    challenger: TrainingJob,
    data: Path,
    rule: Rule,
    evaluation: TransformSettings,
    serving: EndpointSettings,
    name: str,
    force: bool = False,
) -> Promotion:
    """Evaluate the champion and the challenger on the labelled images under `data`, decide by `rule` (or promote
    anyway with `force`), and promote the challenger if it won. `evaluation`: how both are scored; `serving`: how the
    winner is served behind the endpoint. The record is saved as each step ends."""
    champion_job = steps.job_record(backend, endpoint.job_name)
    record = Promotion(
        name=name, backend=backend.name, endpoint=endpoint.name, rule=str(rule), data=str(data), forced=force
    )
    record.champion = _contender(endpoint.job_name, endpoint.model_data, champion_job)
    record.challenger = _contender(challenger.name, challenger.model_data, challenger)
    backend.records.save(record)
    say(
        f"{name}: champion {endpoint.job_name or endpoint.model_data} (serving on {endpoint.name}) against "
        f"challenger {challenger.name}, both on {data}"
    )
    try:
        _decide(backend, record, rule, evaluation, data, force)
        if record.decision == "promoted":
            spec = serving.serve(endpoint.name, challenger.model_data, challenger.name)
            promote(backend, endpoint, spec, f"promoted by {name}", challenger.model_version)
    except BaseException as err:
        _ended(backend, record, endpoint, err)
        raise
    _ended(backend, record, endpoint)
    return record


def _decide(
    backend: SwapsModels, record: Promotion, rule: Rule, evaluation: TransformSettings, data: Path, force: bool
) -> None:
    """Evaluate both contenders the same way on `data`, then apply the rule; the record says how it went."""
    for role, contender in (("champion", record.champion), ("challenger", record.challenger)):
        name = f"{record.name}-{role}"
        output = backend.workdir / "evaluations" / name
        spec = evaluation.classify(name, contender["model_data"], str(data), output, contender["job_name"])
        result = steps.evaluate(backend, spec)
        contender.update(evaluation=result.name, metrics=_figures(result))
        backend.records.save(record)
    wins, why = rule.verdict(record.champion["metrics"], record.challenger["metrics"])
    record.reason = why if wins or not force else f"forced (--force) although the rule said no: {why}"
    record.decision = "promoted" if wins or force else "kept"
    backend.records.save(record)
    say(f"rule: {rule}")
    say(f"decision: {'promote' if record.decision == 'promoted' else 'keep the champion'}: {record.reason}")


def promote(backend: SwapsModels, endpoint: Endpoint, spec: DeploySpec, reason: str, model_version: str | None) -> None:
    """Serve `spec`'s model behind the endpoint, no request failing; the `champion` alias follows it."""
    replaced = steps.job_record(backend, endpoint.job_name)
    backend.swap_model(endpoint, spec, reason)
    backend.tracker.set_alias(model_version, CHAMPION_ALIAS)
    if replaced:
        steps.track_endpoint(backend, dataclasses.replace(endpoint, job_name=replaced.name), "replaced")
    steps.track_endpoint(backend, endpoint, "promoted")
    say(f"endpoint {endpoint.name} now serves {spec.job_name or spec.model_data} ({reason})")


def rollback(backend: SwapsModels, endpoint: Endpoint, serving: EndpointSettings, name: str) -> Promotion:
    """Serve the model the endpoint served before the current one again, the same way (no failed request)."""
    served = endpoint.history or []
    if len(served) < 2:
        raise LauncherError(f"endpoint {endpoint.name} has served one model only: there is nothing to roll back to")
    previous, current = served[-2], served[-1]
    previous_job = steps.job_record(backend, previous.get("job_name"))
    record = Promotion(
        name=name,
        backend=backend.name,
        endpoint=endpoint.name,
        decision="rolled back",
        reason=f"rollback of {current.get('reason')}",
        rule="launcher rollback",
    )
    record.champion = _contender(previous.get("job_name"), previous["model_data"], previous_job)
    record.challenger = _contender(
        current.get("job_name"), current["model_data"], steps.job_record(backend, current.get("job_name"))
    )
    backend.records.save(record)
    spec = serving.serve(endpoint.name, previous["model_data"], previous.get("job_name"))
    try:
        promote(backend, endpoint, spec, f"rolled back by {name}", previous_job.model_version if previous_job else None)
    except BaseException as err:
        _ended(backend, record, endpoint, err)
        raise
    _ended(backend, record, endpoint)
    return record


def _contender(job_name: str | None, model_data: str, job: TrainingJob | None) -> dict[str, Any]:
    """A model in a promotion record; `reported`: what its image printed of its own test split (every test metric
    of imgclf_contract.metrics), shown beside the evaluation that decides."""
    return {
        "job_name": job_name,
        "model_data": model_data,
        "model_sha256": lineage.model_hash(model_data),
        "model_version": job.model_version if job else None,
        "reported": job.test_metrics if job else None,
    }


def compared_figures(record: Promotion) -> dict[str, float]:
    """Both models' figures side by side, as the promotion's MLflow run logs them: `champion loss`, `challenger
    accuracy`, ... from the evaluation on one test split, and `champion average test loss`, ... as each image
    reported them when it trained."""
    figures = {}
    for role in ("champion", "challenger"):
        contender = getattr(record, role)
        figures.update({f"{role} {key}": value for key, value in (contender.get("metrics") or {}).items()})
        reported = contender.get("reported") or {}
        named = {name: key for name, key in metrics.TEST_METRIC_KEYS.items() if key in reported}
        figures.update({f"{role} {name}": reported[key] for name, key in named.items()})
    return figures


def _figures(result: Evaluation) -> dict[str, float]:
    return {key: result.metrics[key] for key in ("accuracy", "loss", "images")}


def _ended(backend: SwapsModels, record: Promotion, endpoint: Endpoint, error: BaseException | None = None) -> None:
    """Save how the promotion ended and which model serves now; track it in MLflow; tag the challenger's version."""
    serving = backend.records.load(Endpoint, endpoint.name)
    record.extra["serving"] = {
        "job_name": serving.job_name,
        "model_data": serving.model_data,
        "model_sha256": (serving.lineage or {}).get("model_sha256"),
    }
    if error is None:
        record.status = "Completed"
    else:
        record.status = "Stopped" if isinstance(error, KeyboardInterrupt) else "Failed"
        record.failure_reason = str(error) or type(error).__name__
        if record.decision != "rolled back" and serving.model_data != record.challenger.get("model_data"):
            record.decision, record.reason = "kept", f"the challenger was not put in service: {record.failure_reason}"
        say(
            f"{record.name} {record.status.lower()}: endpoint {endpoint.name} serves "
            f"{serving.job_name or serving.model_data}"
        )
    record.ended = time.time()
    backend.records.save(record)
    tracker = backend.tracker
    tags = {
        "imgclf.endpoint": endpoint.name,
        "imgclf.decision": record.decision,
        "imgclf.reason": record.reason,
        "imgclf.champion_job": record.champion.get("job_name"),
        "imgclf.challenger_job": record.challenger.get("job_name"),
        "imgclf.serving_job": serving.job_name,
    }
    run_id = tracker.start(record.name, "promotion", params={"rule": record.rule, "forced": record.forced}, tags=tags)
    tracker.log_metrics(run_id, compared_figures(record))
    tracker.end(run_id, record.status, record.failure_reason)
    outcome = {"imgclf.promotion": f"{record.name}: {record.decision} on {endpoint.name}: {record.reason}"}
    tracker.tag_model_version(record.challenger.get("model_version"), outcome)
    record.mlflow_run = run_id
    backend.records.save(record)
