"""Hyperparameter tuning on SageMaker: a tuning job whose trials are the job `train --backend sagemaker` sends.

SageMaker runs the trials and reads the objective from each trial's log by the spec's regex. The tuning job's
record (kind "tuning") keeps its best training job, whose own record (kind "jobs") makes it deployable, and
the trials' results (table, CSV, JSON, plot page) are written as the local tuner writes them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from imgclf_contract import metrics
from imgclf_contract.hyperparameters import is_platform_key
from launcher import contract
from launcher.backends.sagemaker import api as sagemaker_api
from launcher.backends.sagemaker.options import NAME, SageMakerOptions
from launcher.backends.sagemaker.training import prepare_training, record_outcome
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import RecordStore, TrainingJob, TuningRun
from launcher.tracking import Tracker
from launcher.tuning import Range, TrialRow, TuningSpec, write_results

NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")  # CreateHyperParameterTuningJob's
MAX_NAME_LENGTH = 32
MAX_PARENTS = 5  # warm start: at most five parent tuning jobs
RUNNING = ("InProgress", "Stopping")
# What SageMaker adds to a trial's hyperparameters; not the user's.


def parameter_range(name: str, spec: Range) -> dict[str, Any]:
    """A continuous, integer or categorical range as SageMaker takes it: numbers as strings, and categorical values
    JSON-encoded as static hyperparameters are (so True reaches the container as `true`)."""
    if spec.type == "categorical":
        return {"Name": name, "Values": [json.dumps(value) for value in spec.values or ()]}
    low, high = (spec.min, spec.max) if spec.type == "continuous" else (int(spec.min), int(spec.max))
    return {"Name": name, "MinValue": str(low), "MaxValue": str(high), "ScalingType": spec.scaling}


def tuning_metric_definitions(objective_metric: str, objective_regex: str) -> list[dict[str, str]]:
    """Our metric definitions with the objective's (its regex may be the user's own)."""
    ours = [definition for definition in metrics.METRIC_DEFINITIONS if definition["Name"] != objective_metric]
    return [*ours, {"Name": objective_metric, "Regex": objective_regex}]


def tuning_request(training: dict[str, Any], spec: TuningSpec, hyperband_max_epochs: int | None = None) -> dict:
    """CreateHyperParameterTuningJob whose trials are `training`'s job (a `training_request`) with the
    hyperparameters of `spec.ranges`.

    `hyperband_max_epochs`: the Hyperband strategy's resource, from 1 epoch to that many.
    """
    kinds = {
        "continuous": "ContinuousParameterRanges",
        "integer": "IntegerParameterRanges",
        "categorical": "CategoricalParameterRanges",
    }
    ranges: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds.values()}
    for name, parameter in spec.ranges.items():
        ranges[kinds[parameter.type]].append(parameter_range(name, parameter))
    tuned = set(spec.ranges)
    resources = training["ResourceConfig"]
    definition = {
        "StaticHyperParameters": {k: v for k, v in training["HyperParameters"].items() if k not in tuned},
        "AlgorithmSpecification": {
            **training["AlgorithmSpecification"],
            "MetricDefinitions": tuning_metric_definitions(spec.objective_metric, spec.objective_regex),
        },
        "RoleArn": training["RoleArn"],
        "InputDataConfig": training["InputDataConfig"],
        "OutputDataConfig": training["OutputDataConfig"],
        "HyperParameterTuningResourceConfig": resources,
        "StoppingCondition": training["StoppingCondition"],
        **{key: training[key] for key in ("EnableManagedSpotTraining", "CheckpointConfig") if key in training},
    }
    config: dict[str, Any] = {
        "Strategy": spec.strategy,
        "HyperParameterTuningJobObjective": {"Type": spec.direction, "MetricName": spec.objective_metric},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": spec.max_jobs, "MaxParallelTrainingJobs": spec.max_parallel_jobs},
        "ParameterRanges": ranges,
        "TrainingJobEarlyStoppingType": spec.early_stopping,
    }
    if hyperband_max_epochs is not None:
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": hyperband_max_epochs}}
    request = {
        "HyperParameterTuningJobName": spec.name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
    }
    if spec.warm_start_from:
        request["WarmStartConfig"] = {
            "WarmStartType": "IdenticalDataAndAlgorithm",
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": p} for p in spec.warm_start_from],
        }
    return request


def check_tuning_spec(spec: TuningSpec) -> int | None:
    """Refuse what SageMaker would refuse, before anything is uploaded; return Hyperband's maximum epochs."""
    if len(spec.name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(spec.name):
        raise LauncherError(
            f"tuning job name {spec.name!r}: SageMaker allows 1 to 32 letters, digits and hyphens, starting with a "
            "letter or digit"
        )
    if SageMakerOptions.of(spec.training.options).sagemaker_debugger:
        raise LauncherError("SageMaker tuning jobs take no Debugger configuration: leave out --sagemaker-debugger")
    if len(spec.warm_start_from) > MAX_PARENTS:
        raise LauncherError(
            f"warm start takes at most {MAX_PARENTS} parent tuning jobs, not {len(spec.warm_start_from)}"
        )
    local = [name for name, source in spec.training.channels.items() if not source.startswith(S3_SCHEME)]
    if spec.warm_start_from and local:
        raise LauncherError(
            f"warm start needs the parents' data unchanged: give channel(s) {', '.join(local)} as the s3:// URIs the "
            "parent tuning jobs used (their records list them under 'channels'), not local folders"
        )
    if (
        spec.strategy == "Hyperband" or spec.early_stopping == "Auto"
    ) and spec.objective_metric not in metrics.PER_EPOCH:
        say(
            f"note: {spec.strategy} / early stopping {spec.early_stopping} judge trials by the objective's values "
            f"during training, and {spec.objective_metric!r} is printed once, at the end; "
            f"{' or '.join(repr(m) for m in metrics.PER_EPOCH[1:])} are printed every epoch"
        )
    if spec.strategy != "Hyperband":
        return None
    if spec.early_stopping != "Off":
        raise LauncherError("the Hyperband strategy stops trials itself: set early stopping to Off")
    epochs = spec.training.hyperparameters.get("epochs")
    if not isinstance(epochs, int) or epochs < 1 or "epochs" in spec.ranges:
        raise LauncherError(
            "the Hyperband strategy gives each trial 1 to `epochs` epochs: fix epochs as a whole number (-H epochs=N), "
            "not a tuned one"
        )
    return epochs


def tune_on_sagemaker(
    spec: TuningSpec,
    records: RecordStore,
    folder: Path,
    wait: bool = True,
    tracker: Tracker | None = None,
    parent_run: str | None = None,
) -> TuningRun:
    """Start a SageMaker tuning job for `spec` and, if `wait`, follow it to its end; return its record (saved).
    Once it has ended, its trials' table, CSV, JSON and plot page go to `folder`, as the local tuner writes them,
    and each trial becomes a child of MLflow run `parent_run`."""
    hyperband_max_epochs = check_tuning_spec(spec)
    prepared = prepare_training(spec.training, spec.name)
    request = tuning_request(prepared.request, spec, hyperband_max_epochs)
    sagemaker_api.start_tuning_job(prepared.session, request)
    run = spec.record(NAME, region=prepared.aws.region)
    run.channels = prepared.channels
    records.save(run)
    say(f"tuning job {spec.name} started on SageMaker in {prepared.aws.region}")
    if not wait:
        return run
    try:
        description = follow_tuning_job(prepared.session, spec.name)
    except KeyboardInterrupt:
        say(
            f"tuning job {spec.name} keeps running on SageMaker; stop it with: aws sagemaker "
            f"stop-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name {spec.name} --region {run.region}"
        )
        raise
    run.status, run.ended = description["HyperParameterTuningJobStatus"], time.time()
    run.training_jobs = description["TrainingJobStatusCounters"]
    run.failure_reason = description.get("FailureReason")
    rows = trial_rows(spec, sagemaker_api.tuning_job_trials(prepared.session, spec.name))
    write_results(spec, rows, folder, run)
    if tracker:
        track_trials(tracker, parent_run, spec, rows)
    if "BestTrainingJob" in description:  # SageMaker's pick, with its full record so that it can be deployed
        best = description["BestTrainingJob"]
        job = best_job_record(prepared.session, best["TrainingJobName"], spec.name)
        records.save(job)
        run.best = {
            **(run.best or {}),
            "job_name": job.name,
            "objective": best.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value"),
            "tuned_hyperparameters": decode_hyperparameters(best["TunedHyperParameters"]),
            "hyperparameters": job.hyperparameters,
            "model_data": job.model_data,
        }
    records.save(run)
    return run


def track_trials(tracker: Tracker, parent_run: str | None, spec: TuningSpec, rows: list[TrialRow]) -> None:
    """The trials as MLflow runs, from what SageMaker kept of them: hyperparameters, objective and end."""
    for row in rows:
        run = tracker.trial(parent_run, row.trial, row.job_name, row.hyperparameters, NAME)
        if row.objective is not None:
            tracker.log_metrics(run, {spec.objective_metric: row.objective, "objective": row.objective})
        tracker.end(run, row.status, stopped_early="yes" if row.stopped_early else None)


def follow_tuning_job(session: sagemaker_api.Aws, name: str) -> dict[str, Any]:
    """Poll DescribeHyperParameterTuningJob until the job ends, saying how many trials are where; return it."""

    def state(description: dict[str, Any]) -> str:
        counts = trial_counts(description["TrainingJobStatusCounters"])
        return f"{description['HyperParameterTuningJobStatus']}; training jobs: {counts}"

    return sagemaker_api.poll(
        lambda: sagemaker_api.describe_tuning_job(session, name),
        lambda description: description["HyperParameterTuningJobStatus"] in RUNNING,
        state,
        lambda description: say(f"tuning job {name}: {state(description)}"),
    )


def trial_rows(spec: TuningSpec, summaries: list[dict[str, Any]]) -> list[TrialRow]:
    """The tuning job's training jobs as the results table's rows, numbered in the order they were created. A trial
    that SageMaker stopped while early stopping (or Hyperband) was on counts as stopped early."""
    stops_early = spec.early_stopping == "Auto" or spec.strategy == "Hyperband"
    rows = []
    for number, summary in enumerate(sorted(summaries, key=lambda s: s["CreationTime"]), start=1):
        start, end = summary.get("TrainingStartTime"), summary.get("TrainingEndTime")
        stopped = summary["TrainingJobStatus"] == "Stopped"
        rows.append(
            TrialRow(
                trial=number,
                job_name=summary["TrainingJobName"],
                hyperparameters=decode_hyperparameters(summary.get("TunedHyperParameters", {})),
                objective=summary.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value"),
                status=summary["TrainingJobStatus"],
                duration=(end - start).total_seconds() if start and end else None,
                stopped_early=stopped and stops_early,
            )
        )
    return rows


def trial_counts(counters: dict[str, int]) -> str:
    """`2 completed, 1 in progress, 0 failed, 0 stopped` from TrainingJobStatusCounters."""
    failed = counters.get("RetryableError", 0) + counters.get("NonRetryableError", 0)
    return (
        f"{counters.get('Completed', 0)} completed, {counters.get('InProgress', 0)} in progress, {failed} failed, "
        f"{counters.get('Stopped', 0)} stopped"
    )


def decode_hyperparameters(encoded: dict[str, str]) -> dict[str, Any]:
    """The container's reading of SageMaker's strings (JSON, else the raw string), without SageMaker's own keys."""
    return {key: contract.decode_value(value) for key, value in encoded.items() if not is_platform_key(key)}


def best_job_record(session: sagemaker_api.Aws, job_name: str, tuning_job: str) -> TrainingJob:
    """The best trial as a training job record, like `train --backend sagemaker` writes, so it can be deployed."""
    description = sagemaker_api.describe_training_job(session, job_name)
    model_data = description["ModelArtifacts"]["S3ModelArtifacts"]
    resources = description["ResourceConfig"]
    job = TrainingJob(
        name=job_name,
        backend=NAME,
        tuning_job=tuning_job,
        created=description["CreationTime"].timestamp(),
        region=session.region,
        role=description["RoleArn"],
        image=description["AlgorithmSpecification"]["TrainingImage"],
        instance_type=resources.get("InstanceType"),
        instance_count=resources.get("InstanceCount", 1),
        hyperparameters=decode_hyperparameters(description.get("HyperParameters", {})),
        channels={
            channel["ChannelName"]: channel["DataSource"]["S3DataSource"]["S3Uri"]
            for channel in description.get("InputDataConfig", [])
            if "S3DataSource" in channel["DataSource"]
        },
        model_data=model_data,
        output_data=f"{model_data.rsplit('/', 1)[0]}/{contract.OUTPUT_ARTIFACT}",
    )
    job.test_metrics = metrics.test_metrics(record_outcome(job, description))
    return job
