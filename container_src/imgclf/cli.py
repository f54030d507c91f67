"""The image's two executables, `train` and `serve`, as SageMaker invokes them."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from imgclf import contract
from imgclf.errors import Preempted, UserError

log = logging.getLogger("imgclf")

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_STOPPED = 128 + 15  # ended by SIGTERM, as a shell reports it; the checkpoint lets the job resume


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)


def _write_failure(base_dir: Path, reason: str) -> None:
    """SageMaker shows the first 1024 characters of output/failure as the job's FailureReason."""
    failure = base_dir / contract.FAILURE_FILE
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(reason)


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
    base_dir = Path(os.environ.get(contract.BASE_DIR_ENV, contract.DEFAULT_BASE_DIR))
    try:
        from imgclf import accelerator
        from imgclf.environment import TrainingEnv
        from imgclf.train import run

        env = TrainingEnv.from_environ()
        for folder in (env.model_dir, env.output_data_dir):  # SageMaker makes them; a bare host may not have
            folder.mkdir(parents=True, exist_ok=True)
        if env.user_program:
            # A user's script picks its own device: stop it too where the GPUs are there but unusable.
            accelerator.select_device(str(env.hyperparameters.get("allow_cpu", "")).lower() in accelerator.TRUE)
            log.info("script mode: the SageMaker training toolkit runs %s", env.user_program)
            signal.signal(signal.SIGTERM, _pass_sigterm_on)
            from sagemaker_training import trainer

            trainer.train()  # runs the script, writes output/success or output/failure, exits with its status
        else:
            run(env)
    except Preempted as stopped:
        log.warning("%s; the checkpoint in %s/%s resumes the job when it starts again", stopped, base_dir,
                    contract.CHECKPOINT_DIR)  # fmt: skip
        sys.exit(EXIT_STOPPED)
    except UserError as err:
        log.error("training failed: %s", err)
        _write_failure(base_dir, f"ClientError: {err}")
        sys.exit(EXIT_USER_ERROR)
    except Exception as err:
        log.exception("training failed with an internal error")
        _write_failure(base_dir, f"AlgorithmError: {err!r}\n\n{traceback.format_exc()}")
        sys.exit(EXIT_INTERNAL_ERROR)
    (base_dir / contract.SUCCESS_FILE).touch()


def serve(argv: list[str] | None = None) -> None:
    """Serve the model in $SAGEMAKER_BASE_DIR/model over HTTP (/ping, /invocations)."""
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve the model under $SAGEMAKER_BASE_DIR/model (default /opt/ml/model) with multi-model-server "
        "on port $SAGEMAKER_BIND_TO_PORT (default 8080): GET /ping, POST /invocations with a JPEG or PNG.",
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="keep the server's config and temp files here instead of /etc and /tmp, so that several servers "
        "can run on one host (used outside the image)",
    )
    args = parser.parse_args(argv)
    _configure_logging()
    from imgclf import accelerator

    try:
        accelerator.select_device()  # before the server starts: an endpoint on unusable GPUs fails, not crawls
    except accelerator.GpuUnusable as err:
        log.error("cannot serve: %s", err)
        sys.exit(EXIT_USER_ERROR)
    from imgclf.serving.model_server import serve as run_server

    sys.exit(run_server(args.config_dir))
