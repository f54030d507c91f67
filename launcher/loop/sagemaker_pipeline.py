"""`launcher pipeline`: the retrain loop as a SageMaker Pipeline (`pipeline_definition`) — put it, start it on a
dataset version, see its executions and stop one. Nothing is kept on this machine but a copy of the definition:
what a pipeline is and did is read from SageMaker, so any checkout with the same AWS account sees the same."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf_contract.judging import NEWEST
from launcher.backends.sagemaker import Aws, Hosting, pipelines, split_s3_uri, store_channel
from launcher.contract import MANIFEST_SUFFIX, S3_SCHEME
from launcher.errors import LauncherError
from launcher.loop.pipeline_definition import (
    DECIDE,
    EVALUATION_FILE,
    NAME_ROOM,
    RESOLVED_FILE,
    TRAINING_CHANNEL,
    PipelinePlan,
    PutPipeline,
    definition,
)
from launcher.progress import say

DEFINITION_FILE = "definition.json"
# What `launcher pipeline put` and `start` need, and what the pipeline's role needs to run the steps.
PERMISSIONS = """\
permissions the pipeline needs:
  you (put, start, status, stop): sagemaker:CreatePipeline, UpdatePipeline, DescribePipeline, StartPipelineExecution,
    ListPipelineExecutions, DescribePipelineExecution, ListPipelineExecutionSteps, ListPipelineParametersForExecution,
    StopPipelineExecution, CreateModelPackageGroup, DescribeModelPackageGroup, DescribeHyperParameterTuningJob;
    iam:PassRole on the pipeline's role (and the trigger role); s3:ListBucket, GetObject, PutObject on the bucket;
    with triggers: s3:GetBucketNotification, PutBucketNotification; events:PutRule, PutTargets;
    scheduler:GetSchedule, CreateSchedule, UpdateSchedule
  the pipeline's role (trusting sagemaker.amazonaws.com): sagemaker:CreateHyperParameterTuningJob,
    DescribeHyperParameterTuningJob, ListTrainingJobsForHyperParameterTuningJob, CreateTrainingJob,
    DescribeTrainingJob, CreateProcessingJob, DescribeProcessingJob, ListPipelineExecutions, ListModelPackages,
    DescribeModelPackage, CreateModelPackage, CreateModel, CreateEndpointConfig, CreateEndpoint, UpdateEndpoint,
    DescribeEndpoint, DescribeEndpointConfig, DescribeModel, AddTags; iam:PassRole on itself; s3:ListBucket,
    GetObject, PutObject on the bucket; ecr:GetAuthorizationToken, BatchGetImage, GetDownloadUrlForLayer on the
    image's repository; logs:CreateLogGroup, CreateLogStream, PutLogEvents
  the trigger role (trusting events.amazonaws.com and scheduler.amazonaws.com): sagemaker:StartPipelineExecution
    on the pipeline"""


def put(aws: Aws, plan: PipelinePlan, workdir: Path, triggers: Triggers | None = None) -> str:
    """Create or update the pipeline of `plan` (and its endpoint's model package group, and its triggers); its ARN."""
    built = definition(plan)
    folder = workdir / "pipelines" / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEFINITION_FILE).write_text(json.dumps(built, indent=1) + "\n")
    pipelines.write_object(aws, plan.no_model, b"no model: the endpoint had no champion when this execution started\n")
    if pipelines.ensure_model_package_group(aws, plan.endpoint, f"models of endpoint {plan.endpoint}"):
        say(f"model package group {plan.endpoint} created: the endpoint's champions and the challengers they beat")
    arn, created = pipelines.put_pipeline(
        aws, plan.name, built, plan.role, f"retrain loop of endpoint {plan.endpoint}: tune, evaluate, register"
    )
    say(f"pipeline {plan.name} {'created' if created else 'updated'}: {arn}")
    say(f"its definition: {folder / DEFINITION_FILE}")
    if triggers:
        triggers.put(aws, plan, arn)
    say(PERMISSIONS)
    say(f"start it: launcher pipeline start {plan.name} --data DIR|s3://... --region {aws.region}")
    return arn


@dataclass(frozen=True)
class Triggers:
    """What starts the pipeline besides `launcher pipeline start`: each new dataset version under the pipeline's
    datasets prefix (an EventBridge rule), a schedule (EventBridge Scheduler), or both. Either starts an execution
    on the newest version; an execution started while another runs skips itself (Resolve)."""

    role: str  # the role EventBridge starts the pipeline as (sagemaker:StartPipelineExecution)
    on_new_data: bool = False
    schedule: str | None = None  # rate(...) or cron(...)

    def put(self, aws: Aws, plan: PipelinePlan, pipeline_arn: str) -> None:
        parameters = {"DatasetVersion": NEWEST}
        if self.on_new_data:
            bucket, prefix = split_s3_uri(plan.datasets)
            if pipelines.send_bucket_events(aws, bucket):
                say(f"bucket {bucket} now sends its events to EventBridge")
            rule = pipelines.put_new_data_rule(
                aws, f"imgclf-{plan.name}-new-data", bucket, prefix, pipeline_arn, self.role, parameters
            )
            say(f"rule {rule}: each new dataset version under {plan.datasets} starts an execution on it")
        if self.schedule:
            schedule = pipelines.put_schedule(
                aws, f"imgclf-{plan.name}", self.schedule, pipeline_arn, self.role, parameters
            )
            say(f"schedule {schedule}: {self.schedule} starts an execution on the newest dataset version")


def pipeline_of(aws: Aws, name: str) -> PutPipeline:
    described = pipelines.describe_pipeline(aws, name)
    if described is None:
        raise LauncherError(f"no pipeline {name} in {aws.region}: make it with `launcher pipeline put {name} ...`")
    return PutPipeline.of(name, json.loads(described["PipelineDefinition"]))


def dataset_version(aws: Aws, data: str, datasets: str) -> str:
    """`data` as a dataset version: an s3:// URI as it is, a folder of this machine stored (once) as a ManifestFile
    under the pipeline's `datasets` prefix."""
    if data.startswith(S3_SCHEME):
        check_test_split(aws, data)
        return data
    path = Path(data).resolve()
    missing = [split for split in ("train", "test") if not (path / split).is_dir()]
    if missing:
        raise LauncherError(f"{path} has no {' or '.join(missing)}/ folder: give a dataset with train/, valid/, test/")
    bucket, prefix = split_s3_uri(datasets)
    return store_channel(aws, bucket, TRAINING_CHANNEL, path, prefix)


def check_test_split(aws: Aws, version: str) -> None:
    """Refuse a dataset version of S3 without a test/ split to evaluate on, before anything starts."""
    if version.endswith(MANIFEST_SUFFIX):
        listed = pipelines.read_json(aws, version)
        if listed is None:
            raise LauncherError(f"no dataset version at {version}")
        has_test = any(isinstance(entry, str) and entry.startswith("test/") for entry in listed[1:])
    else:
        has_test = pipelines.holds_objects(aws, f"{version.rstrip('/')}/test/")
    if not has_test:
        raise LauncherError(f"{version} has no test/ split: the evaluation compares the models on it")


def start(aws: Aws, name: str, data: str, min_improvement: float | None = None) -> str:
    """Start an execution on `data`'s dataset version; its ARN. Refused while an execution runs: one at a time (an
    execution a trigger starts meanwhile skips itself, in its Resolve step)."""
    pipeline = pipeline_of(aws, name)
    running = [e for e in pipelines.executions(aws, name) if e["PipelineExecutionStatus"] in pipelines.RUNNING]
    if running:
        raise LauncherError(
            f"pipeline {name} runs one execution at a time and {running[0]['PipelineExecutionArn']} is "
            f"{running[0]['PipelineExecutionStatus']}: wait for it (launcher pipeline status {name}) or stop it "
            f"(launcher pipeline stop {name})"
        )
    version = dataset_version(aws, data, pipeline.datasets)
    parameters = {"DatasetVersion": version}
    if min_improvement is not None:
        parameters["MinImprovement"] = str(min_improvement)
    arn = pipelines.start_execution(aws, name, parameters, f"dataset {version}")
    say(
        f"pipeline {name} started on dataset {version}, against the champion of endpoint {pipeline.endpoint} (its "
        "model package group's latest Approved model, else the model it serves, else none)"
    )
    print(arn)  # alone on stdout, for scripts
    return arn


def follow(aws: Aws, arn: str) -> dict[str, Any]:
    """Poll the execution until it ends, saying each step's status as it changes; its last description."""

    def changed(description: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        listed = ", ".join(f"{step['StepName']} {step['StepStatus']}" for step in steps)
        say(
            f"execution {execution_id(arn)}: {description['PipelineExecutionStatus']}" + (f" ({listed})" * bool(listed))
        )

    return pipelines.follow_execution(aws, arn, changed)


def execution_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def step_note(aws: Aws, step: dict[str, Any]) -> str:
    """What a step did, from its metadata: the tuning job and its best objective, the processing job, the
    condition's outcome, the registered package."""
    metadata = step.get("Metadata", {})
    if "TuningJob" in metadata:
        name = metadata["TuningJob"]["Arn"].rsplit("/", 1)[-1]
        best = pipelines.best_trial(aws, metadata["TuningJob"]["Arn"])
        if not best:
            return f"tuning job {name}"
        objective = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
        return f"tuning job {name}; best trial {best['TrainingJobName']}: {objective.get('MetricName')} " + str(
            objective.get("Value")
        )
    if "ProcessingJob" in metadata:
        return f"processing job {metadata['ProcessingJob']['Arn'].rsplit('/', 1)[-1]}"
    if "Condition" in metadata:
        question = "promote" if step["StepName"] == DECIDE else "proceed"
        return f"{question}: {metadata['Condition'].get('Outcome', '?').lower()}"
    if "RegisterModel" in metadata:
        return f"model package {metadata['RegisterModel']['Arn']}"
    return ""


def execution_file(aws: Aws, pipeline: PutPipeline, arn: str, step_output: str, file: str) -> dict[str, Any] | None:
    """A file an execution's step wrote (its resolved inputs, its evaluation); None where there is none yet."""
    return pipelines.read_json(aws, f"{pipeline.folder}/{execution_id(arn)}/{step_output}/{file}")


def status(aws: Aws, name: str, execution: str | None = None) -> None:
    """Print the pipeline's executions and, for the newest (or `execution`), its steps and decision."""
    pipeline = pipeline_of(aws, name)
    listed = pipelines.executions(aws, name)
    print(f"pipeline {name}: retrain loop of endpoint {pipeline.endpoint}; {len(listed)} execution(s), newest first")
    for summary in listed:
        started = summary.get("StartTime")
        when = started.strftime("%Y-%m-%d %H:%M:%S %Z") if started else "?"
        print(f"  {execution_id(summary['PipelineExecutionArn'])}  {summary['PipelineExecutionStatus']:<10} {when}")
    arns = [summary["PipelineExecutionArn"] for summary in listed]
    chosen = next((arn for arn in arns if execution in (None, arn, execution_id(arn))), None)
    if chosen is None:
        if execution:
            raise LauncherError(f"pipeline {name} has no execution {execution}")
        return
    described = pipelines.describe_execution(aws, chosen)
    reason = described.get("FailureReason")
    print(
        f"execution {execution_id(chosen)}: {described['PipelineExecutionStatus']}" + (f": {reason}" if reason else "")
    )
    inputs = execution_file(aws, pipeline, chosen, "resolved", RESOLVED_FILE)
    if inputs:
        print(f"  dataset {inputs['dataset_version'] or 'none'}; champion {inputs['champion_model']}")
    else:
        given = pipelines.execution_parameters(aws, chosen).get("DatasetVersion", "?")
        print(f"  dataset {given} (as given; not resolved yet)")
    for step in pipelines.execution_steps(aws, chosen):
        failure = f"; {step['FailureReason']}" if step.get("FailureReason") else ""
        print(f"  {step['StepName']:<17} {step['StepStatus']:<10} {step_note(aws, step)}{failure}")
    evaluation = execution_file(aws, pipeline, chosen, "evaluation", EVALUATION_FILE)
    if evaluation and "decision" in evaluation:
        verdict = evaluation["decision"]
        print(f"decision: {'promote' if verdict['promote'] else 'keep'} ({verdict['reason']})")
        for role, figures in evaluation["models"].items():
            accuracy, loss, images = figures["accuracy"], figures["loss"], figures["images"]
            print(f"  {role}: accuracy {accuracy:.4f}, average loss {loss:.4f} on {images} images")


def stop(aws: Aws, name: str) -> list[str]:
    """Stop the pipeline's running execution; the ARNs stopped."""
    pipeline_of(aws, name)
    running = [
        e["PipelineExecutionArn"]
        for e in pipelines.executions(aws, name)
        if e["PipelineExecutionStatus"] == "Executing"
    ]
    if not running:
        say(f"pipeline {name} has no running execution")
    for arn in running:
        pipelines.stop_execution(aws, arn)
        say(f"stopping execution {arn}: its running step is stopped (a tuning job stops its trials)")
    return running


def wait(aws: Aws, arn: str) -> None:
    """Follow an execution to its end; a LauncherError unless it succeeded."""
    try:
        described = follow(aws, arn)
    except KeyboardInterrupt:
        say(f"execution {arn} keeps running on SageMaker; stop it with `launcher pipeline stop`")
        raise
    if described["PipelineExecutionStatus"] != "Succeeded":
        raise LauncherError(
            f"execution {arn} ended {described['PipelineExecutionStatus']}: {described.get('FailureReason') or ''}"
        )


def registry_chain(aws: Aws, endpoint: str) -> list[tuple[str, dict[str, Any]]]:
    """`launcher lineage` of an endpoint from AWS alone (no work folder): what it serves, the model package of that
    model in the group named after it (the pipeline execution, dataset version, tuning and training job, code
    revision and evaluation it records), and the group's champions and rejected challengers, newest first."""
    serving = pipelines.endpoint_model(aws, endpoint)
    packages = pipelines.model_packages(aws, endpoint)
    if serving is None and not packages:
        raise LauncherError(f"no endpoint {endpoint} and no model package group of that name in {aws.region}")

    def line(package: dict[str, Any]) -> str:
        metadata = package.get("CustomerMetadataProperties", {})
        model = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        return (
            f"{package['ModelPackageArn'].rsplit('/', 1)[-1]} {package['ModelApprovalStatus']} "
            f"{package['CreationTime']:%Y-%m-%d %H:%M} {model} (training job {metadata.get('training_job', '?')}, "
            f"dataset {metadata.get('dataset_version', '?')})"
        )

    served_model = serving["model_data"] if serving else None
    current = next(
        (p for p in packages if p["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == served_model), None
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("endpoint", {"name": endpoint, **(serving or {"status": "none"}),
                      "served": [line(p) for p in packages if p["ModelApprovalStatus"] == "Approved"] or None,
                      "kept out": [line(p) for p in packages if p["ModelApprovalStatus"] == "Rejected"] or None}),
    ]  # fmt: skip
    if current is None:
        return steps
    metadata = current.get("CustomerMetadataProperties", {})
    statistics = current.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
    package = {
        "arn": current["ModelPackageArn"],
        "status": current["ModelApprovalStatus"],
        "created": f"{current['CreationTime']:%Y-%m-%d %H:%M:%S}",
        "description": current.get("ModelPackageDescription"),
        "evaluation": statistics.get("S3Uri"),
        "pipeline": metadata.get("pipeline"),
        "code_revision": metadata.get("code_revision"),
        "judged against": metadata.get("champion_model"),
    }
    steps.append(("model package", package))
    steps.append(("training job", {"name": metadata.get("training_job"), "tuning job": metadata.get("tuning_job")}))
    steps.append(("dataset", {"version": metadata.get("dataset_version")}))
    return steps


def rollback(aws: Aws, endpoint: str, alarms: list[str]) -> str:
    """Serve the endpoint's previous champion again — the group's Approved model package before the latest, by the
    blue/green update `launcher promote` makes — then mark the latest Rejected, so that the registry, and the next
    execution's champion, follow. Returns the ARN of the package served."""
    serving = pipelines.endpoint_model(aws, endpoint)
    if serving is None:
        raise LauncherError(f"no endpoint {endpoint} in {aws.region}")
    approved = [p for p in pipelines.model_packages(aws, endpoint) if p["ModelApprovalStatus"] == "Approved"]
    if len(approved) < 2:
        raise LauncherError(
            f"model package group {endpoint} has {len(approved)} Approved model(s): there is nothing to roll back to"
        )
    current, previous = approved[0], approved[1]
    if pipelines.package_model(current) != serving["model_data"]:
        raise LauncherError(
            f"endpoint {endpoint} serves {serving['model_data']}, not its group's latest Approved model "
            f"({pipelines.package_model(current)}): roll it back from the work folder that deployed it"
        )
    container = previous["InferenceSpecification"]["Containers"][0]
    hosting = Hosting(
        image=container["Image"],
        model_data=container["ModelDataUrl"],
        role=serving["role"],
        env=serving["environment"],
        instance_type=serving["instance_type"],
        ami_version=serving["inference_ami_version"],
    )
    versions = [p["ModelPackageArn"].rsplit("/", 1)[-1] for p in (current, previous)]
    name = f"{endpoint[:NAME_ROOM]}-{versions[0]}-to-{versions[1]}"  # one name per move from a champion back
    described = pipelines.serve(aws, endpoint, name, hosting, alarms)
    if described["EndpointStatus"] != "InService" or described["EndpointConfigName"] != name:
        raise LauncherError(
            f"endpoint {endpoint} was not updated to {name} ({described['EndpointStatus']}: "
            f"{described.get('FailureReason', 'rolled back')}); it serves {serving['model_data']} as before, and the "
            "registry is unchanged"
        )
    pipelines.reject(aws, current["ModelPackageArn"], f"rolled back: endpoint {endpoint} serves "
                     f"{previous['ModelPackageArn']} again since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")  # fmt: skip
    say(f"endpoint {endpoint} serves {container['ModelDataUrl']} again ({previous['ModelPackageArn']}); "
        f"{current['ModelPackageArn']} is now Rejected")  # fmt: skip
    return previous["ModelPackageArn"]
