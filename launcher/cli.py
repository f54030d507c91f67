"""`launcher`: train, deploy, predict and stop with the imgclf image on a chosen backend.

This module defines the command line and dispatches to `launcher.commands`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from launcher import commands, contract, tracking
from launcher.backends import (
    BUILT_IN,
    DEFAULT_BACKEND,
    DEFAULT_IMAGE,
    DeploySpec,
    backend_class,
    backend_names,
    option_names,
)
from launcher.backends.sagemaker import (
    BUCKET_ENV,
    DEFAULT_ENDPOINT_INSTANCE_TYPE,
    MAX_RUN_SECONDS,
    REGION_ENVS,
    ROLE_ENV,
)
from launcher.commands import IMAGE_ENV, absolute_path
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.records import RecordStore
from launcher.tuning import EARLY_STOPPING, STRATEGIES

WORKDIR_ENV = "IMGCLF_WORKDIR"
DEFAULT_WORKDIR = ".imgclf"
STARTUP_TIMEOUT = DeploySpec.startup_timeout


def folder_or_s3_uri(text: str) -> str:
    """An s3:// URI as given; a local path made absolute."""
    return text if text.startswith(S3_SCHEME) else str(absolute_path(text))


def parse_key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value


def parse_hyperparameter(text: str) -> tuple[str, Any]:
    key, value = parse_key_value(text)
    return key, contract.decode_value(value)


def add_image_options(parser: argparse.ArgumentParser, image_note: str = "", type_note: str = "local") -> None:
    """--image and --instance-type; for a job their defaults are applied after its --config file, for an endpoint
    they default to its training job's image and a type the backend picks."""
    parser.add_argument(
        "--image",
        help=f"the train+serve image (default{image_note} ${IMAGE_ENV} or {DEFAULT_IMAGE}, built by `make build`); "
        "the sagemaker backend needs its ECR URI, <account>.dkr.ecr.<region>.amazonaws.com/imgclf:<tag> "
        "(`make push`)",
    )
    parser.add_argument(
        "--instance-type",
        help="local backend: local, or local_gpu for a GPU through Docker's NVIDIA runtime; "
        "sagemaker backend: a SageMaker type such as ml.g4dn.xlarge (GPU) or ml.m5.xlarge (CPU); "
        f"the process backend runs on this machine and ignores it (default {type_note})",
    )


TRAIN_BUCKET_HELP = (
    "artifacts (s3://BUCKET/imgclf/<job>/output/) and for local channel folders, which are uploaded to "
    "s3://BUCKET/imgclf/<job>/input/<channel>"
)
DEPLOY_BUCKET_HELP = "a local model.tar.gz, which is uploaded to s3://BUCKET/imgclf/<endpoint>/ (not needed otherwise)"
REGION_DEFAULT = f"${' or $'.join(REGION_ENVS)}"


def add_aws_options(
    parser: argparse.ArgumentParser, bucket_help: str = TRAIN_BUCKET_HELP, region_default: str = REGION_DEFAULT
) -> None:
    parser.add_argument(
        "--role", help=f"sagemaker backend: ARN of the IAM role the job or endpoint runs as (default ${ROLE_ENV})"
    )
    parser.add_argument("--bucket", help=f"sagemaker backend: S3 bucket for {bucket_help} (default ${BUCKET_ENV})")
    parser.add_argument("--region", help=f"sagemaker backend: AWS region (default {region_default})")


def add_tracking_options(parser: argparse.ArgumentParser, off: bool = True) -> None:
    """Where MLflow tracking goes, for every command that runs, serves or stops something."""
    group = parser.add_argument_group("tracking (MLflow)")
    group.add_argument(
        "--tracking-uri",
        metavar="URI",
        help=f"an MLflow tracking server (http://host:port), a SageMaker managed MLflow tracking server's ARN (with "
        f"the sagemaker-mlflow plugin installed) or a database URI (default: ${tracking.TRACKING_ENV}, else "
        f"sqlite:///<workdir>/{tracking.STORE_FILE} with artifacts in <workdir>/{tracking.ARTIFACTS_FOLDER})",
    )
    group.add_argument(
        "--experiment",
        dest="tracking.experiment",
        metavar="NAME",
        help="the MLflow experiment (default: the job config's tracking.experiment, else the config file's name, "
        f"else {tracking.DEFAULT_EXPERIMENT})",
    )
    if off:
        group.add_argument(
            "--no-tracking", action="store_true", help="track nothing in MLflow (the records are kept as always)"
        )


def add_job_options(parser: argparse.ArgumentParser, backend_help: str) -> None:
    """What defines a training job, for `train` and `tune`; flags override the --config file."""
    add_tracking_options(parser)
    parser.add_argument(
        "--config",
        type=absolute_path,
        metavar="YAML",
        help="a job config file (data, image, instances, hyperparameters, tuning, rules; see docs/tuning.md); "
        "the flags below override it",
    )
    parser.add_argument("--backend", choices=backend_names(), default=DEFAULT_BACKEND, help=backend_help)
    parser.add_argument(
        "--data",
        help="one 'training' channel holding train/, valid/ (or val/) and test/ class folders "
        "(a local folder, or an s3:// prefix on the sagemaker backend)",
    )
    parser.add_argument(
        "--channel",
        action="append",
        dest="channels",
        type=parse_key_value,
        metavar="NAME=PATH",
        help="an input channel, repeatable: train=, valid=, test= folders, or pretrained= a torchvision "
        "state_dict file to start from",
    )
    add_trial_options(parser)


def add_trial_options(parser: argparse.ArgumentParser) -> None:
    """What each training job runs with, whatever its data: hyperparameters, output, image, instances, AWS."""
    parser.add_argument(
        "-H",
        "--hyperparameter",
        action="append",
        dest="hyperparameters",
        type=parse_hyperparameter,
        metavar="NAME=VALUE",
        help="a hyperparameter, repeatable, e.g. -H epochs=3 -H learning_rate=0.01 (the list: docs/launcher.md)",
    )
    parser.add_argument(
        "--output",
        type=folder_or_s3_uri,
        help="where artifacts go: <output>/<job>/output/model.tar.gz (default: <workdir>/output; on the "
        "sagemaker backend an s3:// URI, default s3://<bucket>/imgclf)",
    )
    add_image_options(parser)
    parser.add_argument(
        "--instance-count",
        type=int,
        help="instances; several train data-parallel (local and sagemaker backends; default 1)",
    )
    add_aws_options(parser)
    parser.add_argument(
        "--spot",
        action="store_true",
        help="sagemaker backend: managed spot training (spare capacity at a lower price; SageMaker may interrupt "
        "the job and start it again when capacity returns). /opt/ml/checkpoints is synced with "
        "s3://BUCKET/imgclf/<job>/checkpoints, for a trainer that resumes from there",
    )
    parser.add_argument(
        "--max-run",
        type=int,
        metavar="SECONDS",
        help=f"sagemaker backend: the longest the job may run before SageMaker stops it (default {MAX_RUN_SECONDS})",
    )
    parser.add_argument(
        "--max-wait",
        type=int,
        metavar="SECONDS",
        help="with --spot: the longest to wait for spot capacity plus run, at least --max-run "
        "(default twice --max-run)",
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launcher",
        description="Fine-tune a torchvision ResNet on an image-folder dataset and serve it as a JPEG-in, "
        "JSON-out endpoint, with one container image, on the process backend (this machine, no Docker, "
        "no AWS), SageMaker local mode, or SageMaker.",
    )
    parser.add_argument(
        "--workdir",
        type=absolute_path,
        default=absolute_path(os.environ.get(WORKDIR_ENV, DEFAULT_WORKDIR)),
        help="where job folders, endpoint folders and their records live "
        f"(default: ${WORKDIR_ENV} or ./{DEFAULT_WORKDIR})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser(
        "sample-data",
        help="write a small real dataset (scikit-learn's handwritten digits) as JPEGs",
        description="Write DIR/{train,valid,test}/<digit>/*.jpg: 1,797 images of 10 classes from scikit-learn's "
        "bundled digits, upscaled to RGB. Nothing is downloaded.",
    )
    sample.add_argument("directory", type=Path, help="folder to create (existing files are overwritten)")
    sample.add_argument("--size", type=int, default=64, help="side of each square image in pixels (default 64)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the stratified train/valid/test split (default 0)")
    sample.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="keep this part of each class in each split (default 1: all); a smaller part is a subset of the whole, "
        "split for split, as the data a first model trains on before new data arrives",
    )

    backend_help = f"where to run: {', '.join(backend_names())} (default {DEFAULT_BACKEND})"
    train = commands.add_parser(
        "train",
        help="run a training job",
        description="Run a training job with the built-in trainer and pack its model.tar.gz and output.tar.gz "
        "as SageMaker would. Prints the metric lines a tuner reads, then where the artifacts are.",
    )
    add_job_options(train, backend_help)
    train.add_argument("--job-name", help="unique job name (default: imgclf-<timestamp>-<random>)")
    train.add_argument(
        "--from-tuning",
        metavar="TUNING",
        help="start from the hyperparameters of this tuning run's best trial (-H flags still override them)",
    )
    add_debugger_option(train)

    tune = commands.add_parser(
        "tune",
        help="tune hyperparameters: many training jobs, the best one kept",
        description="Run the tuning section of a job config: trials are real training jobs whose objective is "
        "read from their logs. The process backend (trials as processes) and the local backend (trials in Docker "
        "through SageMaker local mode, one at a time) tune here with Optuna (its study is kept in SQLite, so the "
        "same command resumes an interrupted run); the sagemaker backend runs a SageMaker tuning job. Prints the "
        "results table and the best hyperparameters; `train --from-tuning NAME` uses them.",
    )
    add_job_options(tune, backend_help)
    tune.add_argument("--name", help="tuning run name (default: imgclf-tune-<timestamp>); reuse it to resume")
    add_tuning_options(tune)

    deploy = commands.add_parser(
        "deploy",
        help="start an endpoint serving a trained model",
        description="Start an endpoint for a model and wait until it answers /ping with the model loaded.",
    )
    deploy.add_argument(
        "model", help="a training job's name, the path of a model.tar.gz, or (sagemaker backend) its s3:// URI"
    )
    deploy.add_argument("--backend", choices=backend_names(), default=DEFAULT_BACKEND, help=backend_help)
    add_image_options(
        deploy,
        image_note=": the training job's image, else",
        type_note=f"the job's local type on the local backend, {DEFAULT_ENDPOINT_INSTANCE_TYPE} on sagemaker",
    )
    deploy.add_argument("--endpoint-name", help="unique endpoint name (default: imgclf-ep-<timestamp>-<random>)")
    add_endpoint_options(deploy)
    add_aws_options(deploy, DEPLOY_BUCKET_HELP, f"that of the training job, else {REGION_DEFAULT}")
    add_tracking_options(deploy)

    predict = commands.add_parser(
        "predict",
        help="classify an image with an endpoint",
        description="Send an image file's bytes to an endpoint's /invocations and print the JSON answer: "
        "the top classes with probabilities, and the logits of all classes.",
    )
    predict.add_argument("image", type=Path, help="a JPEG or PNG file")
    predict.add_argument("--endpoint", help="endpoint name (default: the only endpoint in service)")
    predict.add_argument(
        "--content-type", help="request content type (default: from the file extension: image/jpeg or image/png)"
    )

    transform = commands.add_parser(
        "transform",
        help="classify every image under a folder (batch transform)",
        description="Classify every JPEG and PNG under --input (any depth) with a model and write "
        "<output>/predictions.jsonl, one line per file (its path under the input, the top classes with "
        "probabilities, the logits with --logits; or the reason it could not be classified), and summary.json. "
        "Process backend: a model server on this machine, sent as many requests at once as it asks for; local: "
        "SageMaker local mode's transformer with the image; sagemaker: a batch transform job. The same "
        "--name (or --output) goes on after an interruption without classifying finished files again.",
    )
    add_model_options(transform, backend_help)
    transform.add_argument("--input", required=True, help="a folder of images, or (sagemaker backend) an s3:// prefix")
    transform.add_argument(
        "--output",
        type=absolute_path,
        help="folder for predictions.jsonl and summary.json (default <workdir>/transforms/NAME/output)",
    )
    transform.add_argument("--name", help="transform name (default: imgclf-transform-<timestamp>); reuse it to resume")
    transform.add_argument("--logits", action="store_true", help="keep every class's logit in each line")

    evaluate = commands.add_parser(
        "evaluate",
        help="judge a model on a labelled folder: accuracy, per-class figures, confusion matrix, mistakes",
        description="Classify the images of a labelled folder (one subfolder per class; a training data folder's "
        "test/ split) with a model, then write <output>/evaluation.json and a self-contained evaluation.html: "
        "accuracy, top-5 accuracy, average loss (as the training job computes its test metrics), per-class "
        "precision, recall, F1 and support, the confusion matrix, the most confused pairs and a gallery of the "
        "most confident mistakes. Images of classes the model does not know are counted and left out.",
    )
    add_model_options(evaluate, backend_help)
    evaluate.add_argument(
        "--data",
        type=absolute_path,
        required=True,
        help="a folder with one subfolder per class, or a training data folder (its test/ split)",
    )
    evaluate.add_argument(
        "--output", type=absolute_path, help="folder for the report (default <workdir>/evaluations/NAME)"
    )
    evaluate.add_argument("--name", help="evaluation name (default: imgclf-eval-<timestamp>)")

    stop = commands.add_parser("stop", help="stop an endpoint", description="Stop an endpoint and free what it holds.")
    stop.add_argument("endpoint", nargs="?", help="endpoint name (default: the only endpoint in service)")
    add_tracking_options(stop)

    ui = commands.add_parser(
        "ui",
        help="open the MLflow UI on the tracked runs, trials, datasets and models",
        description="Start MLflow's UI on 127.0.0.1 for the tracking store (default: the work folder's) and print "
        "the address of the experiment's runs page; Ctrl-C stops it. It needs the full mlflow package "
        "(`make ui`, or pip install 'imgclf-launcher[ui]'); the launcher itself needs only mlflow-skinny.",
    )
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000; 0: any free port)")
    add_tracking_options(ui, off=False)

    report = commands.add_parser(
        "report",
        help="show a training job's rule and profiler report",
        description="Extract the rule and profiler report that the image writes into every job's output.tar.gz "
        "(downloaded from S3 for sagemaker jobs) into <workdir>/reports/<job>/, print one line per rule, those "
        "that found issues first, and the path of the self-contained report.html.",
    )
    report.add_argument("job", metavar="JOB", help="a training job's name, as given to or printed by `launcher train`")

    run = commands.add_parser(
        "run",
        help="the retrain loop from this terminal: tune, deploy the best trial's model, predict a sample image",
        description="Tune with the config's tuning section, every trial with the smdebug hook, rules and profiler "
        "on, and take the best trial's model (no second training of a configuration already trained; "
        "--retrain-best trains it once more; without a tuning section the config's hyperparameters are trained as "
        "given), deploy it, send the endpoint a sample image, then print where every artifact is, the rule report "
        "and the lineage chain. Steps are named NAME-tune (its trials NAME-tune-001, ...), NAME-train and NAME-ep; "
        "the same command with the same --name goes on after an interruption, reusing what already finished.",
    )
    add_job_options(run, backend_help)
    run.add_argument("--name", help="run name (default: imgclf-run-<timestamp>-<random>)")
    add_tuning_options(run)
    run.add_argument(
        "--retrain-best",
        action="store_true",
        help="train the best trial's hyperparameters once more as job NAME-train, and take that model instead of "
        "the best trial's (e.g. with a channel that adds the valid split to the training data)",
    )
    run.add_argument(
        "--sample-image",
        type=absolute_path,
        help="the image to send the endpoint (default: the first image of the local data's test split)",
    )
    add_debugger_option(run)
    add_endpoint_options(run, config_note=" (default: the config's deploy section, else ")
    run.add_argument(
        "--stop-endpoint",
        action="store_true",
        help="stop the endpoint after the sample prediction (default: leave "
        "it in service, for `launcher predict` and `launcher stop`)",
    )
    add_promotion_options(
        run,
        "the retrain loop: no new endpoint; the new model challenges the one this endpoint serves (checked before "
        "any training) and replaces it if it wins",
    )

    promote = commands.add_parser(
        "promote",
        help="challenge the model an endpoint serves with a training job's model; replace it if it wins",
        description="Evaluate the model an endpoint serves (the champion) and a training job's model (the "
        "challenger) on the same labelled test split, decide by the rule (below), and if the challenger wins, "
        "serve it behind the same endpoint with no failed request (process and local backends: a new model server "
        "behind the endpoint's router, the old one stopped once drained; sagemaker: UpdateEndpoint, blue/green). "
        "The decision is recorded, tracked in MLflow (the registered model's `champion` alias moves on promotion "
        "only) and shown by `launcher lineage`.",
    )
    promote.add_argument("job", metavar="JOB", help="the challenger: a completed training job's name")
    add_promotion_options(promote, "the endpoint whose model the job's model challenges", required=True)
    add_swap_options(promote)

    rollback = commands.add_parser(
        "rollback",
        help="put the model an endpoint served before back in service",
        description="Serve the model the endpoint served before its current one again, the same way as a promotion "
        "(no failed request), and move the registered model's `champion` alias back to it. A SageMaker endpoint this "
        "work folder has no record of (one a `launcher pipeline` serves) is rolled back with --region through the "
        "model registry: the group's previous Approved model is served again and the current one marked Rejected.",
    )
    rollback.add_argument("endpoint", metavar="NAME", help="the endpoint")
    add_rollback_alarm_option(rollback)
    add_swap_options(rollback)

    lineage = commands.add_parser(
        "lineage",
        help="trace an endpoint or job back to its data, code and configuration",
        description="Print the chain behind an endpoint, training job, tuning run or `launcher run`: the endpoint "
        "and the model hash it serves, the training job (hyperparameters, code revision, image, model hash), "
        "the tuning run and its best trial, and the dataset manifest (every input file's SHA-256).",
    )
    lineage.add_argument("name", metavar="NAME", help="an endpoint, training job, tuning run or `launcher run` name")
    lineage.add_argument("--json", action="store_true", help="print the chain as JSON")
    lineage.add_argument(
        "--region",
        help="where this work folder has no record of NAME: read a SageMaker endpoint's chain from AWS in this region "
        "(what it serves, and the model registry's packages of the group named after it, as `launcher pipeline` "
        "registers them)",
    )
    add_pipeline_commands(commands)
    for command in (train, tune, run, deploy, transform, evaluate, promote, rollback):
        add_plugin_options(command)
    return parser


def add_pipeline_commands(commands: argparse._SubParsersAction) -> None:
    """`launcher pipeline put|start|status|stop`: the retrain loop as a SageMaker Pipeline."""
    pipeline = commands.add_parser(
        "pipeline",
        help="the retrain loop as a SageMaker Pipeline: put, start, status, stop (sagemaker backend)",
        description="The retrain loop run by SageMaker instead of a terminal: a SageMaker Pipeline per endpoint that "
        "tunes on a dataset version, evaluates the best trial's model against the endpoint's champion on that "
        "version's test split (the image's `evaluate`, the rule `launcher promote` uses) and registers it in the "
        "model package group named after the endpoint, Approved if it wins, Rejected if not. See docs/pipelines.md.",
    )
    actions = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    put = actions.add_parser(
        "put",
        help="create or update the pipeline",
        description="Create (or update) pipeline NAME from the job config: its tuning section is the Tune step, its "
        "image, instances and hyperparameters every trial's (with the smdebug hook, rules and profiler, as `launcher "
        "run`), and it serves --endpoint. The definition is also written to <workdir>/pipelines/NAME/"
        "definition.json. The data is not part of it: each execution gets its own (`launcher pipeline start`).",
    )
    put.add_argument("name", metavar="NAME", help="the pipeline's name")
    put.add_argument(
        "--config",
        type=absolute_path,
        metavar="YAML",
        help="a job config file with a tuning section (see docs/tuning.md); its data is not used: give it to `start`",
    )
    put.add_argument(
        "--endpoint", required=True, metavar="NAME", help="the endpoint whose model each execution challenges"
    )
    add_trial_options(put)
    add_tuning_options(put)
    put.add_argument(
        "--min-improvement",
        type=float,
        default=0.0,
        metavar="LOSS",
        help="the rule's least drop of the average test loss for a promotion (default 0); a start may override it",
    )
    put.add_argument(
        "--evaluation-instance-type",
        default="ml.m5.xlarge",
        help="the Evaluate step's instance (default ml.m5.xlarge)",
    )
    put.add_argument(
        "--endpoint-instance-type",
        help="the instance type the registered models are for (default: the config's deploy.instance_type, else "
        "ml.m5.xlarge)",
    )
    trigger = put.add_argument_group("triggers (an execution on the newest dataset version)")
    trigger.add_argument(
        "--on-new-data",
        type=s3_prefix,
        metavar="S3_PREFIX",
        help="each new dataset version written under this prefix starts an execution (an EventBridge rule on the "
        "store's manifests, the bucket's EventBridge notifications turned on); `start --data` stores versions there "
        "too (default prefix, without a rule: s3://BUCKET/imgclf/datasets/)",
    )
    trigger.add_argument(
        "--schedule",
        metavar="EXPR",
        help="an EventBridge Scheduler expression, e.g. 'rate(7 days)' or 'cron(0 6 ? * MON *)', that starts an "
        "execution",
    )
    trigger.add_argument(
        "--trigger-role",
        metavar="ARN",
        help="the role EventBridge starts the pipeline as (trusting events.amazonaws.com and scheduler.amazonaws.com, "
        "allowed sagemaker:StartPipelineExecution) (default: --role)",
    )
    start = actions.add_parser(
        "start",
        help="start an execution on a dataset version, and return",
        description="Store the data once (a folder of this machine becomes a dataset version: a ManifestFile of "
        "content-addressed objects, uploading only what S3 lacks) and start an execution on it against the "
        "endpoint's champion (its group's latest Approved model, else the model it serves, else none). Prints the "
        "execution's ARN and returns, unless --wait. One execution at a time: refused while one runs.",
    )
    start.add_argument("name", metavar="NAME", help="the pipeline")
    start.add_argument(
        "--data",
        required=True,
        type=folder_or_s3_uri,
        help="a dataset folder with train/, valid/, test/, or a dataset version's s3:// ManifestFile or prefix",
    )
    start.add_argument("--min-improvement", type=float, metavar="LOSS", help="override the pipeline's rule")
    start.add_argument("--wait", action="store_true", help="follow the execution to its end")
    add_region_option(start)
    status = actions.add_parser(
        "status",
        help="list the executions; the newest one's steps and decision",
        description="List the pipeline's executions, newest first, and for the newest (or --execution) its dataset, "
        "champion, each step's status (the tuning job's best trial and objective, the condition's outcome, the "
        "registered model package, failure reasons) and the decision with both models' figures.",
    )
    status.add_argument("name", metavar="NAME", help="the pipeline")
    status.add_argument("--execution", metavar="ID", help="an execution's ID or ARN (default: the newest)")
    add_region_option(status)
    stop = actions.add_parser("stop", help="stop the running execution", description="Stop the running execution.")
    stop.add_argument("name", metavar="NAME", help="the pipeline")
    add_region_option(stop)


def add_region_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help=f"the pipeline's AWS region (default {REGION_DEFAULT})")


def s3_prefix(text: str) -> str:
    if not text.startswith(S3_SCHEME):
        raise argparse.ArgumentTypeError(f"give an s3:// prefix, not {text!r}")
    return text.rstrip("/") + "/"


def add_plugin_options(parser: argparse.ArgumentParser) -> None:
    """A flag for each option of a plug-in backend that the flags above do not set: `--NAME` for a field NAME of its
    `Options`, typed by the field's default, explained by its metadata's `help`."""
    for name, owners in option_names().items():
        if set(owners) & set(BUILT_IN):  # the built-in backends' options have flags of their own above
            continue
        option = next(f for f in dataclasses.fields(backend_class(owners[0]).Options) if f.name == name)
        default = option.default if option.default is not dataclasses.MISSING else None
        how: dict[str, Any] = (
            {"action": "store_true"}
            if isinstance(default, bool)
            else {"action": "append"}
            if isinstance(default, tuple)
            else {"type": type(default) if isinstance(default, int | float) else str}
        )
        where = " or ".join(owners)
        try:
            parser.add_argument(
                f"--{name.replace('_', '-')}", **how, help=f"{where} backend: {option.metadata.get('help', name)}"
            )
        except argparse.ArgumentError:  # a flag above sets it already
            continue


def add_model_options(parser: argparse.ArgumentParser, backend_help: str) -> None:
    """MODEL and how to run it, for `transform` and `evaluate`."""
    add_tracking_options(parser)
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a training job's name, an endpoint's name (the model it serves), the path of a model.tar.gz, or "
        "(sagemaker backend) its s3:// URI",
    )
    parser.add_argument("--backend", choices=backend_names(), default=DEFAULT_BACKEND, help=backend_help)
    add_image_options(
        parser,
        image_note=": the training job's image, else",
        type_note=f"the job's local type on the local backend, {DEFAULT_ENDPOINT_INSTANCE_TYPE} on sagemaker",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes per image, most probable first (default 5)")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="process backend: requests at once (default: what the model server asks for, enough to fill its batches)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"process and local backends: seconds to wait for the model server (default {STARTUP_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--transform-ami-version",
        metavar="VERSION",
        help="sagemaker backend, GPU instance types: the hosts' TransformAmiVersion (their NVIDIA driver); needed "
        "for GPUs, since the image's CUDA 13 needs driver 580 and SageMaker's default batch hosts run 470 or 535",
    )
    add_aws_options(
        parser,
        DEPLOY_BUCKET_HELP.replace("<endpoint>", "<name>") + "; local input folders are uploaded there too",
        f"that of the training job, else {REGION_DEFAULT}",
    )


def add_debugger_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sagemaker-debugger",
        action="store_true",
        help="sagemaker backend: also attach SageMaker Debugger and Profiler as the original project did (the "
        "LossNotDecreasing, Overfit, Overtraining, LowGPUUtilization and ProfilerReport rule jobs, 500 ms "
        "system profiling). Debugger is closed to new AWS customers since 2026-07-30, so it is off by default; "
        "our own rules and report run inside the container either way (see `launcher report`)",
    )


def add_rollback_alarm_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--rollback-alarm (the sagemaker backend's `rollback_alarms` option), for `run`, `promote` and `rollback`."""
    parser.add_argument(
        "--rollback-alarm",
        "--rollback-alarms",
        action="append",
        dest="rollback_alarms",
        metavar="ALARM",
        help="sagemaker backend, repeatable: a CloudWatch alarm that rolls the update back if it fires while the old "
        "fleet is still kept (blue/green auto-rollback)",
    )


def add_promotion_options(parser: argparse.ArgumentParser, endpoint_help: str, required: bool = False) -> None:
    """The champion endpoint and the decision rule, for `run` and `promote`."""
    group = parser.add_argument_group("champion against challenger")
    group.add_argument("--endpoint", metavar="NAME", required=required, help=endpoint_help)
    group.add_argument(
        "--holdout",
        type=absolute_path,
        metavar="DIR",
        help="the labelled test split both models are evaluated on (one subfolder per class, or a data folder's "
        "test/) (default: the new data's test/ split)",
    )
    group.add_argument(
        "--min-improvement",
        type=float,
        default=0.0,
        metavar="LOSS",
        help="promote only if the challenger's average test loss is lower than the champion's by at least this, "
        "and its accuracy is not lower (default 0: any lower loss)",
    )
    group.add_argument("--force", action="store_true", help="promote whatever the rule says (and say so)")
    add_rollback_alarm_option(group)


def add_swap_options(parser: argparse.ArgumentParser) -> None:
    """What putting a model behind an existing endpoint takes, for `promote` and `rollback`."""
    add_aws_options(parser, DEPLOY_BUCKET_HELP, region_default="the endpoint's")
    parser.add_argument("--timeout", type=float, help="seconds the new model may take to become healthy")
    add_tracking_options(parser)


def add_tuning_options(parser: argparse.ArgumentParser) -> None:
    """Overrides of the --config file's tuning section, for `tune` and `run`."""
    parser.add_argument(
        "--strategy",
        dest="tuning.strategy",
        choices=STRATEGIES,
        help="search strategy (default: the config's, or Bayesian)",
    )
    parser.add_argument(
        "--max-jobs",
        dest="tuning.max_jobs",
        type=int,
        metavar="N",
        help="number of trials (default: the config's, or 10)",
    )
    parser.add_argument(
        "--max-parallel-jobs",
        dest="tuning.max_parallel_jobs",
        type=int,
        metavar="N",
        help="trials at once (default: the config's, or 1; here at most cores/2)",
    )
    parser.add_argument(
        "--early-stopping",
        dest="tuning.early_stopping",
        choices=EARLY_STOPPING,
        help="Auto: stop trials worse than the median of earlier ones at the same epoch (default: the config's, "
        "or Off)",
    )


def add_endpoint_options(parser: argparse.ArgumentParser, config_note: str = " (default: ") -> None:
    """How an endpoint is served, for `deploy` and `run`; `run` takes its defaults from the config's deploy."""
    parser.add_argument(
        "--port", type=int, default=0, help="process and local backends: the port on this machine (default: a free one)"
    )
    parser.add_argument(
        "--listen",
        metavar="ADDRESS",
        default="127.0.0.1",
        help="process and local backends: the address the endpoint listens on (default 127.0.0.1: this machine only; "
        "0.0.0.0 opens it to the network)",
    )
    parser.add_argument(
        "--workers",
        dest="deploy.workers",
        type=int,
        metavar="N",
        help=f"model server worker processes{config_note}the server's choice)",
    )
    parser.add_argument(
        "--timeout",
        dest="deploy.timeout",
        type=float,
        metavar="SECONDS",
        help="process and local backends: seconds to wait for the endpoint to become healthy"
        f"{config_note}{STARTUP_TIMEOUT:.0f}); SageMaker applies its own limit",
    )
    parser.add_argument(
        "--inference-ami-version",
        metavar="VERSION",
        help="sagemaker backend: the endpoint hosts' AMI, which sets their NVIDIA driver. auto: "
        "al2023-ami-sagemaker-inference-gpu-4-1 (driver 580, which the image's CUDA 13 needs) on GPU instance types, "
        f"none on CPU types; none: SageMaker's default; or a version SageMaker knows{config_note}auto)",
    )


COMMANDS = {
    "sample-data": commands.sample_data,
    "train": commands.train,
    "deploy": commands.deploy,
    "predict": commands.predict,
    "stop": commands.stop,
    "report": commands.report,
    "tune": commands.tune,
    "run": commands.run,
    "lineage": commands.lineage,
    "transform": commands.transform,
    "evaluate": commands.evaluate,
    "ui": commands.ui,
    "promote": commands.promote,
    "rollback": commands.rollback,
    "pipeline": commands.pipeline,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = get_args_parser().parse_args(argv)
        COMMANDS[args.command](args, RecordStore(args.workdir / "records"))
    except LauncherError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("launcher: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
