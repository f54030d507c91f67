"""The `process` backend: the image's `train` and `serve` run as plain processes on this machine.

No Docker and no AWS: each job gets a folder laid out like `/opt/ml` (passed as SAGEMAKER_BASE_DIR), and its
artifacts are packed the way SageMaker uploads them, `<output>/<job>/output/model.tar.gz`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from imgclf_contract import metrics, platform
from launcher import contract, hosted, supervisor, transform
from launcher.backends.base import StopsTraining, SwapsModels, Transforms
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, RecordStore, TrainingJob, TransformJob
from launcher.specs import DeploySpec, TrainingSpec, TransformSpec
from launcher.tracking import Tracker


def container_command(name: str) -> str:
    """The image's `train` or `serve` executable, looked for beside this Python, then on PATH."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise LauncherError(
            f"the process backend runs the container's {name!r} command on this machine, and none was found; "
            "install it with: pip install -r container_src/requirements.txt ./container_src/contract ./container_src"
        )
    return found


RESTARTS_ENV = "IMGCLF_ENDPOINT_RESTARTS"


def restart_limit() -> int:
    """How many times an endpoint's model server may be restarted within the supervisor's window."""
    text = os.environ.get(RESTARTS_ENV, str(supervisor.DEFAULT_RESTARTS))
    if not text.isdigit():
        raise LauncherError(f"{RESTARTS_ENV}={text!r}: expected a whole number of restarts, such as 3 (0: none)")
    return int(text)


class ProcessBackend(StopsTraining, SwapsModels, Transforms):
    name = "process"

    def __init__(self, workdir: Path, records: RecordStore, tracker: Tracker | None = None):
        super().__init__(workdir, records, tracker)
        self._running: dict[str, subprocess.Popen] = {}  # job name -> its `train` process

    def image_identity(self, image: str) -> dict[str, Any]:
        return {"image": None, "note": "process backend: container_src of this checkout, no image"}

    # -- training ---------------------------------------------------------------------------------------------
    def launch(self, spec: TrainingSpec) -> TrainingJob:
        """The job's /opt/ml folder: its config and links to its channels."""
        if spec.instance_count != 1:
            raise LauncherError("the process backend runs one instance; use --backend local for several")
        base_dir = self.workdir / "jobs" / spec.job_name
        if base_dir.exists():
            raise LauncherError(f"job folder {base_dir} already exists; choose another --job-name")
        channels = {name: Path(path) for name, path in spec.channels.items()}
        contract.write_job_config(base_dir, spec.hyperparameters, channels)
        return spec.record(
            self.name,
            image=None,  # this checkout's container code runs, in no image and on no instance type
            instance_type=None,
            channels={name: str(path.resolve()) for name, path in channels.items()},
            job_dir=str(base_dir),
            log=str(base_dir / "train.log"),
        )

    def run_to_end(self, job: TrainingJob, spec: TrainingSpec) -> dict[str, float]:
        """Run the image's `train` in the job's folder, then pack its artifacts as SageMaker uploads them."""
        base_dir, log = Path(job.job_dir), Path(job.log)
        say(f"training job {job.name} started (folder {base_dir})")
        returncode = self._run_streamed([container_command("train")], base_dir, log, job.name, spec.echo)
        artifacts = self.output_dir_on_host(spec) / job.name / "output"
        job.output_data = str(contract.pack(base_dir / "output" / "data", artifacts / contract.OUTPUT_ARTIFACT))
        failure = base_dir / "output" / "failure"
        if returncode == 0:
            job.model_data = str(contract.pack(base_dir / "model", artifacts / contract.MODEL_ARTIFACT))
            job.status = "Completed"
        else:
            # Killed by a signal, or ended by SIGTERM after checkpointing (128 + 15, as a shell reports it).
            job.status = "Stopped" if returncode < 0 or returncode == 128 + signal.SIGTERM else "Failed"
            job.failure_reason = failure.read_text()[:1024] if failure.is_file() else f"exit status {returncode}"
        return metrics.final_values(log.read_text(errors="replace"))

    def stop_training(self, job_name: str) -> None:
        """SIGTERM, as SageMaker sends when it stops a job; the job ends as Stopped."""
        process = self._running.get(job_name)
        if process is None:
            raise LauncherError(f"training job {job_name} is not running here")
        process.send_signal(signal.SIGTERM)

    def discard_checkpoints(self, job_name: str) -> None:
        shutil.rmtree(self.workdir / "jobs" / job_name / "checkpoints", ignore_errors=True)

    def _run_streamed(self, command: list[str], base_dir: Path, log_file: Path, job_name: str, echo: bool) -> int:
        """Run the job's process, copying its output to the job log (and the console if `echo`); Ctrl-C stops it
        cleanly."""
        env = {
            **os.environ,
            platform.BASE_DIR_ENV: str(base_dir),
            platform.TRAINING_JOB_NAME_ENV: job_name,  # as SageMaker sets it: the job's checkpoints go under its name
            "PYTHONUNBUFFERED": "1",
            # "algo-1" does not resolve on this machine: tell the training toolkit (script mode) not to wait for it.
            "SM_STUDIO_LOCAL_MODE": "true",
        }
        with (
            open(log_file, "w") as log,
            subprocess.Popen(
                command, env=env, cwd=base_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ) as process,
        ):
            self._running[job_name] = process
            try:
                for line in process.stdout:
                    if echo:
                        sys.stdout.write(line)
                    log.write(line)
                    log.flush()
                return process.wait()
            except KeyboardInterrupt:
                say("interrupted: stopping the training process")
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(hosted.STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
            finally:
                self._running.pop(job_name, None)

    # -- serving ----------------------------------------------------------------------------------------------
    def deploy(self, spec: DeploySpec) -> Endpoint:
        base_dir = self.new_endpoint_dir(spec.endpoint_name)
        port = spec.port or hosted.free_port()
        record = spec.record(
            self.name,
            port=port,
            url=f"http://127.0.0.1:{port}",
            endpoint_dir=str(base_dir),
            environment=spec.serving_environment(),
        )
        record.image = None  # served from this checkout, not an image
        server = self._supervised(record.name, record.environment)
        return hosted.serve_routed(self.records, record, server, spec.listen, spec.startup_timeout)

    def swap_model(self, endpoint: Endpoint, spec: DeploySpec, reason: str) -> Endpoint:
        return hosted.swap(self.records, endpoint, self._supervised(endpoint.name, endpoint.environment), spec, reason)

    def _supervised(self, endpoint: str, environment: dict[str, str]) -> hosted.ServerCommand:
        """The endpoint's `serve` under a supervisor that restarts it if it exits after serving (launcher.supervisor),
        at most IMGCLF_ENDPOINT_RESTARTS times (default 3) within ten minutes."""
        serve, records, restarts = self._server(environment), self.records.root, restart_limit()

        def command(model_data: str, base_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
            argv, env = serve(model_data, base_dir, port)
            ping = f"http://127.0.0.1:{port}/ping"
            return supervisor.command(argv, ping=ping, records=records, endpoint=endpoint, restarts=restarts), env

        return command

    @staticmethod
    def _server(environment: dict[str, str]) -> hosted.ServerCommand:
        """The image's `serve` with the model unpacked into its folder, on a loopback port."""

        def command(model_data: str, base_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
            contract.unpack(Path(model_data), base_dir / "model")
            env = {
                **os.environ,
                **environment,
                platform.BASE_DIR_ENV: str(base_dir),
                platform.MODEL_SERVER_PORT_ENV: str(port),
            }
            return [container_command("serve"), "--host", "127.0.0.1", "--config-dir", str(base_dir / "server")], env

        return command

    def classify(
        self,
        spec: TransformSpec,
        job: TransformJob,
        files: list[str],
        predictions: transform.Predictions,
        progress: transform.Progress,
    ) -> None:
        """A model server of its own on this machine, sent the files with bounded concurrency, then stopped."""
        base_dir = self.workdir / "transforms" / spec.name / "server"
        shutil.rmtree(base_dir, ignore_errors=True)
        base_dir.mkdir(parents=True)
        port = hosted.free_port()
        command, env = self._server(spec.serving_environment())(spec.model_data, base_dir, port)
        pid, url, log = hosted.start_server(
            f"transform {spec.name}", command, env, base_dir, port, spec.startup_timeout
        )
        try:
            concurrency = spec.concurrency or transform.server_concurrency(url)
            say(f"transform {spec.name}: {concurrency} requests at once to {url} (log {log})")
            classifier = transform.HttpClassifier(url, concurrency, spec.logits)
            classifier.run(Path(spec.input), files, predictions, progress)
        finally:
            hosted.stop_group(pid)
            shutil.rmtree(base_dir / "model", ignore_errors=True)  # the log stays

    def predict(self, endpoint: Endpoint, body: bytes, content_type: str) -> Any:
        return hosted.invoke(endpoint, body, content_type)

    def stop(self, endpoint: Endpoint) -> None:
        hosted.stop(self.records, endpoint)
