"""The image's executables: `train` and `serve`, as SageMaker invokes them, and `evaluate`, a retrain loop's
evaluation step."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.errors import EXIT_INTERNAL_ERROR, EXIT_STOPPED, EXIT_USER_ERROR, Preempted, WorkersFailed
from imgclf_contract import platform
from imgclf_contract.errors import ContractError, HyperparameterError
from imgclf_contract.judging import NO_MODEL

if TYPE_CHECKING:
    from imgclf.environment import TrainingEnv

log = logging.getLogger("imgclf")


def _configure_logging(prefix: str = "", level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
                        stream=sys.stdout)  # fmt: skip


def _write_failure(base_dir: Path, reason: str, replace: bool = False) -> None:
    """SageMaker shows the first 1024 characters of output/failure as the job's FailureReason. Unless `replace`,
    the first reason written stays: where one of several processes fails, the others fail after it, for its sake."""
    failure = base_dir / platform.FAILURE_FILE
    failure.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError), failure.open("w" if replace else "x") as file:
        file.write(reason)


def _workers_failure(base_dir: Path, failed: WorkersFailed) -> str:
    """The reason for a job whose processes failed: what the first of them wrote, and how each ended."""
    failure = base_dir / platform.FAILURE_FILE
    first = failure.read_text() if failure.is_file() else ""
    if first.startswith("ClientError"):
        return f"{first}\n\n({failed})"
    return f"AlgorithmError: {failed}" + (f"; the first reason written: {first}" if first else "")


@contextlib.contextmanager
def _job_outcome(base_dir: Path) -> Iterator[None]:
    """How a training process ends, in SageMaker's terms: output/failure with the reason, and the exit status."""
    try:
        yield
    except Preempted as stopped:
        log.warning("%s; the checkpoint in %s/%s resumes the job when it starts again", stopped, base_dir,
                    platform.CHECKPOINT_DIR)  # fmt: skip
        sys.exit(EXIT_STOPPED)
    except WorkersFailed as failed:
        log.error("training failed: %s", failed)
        _write_failure(base_dir, _workers_failure(base_dir, failed), replace=True)
        sys.exit(failed.exit_code)
    except ContractError as err:  # UserError included
        log.error("training failed: %s", err)
        _write_failure(base_dir, f"ClientError: {err}")
        sys.exit(EXIT_USER_ERROR)
    except Exception as err:
        log.exception("training failed with an internal error")
        _write_failure(base_dir, f"AlgorithmError: {err!r}\n\n{traceback.format_exc()}")
        sys.exit(EXIT_INTERNAL_ERROR)


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM outside the training steps (reading the job, scanning the data, testing, saving): end now, with
    143. As PID 1 in a container, `train` would otherwise ignore it until the stop's grace period ran out and
    SIGKILL came. No exception is raised: one raised wherever the signal lands (inside logging's lock, say) can
    leave a lock held and the process hung; nothing here needs cleaning up that a restart does not redo."""
    os.write(2, b"stopped by SIGTERM outside the training steps; exiting with status 143\n")
    os._exit(EXIT_STOPPED)


def _pass_sigterm_on(_signum: int, _frame: object) -> None:
    """Script mode: the user's script decides what SIGTERM means (a checkpoint, say)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):  # it ended meanwhile
            child.send_signal(signal.SIGTERM)


def train(argv: list[str] | None = None) -> None:
    """Run the job under SAGEMAKER_BASE_DIR (default /opt/ml): the user's script in script mode, else ours."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # first thing: the trainer replaces it during training
    argparse.ArgumentParser(
        prog="train",
        description="Train on the SageMaker job laid out under $SAGEMAKER_BASE_DIR (default /opt/ml): "
        "hyperparameters from input/config, images from input/data/<channel>; writes model/ and output/. "
        "With SAGEMAKER_PROGRAM (or the sagemaker_program hyperparameter) set, the SageMaker training toolkit "
        "runs that user script from code/ instead of the built-in trainer.",
    ).parse_args(argv)
    _configure_logging()
    base_dir = Path(os.environ.get(platform.BASE_DIR_ENV, platform.DEFAULT_BASE_DIR))
    (base_dir / platform.FAILURE_FILE).unlink(missing_ok=True)  # a reason left by an earlier run of this job
    with _job_outcome(base_dir):
        from imgclf.environment import TrainingEnv

        env = TrainingEnv.from_environ()
        for folder in (env.model_dir, env.output_data_dir):  # SageMaker makes them; a bare host may not have
            folder.mkdir(parents=True, exist_ok=True)
        if env.user_program:
            _run_user_script(env)
        else:
            _run_built_in_trainer(env)
    (base_dir / platform.SUCCESS_FILE).touch()


def _run_user_script(env: TrainingEnv) -> None:
    """Script mode: the SageMaker training toolkit runs the user's script from code/."""
    from imgclf import accelerator

    # A user's script picks its own device: stop it too where the GPUs are there but unusable.
    accelerator.select_device(str(env.hyperparameters.get("allow_cpu", "")).lower() in accelerator.TRUE)
    log.info("script mode: the SageMaker training toolkit runs %s", env.user_program)
    signal.signal(signal.SIGTERM, _pass_sigterm_on)
    from sagemaker_training import trainer

    trainer.train()  # runs the script, writes output/success or output/failure, exits with its status


def _run_built_in_trainer(env: TrainingEnv) -> None:
    """Our trainer: in this process, or as one process per accelerator on each host under torch.distributed.run."""
    import torch

    from imgclf import accelerator, distributed, hyperparameters
    from imgclf.train import run

    hps = hyperparameters.parse(env.hyperparameters)  # fails before any process starts
    device = accelerator.select_device(hps.allow_cpu)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    processes = distributed.processes_per_host(hps.processes_per_host, gpus)
    if gpus and processes > gpus:
        raise HyperparameterError(f"hyperparameter 'processes_per_host' is {processes}, but this host has {gpus} "
                                  f"GPU(s): use at most {gpus}, or auto (one per GPU)")  # fmt: skip
    if len(env.hosts) * processes == 1:
        run(env)
    else:
        distributed.launch(env, processes, "imgclf.worker")


def train_process() -> None:
    """One of the processes `train` starts under torch.distributed.run (`python -m imgclf.worker`)."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # until the trainer checkpoints on it
    rank = int(os.environ.get("RANK", 0))
    _configure_logging(f"[rank {rank}] ", logging.INFO if rank == 0 else logging.WARNING)
    base_dir = Path(os.environ.get(platform.BASE_DIR_ENV, platform.DEFAULT_BASE_DIR))
    with _job_outcome(base_dir):
        from imgclf.environment import TrainingEnv
        from imgclf.train import run

        run(TrainingEnv.from_environ())


def serve(argv: list[str] | None = None) -> None:
    """Serve the model in $SAGEMAKER_BASE_DIR/model over HTTP (/ping, /invocations, /execution-parameters)."""
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve the model under $SAGEMAKER_BASE_DIR/model (default /opt/ml/model) on port "
        "$SAGEMAKER_BIND_TO_PORT (default 8080): GET /ping (200 once the model has loaded and answered a warm-up "
        "request), POST /invocations with a JPEG or PNG, GET /execution-parameters. Requests are batched "
        "(IMGCLF_MAX_BATCH_SIZE, default 8; IMGCLF_MAX_BATCH_DELAY_MS, default 1) by multi-model-server, which "
        "listens on loopback only. Exits 1 with the reason if the model cannot serve.",
    )
    parser.add_argument("--host", default="0.0.0.0",
                        help="the address to listen on (default 0.0.0.0, as SageMaker needs; 127.0.0.1 keeps the "
                        "endpoint to this machine)")  # fmt: skip
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="keep the model server's config and logs here instead of a temporary folder (used outside the image)",
    )
    args = parser.parse_args(argv)
    _configure_logging()
    import torch

    from imgclf import accelerator
    from imgclf.serving import endpoint
    from imgclf.serving.settings import ServingSettings, SettingsError

    try:
        device = accelerator.select_device()  # before the server starts: an endpoint on unusable GPUs fails
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        settings = ServingSettings.from_environ(gpus, endpoint.cores())
    except (accelerator.GpuUnusable, SettingsError) as err:
        log.error("cannot serve: %s", err)
        sys.exit(EXIT_USER_ERROR)
    from sagemaker_inference import environment, model_server

    if args.config_dir is None and os.path.exists(model_server.REQUIREMENTS_PATH):
        model_server._install_requirements()  # in the image, as the toolkit does: the model's code/requirements.txt
    sys.exit(endpoint.run(Path(environment.model_dir), settings, args.host, args.config_dir))


def evaluate(argv: list[str] | None = None) -> None:
    """Score a challenger (and a champion) on one labelled test split; write the figures and the decision."""
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Score models on a labelled test split (DATA/test, else DATA; one subfolder per class) through "
        "their own inference hooks and write OUTPUT: each model's accuracy, top-5 accuracy and average loss, and "
        "with a challenger the promotion rule's decision (against the champion; without one, promote). The figures "
        "are those `launcher evaluate` computes. Exits 1 with the reason on input it cannot use.",
    )
    parser.add_argument("--data", type=Path, required=True, help="the labelled folder (or a dataset with test/)")
    parser.add_argument("--model", action="append", required=True, metavar="ROLE=PATH",
                        help="challenger=PATH, and champion=PATH where a model is in service: a model.tar.gz, a "
                        "folder holding one, or its extracted folder; a folder holding only a file named "
                        f"{NO_MODEL!r} means none")  # fmt: skip
    parser.add_argument("--min-improvement", type=float, default=0.0,
                        help="the rule's least drop of the average test loss (default 0)")  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="the evaluation file to write (JSON)")
    args = parser.parse_args(argv)
    _configure_logging()
    from imgclf import evaluate as evaluation
    from imgclf_contract.judging import Rule

    try:
        models = dict(evaluation.role_and_path(text) for text in args.model)
        with tempfile.TemporaryDirectory() as scratch:
            result = evaluation.evaluate(args.data, models, Rule(args.min_improvement), Path(scratch))
    except evaluation.EvaluationError as err:
        log.error("cannot evaluate: %s", err)
        sys.exit(EXIT_USER_ERROR)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    for role, figures in result["models"].items():
        log.info("%s: accuracy %.4f, average loss %.4f on %d images", role, figures["accuracy"], figures["loss"],
                 figures["images"])  # fmt: skip
    if "decision" in result:
        log.info(
            "decision: %s (%s)", "promote" if result["decision"]["promote"] else "keep", result["decision"]["reason"]
        )
    log.info("evaluation written to %s", args.output)


def resolve(argv: list[str] | None = None) -> None:
    """Decide what a retrain pipeline's execution works on: its dataset version, its champion, whether it runs."""
    from imgclf import resolve as resolving

    parser = argparse.ArgumentParser(
        prog="resolve",
        description="A retrain pipeline's first step: write OUTPUT with the execution's dataset version (the given "
        "one, else the newest ManifestFile under --datasets), its champion (the model package group's latest Approved "
        "model, else the endpoint's, else --no-model) and whether it proceeds (not while an earlier execution of the "
        "same pipeline runs). Exits 1 with the reason when AWS does not answer.",
    )
    parser.add_argument("--execution", required=True, help="this pipeline execution's ARN")
    parser.add_argument(
        "--dataset", default="", help=f"the given dataset version; empty or {resolving.NEWEST!r}: the newest"
    )
    parser.add_argument("--datasets", required=True, metavar="S3_PREFIX", help="where the store writes versions")
    parser.add_argument("--model-package-group", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--no-model", required=True, metavar="S3_URI", help="what stands for no champion")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    _configure_logging()
    import boto3

    try:
        resolved = resolving.resolve(boto3.Session(), args.execution, args.dataset, args.datasets,
                                     args.model_package_group, args.endpoint, args.no_model)  # fmt: skip
    except resolving.ResolveError as err:
        log.error("cannot resolve the execution's inputs: %s", err)
        sys.exit(EXIT_USER_ERROR)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(resolved, indent=1))
    log.info("dataset %s; champion %s", resolved["dataset_version"] or "none", resolved["champion_model"])
    if not resolved["proceed"]:
        log.info("%s", resolved["reason"])
