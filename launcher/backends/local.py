"""The `local` backend: SageMaker local mode (sagemaker-core), our image in Docker through docker-compose.

Jobs use `file://` inputs and outputs; their containers' output is copied to `<workdir>/jobs/<job>/train.log`
while they run, and a running job can be stopped (SIGTERM, as SageMaker's StopTrainingJob). Endpoints are
hosted by a detached `launcher.local_endpoint` process and queried as the original project's client does (raw
JPEG in, JSON out).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from imgclf_contract import metrics
from launcher import contract, hosted, transform
from launcher.backends import local_mode
from launcher.backends.base import StopsTraining, SwapsModels, Transforms
from launcher.backends.sagemaker import MAX_RUN_SECONDS, Hosting, training_request
from launcher.errors import LauncherError
from launcher.progress import muted_stdout, say
from launcher.records import Endpoint, RecordStore, TrainingJob, TransformJob
from launcher.specs import DeploySpec, TrainingSpec, TransformSpec
from launcher.tracking import Tracker

INSTANCE_TYPES = ("local", "local_gpu")
FIND_CONTAINERS_SECONDS = 0.5  # between looks for a job's containers until all of them are there


# The bytes local mode's transformer takes for text (sagemaker.core.local.data.NoneSplitter._is_binary).
TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F})


def check_instance_type(instance_type: str, doing: str) -> None:
    if instance_type not in INSTANCE_TYPES:
        raise LauncherError(
            f"the local backend {doing} on instance types {' or '.join(INSTANCE_TYPES)}, not {instance_type!r}"
        )


def local_mode_can_send(data: bytes) -> bool:
    """Whether local mode's transformer can send a file: it decodes one without control bytes as UTF-8 text and
    ends the whole job when that fails. Such a file is no JPEG or PNG (their headers hold control bytes)."""
    if data.translate(None, TEXT_BYTES):
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class ContainerLogs:
    """Copies the output of a job's containers into one log file while the job runs: `docker logs -f`, one
    reader per container, each line prefixed with the container's name (as compose does) when there are several.

    Use as a context manager around the job; on exit it waits for the readers, so the file is complete once the
    containers have exited (and before they are removed).
    """

    def __init__(self, container_root: Path, log_file: Path, instance_count: int):
        self.container_root, self.log_file, self.instance_count = container_root, log_file, instance_count
        self.job_ended = threading.Event()
        self.lock = threading.Lock()  # one line at a time into the file
        self.readers: list[threading.Thread] = []
        self.finder = threading.Thread(target=self._find_containers, name=f"find {container_root.name}", daemon=True)

    def __enter__(self) -> ContainerLogs:
        self.log = open(self.log_file, "w")
        self.finder.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.job_ended.set()
        self.finder.join()
        for reader in self.readers:
            reader.join()
        self.log.close()

    def _find_containers(self) -> None:
        """Start a reader for each of the job's containers once it has started, until all are there or the job ended
        (`docker logs --follow` on a container created but not yet started returns at once, with nothing)."""
        followed: set[str] = set()
        while len(followed) < self.instance_count:
            ended = self.job_ended.is_set()  # read first: containers listed after the end are all there is
            for container in local_mode.containers(self.container_root, "running", "exited"):
                if container.id not in followed:
                    followed.add(container.id)
                    self.readers.append(threading.Thread(target=self._copy, args=(container,), daemon=True))
                    self.readers[-1].start()
            if ended:
                return
            self.job_ended.wait(FIND_CONTAINERS_SECONDS)

    def _copy(self, container: local_mode.LocalContainer) -> None:
        """Copy one container's output, from its start until it exits (text mode turns its tty's CRLF into LF)."""
        prefix = f"{container.name} | " if self.instance_count > 1 else ""
        command = ["docker", "logs", "--follow", container.id]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as follow:
            for line in follow.stdout:
                with self.lock:
                    self.log.write(prefix + line.rstrip("\n") + "\n")
                    self.log.flush()


class LocalBackend(StopsTraining, SwapsModels, Transforms):
    name = "local"
    # Every local-mode job names its hosts algo-1, algo-2, ... on the one `sagemaker-local` network, so two jobs
    # at once would resolve each other's hosts.
    max_concurrent_jobs = 1

    def __init__(self, workdir: Path, records: RecordStore, tracker: Tracker | None = None):
        super().__init__(workdir, records, tracker)
        self._running: dict[str, Path] = {}  # job name -> its compose files' folder, while `train` runs it
        self._stopping: set[str] = set()  # jobs that `stop_training` stopped

    def image_identity(self, image: str) -> dict[str, Any]:
        """The image's Docker ID and repository digests on this machine (none where Docker does not know it)."""
        inspected = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", image],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if inspected.returncode != 0:
            return {"image": image, "id": None}
        image_id, repo_digests = inspected.stdout.strip().split(" ", 1)
        return {"image": image, "id": image_id, "repo_digests": json.loads(repo_digests)}

    def default_endpoint_instance_type(self, training_instance_type: str | None) -> str:
        """Where the job trained, if that was in local mode (a SageMaker job's model serves on `local`)."""
        return training_instance_type if training_instance_type in INSTANCE_TYPES else "local"

    def launch(self, spec: TrainingSpec) -> TrainingJob:
        check_instance_type(spec.instance_type, "trains")
        channels = {name: Path(path).resolve() for name, path in spec.channels.items()}
        for name, path in channels.items():
            if not path.exists():
                raise LauncherError(f"channel {name!r}: {path} does not exist")
        container_root = self.workdir / "jobs" / spec.job_name
        container_root.mkdir(parents=True, exist_ok=True)
        channels = {name: str(path) for name, path in channels.items()}
        return spec.record(self.name, channels=channels, log=str(container_root / "train.log"))

    def run_to_end(self, job: TrainingJob, spec: TrainingSpec) -> dict[str, float]:
        """Run the job in local mode (Ctrl-C reaches docker-compose too, which stops the containers)."""
        output_dir = self.output_dir_on_host(spec) / job.name / "output"
        container_root, log = self.workdir / "jobs" / job.name, Path(job.log)
        channels = {name: f"file://{path}" for name, path in job.channels.items()}
        output = f"file://{output_dir}"
        request = training_request(spec, job.name, local_mode.LOCAL_ROLE, output, channels, MAX_RUN_SECONDS)
        say(f"training job {job.name} started in SageMaker local mode ({spec.instance_count} x {spec.image})")
        failure = self._run(request, spec, container_root, log)
        if job.name in self._stopping:
            self._stopping.discard(job.name)
            job.status, job.failure_reason = "Stopped", "stopped on request: its containers were sent SIGTERM"
        elif failure:
            job.status, job.failure_reason = "Failed", f"{failure}; see the container log {log}"
        else:
            job.status = "Completed"
            job.model_data = str(output_dir / contract.MODEL_ARTIFACT)
            job.output_data = str(output_dir / contract.OUTPUT_ARTIFACT)
        return metrics.final_values(log.read_text(errors="replace"))

    def _run(self, request: dict[str, Any], spec: TrainingSpec, container_root: Path, log_file: Path) -> str | None:
        """Run the job with its containers' output copied to `log_file` (and to the console only if `spec.echo`);
        remove its containers afterwards. Returns why it failed, or None."""
        self._running[spec.job_name] = container_root
        try:
            with (
                ContainerLogs(container_root, log_file, spec.instance_count),
                contextlib.nullcontext() if spec.echo else muted_stdout(),  # local mode prints container output
            ):
                local_mode.run_training_job(local_mode.session(container_root=container_root), request)
        except Exception as err:  # local mode raises RuntimeError/ValueError variants for a failed container
            return str(err)
        finally:
            del self._running[spec.job_name]
            local_mode.remove_containers(container_root, hosted.STOP_GRACE_SECONDS)
        return None

    def stop_training(self, job_name: str) -> None:
        """SIGTERM to the job's containers, SIGKILL after a grace period, as SageMaker's StopTrainingJob; the job
        ends as Stopped. Returns once its containers have exited."""
        container_root = self._running.get(job_name)
        if container_root is None:
            raise LauncherError(f"training job {job_name} is not running here")
        self._stopping.add(job_name)
        if not local_mode.stop_running_containers(container_root, hosted.STOP_GRACE_SECONDS):
            self._stopping.discard(job_name)
            raise LauncherError(f"training job {job_name} has no running container to stop (yet, or any more)")

    def deploy(self, spec: DeploySpec) -> Endpoint:
        check_instance_type(spec.instance_type, "serves")
        base_dir = self.new_endpoint_dir(spec.endpoint_name)
        port = spec.port or hosted.free_port()
        record = spec.record(
            self.name,
            port=port,
            url=f"http://127.0.0.1:{port}",
            endpoint_dir=str(base_dir),
            environment=spec.serving_environment(),
        )
        try:
            return hosted.serve_routed(self.records, record, self._server(record), spec.listen, spec.startup_timeout)
        except BaseException:  # the host process has ended by now: nothing can start another container
            local_mode.remove_containers(base_dir, hosted.STOP_GRACE_SECONDS)
            raise

    def swap_model(self, endpoint: Endpoint, spec: DeploySpec, reason: str) -> Endpoint:
        try:
            return hosted.swap(self.records, endpoint, self._server(endpoint), spec, reason)
        finally:  # the old model's containers once stopped, or the new one's if it failed to start
            for folder in Path(endpoint.endpoint_dir).glob("model-*"):
                if folder.name != f"model-{endpoint.generation}":
                    local_mode.remove_containers(folder, hosted.STOP_GRACE_SECONDS)

    @staticmethod
    def _server(endpoint: Endpoint) -> hosted.ServerCommand:
        """A host process that deploys the model in SageMaker local mode, published on a loopback port."""

        def command(model_data: str, folder: Path, port: int) -> tuple[list[str], dict[str, str]]:
            return hosted.module_command(
                "launcher.local_endpoint",
                name=f"{endpoint.name}-{folder.name}",
                image=endpoint.image,
                model_data=f"file://{Path(model_data).resolve()}",
                port=port,
                listen="127.0.0.1",
                instance_type=endpoint.instance_type,
                env=json.dumps(endpoint.environment),
                container_root=folder,
            ), dict(os.environ)

        return command

    def classify(
        self,
        spec: TransformSpec,
        job: TransformJob,
        files: list[str],
        predictions: transform.Predictions,
        progress: transform.Progress,
    ) -> None:
        """Local mode's batch transform with the image. It reads the top of one folder only, so the
        files are linked into one first, under names that keep their order; files it cannot send are answered
        here."""
        check_instance_type(spec.instance_type, "transforms")
        folder = self.workdir / "transforms" / spec.name / "local"
        shutil.rmtree(folder, ignore_errors=True)
        staged, answers, containers = folder / "input", folder / "output", folder / "containers"
        staged.mkdir(parents=True)
        containers.mkdir()  # local mode makes its folders in it, not it
        root = Path(spec.input)
        sendable = []
        for file in files:
            if local_mode_can_send((root / file).read_bytes()):
                sendable.append(file)
            else:
                predictions.add({"file": file, "error": "not an image: text that is not UTF-8", "status": 400})
                progress.tick(failed=True)
        if not sendable:
            return
        files = sendable
        names = [f"{i:06d}{Path(file).suffix.lower()}" for i, file in enumerate(files)]
        for name, file in zip(names, files, strict=True):
            (staged / name).symlink_to((root / file).resolve())
        session = local_mode.session(serving_port=hosted.free_port(), container_root=containers, listen="127.0.0.1")
        say(f"transform {spec.name}: {len(files)} images through the image {spec.image} in SageMaker local mode")
        progress.begin()
        try:
            with muted_stdout():  # local mode copies the container's log to stdout
                model = f"file://{Path(spec.model_data).resolve()}"
                env, role = spec.serving_environment(), local_mode.LOCAL_ROLE
                hosting = Hosting(spec.image, model, role, env, spec.instance_type)
                content_type = transform.job_content_type(files)
                local_mode.transform(session, spec.name, hosting, f"file://{staged}", f"file://{answers}", content_type)
        finally:
            local_mode.remove_containers(containers, hosted.STOP_GRACE_SECONDS)
        outs = {file: answers / f"{name}.out" for name, file in zip(names, files, strict=True)}

        def read(file: str) -> bytes | None:
            return outs[file].read_bytes() if outs[file].is_file() else None

        transform.add_out_files(files, read, spec.logits, predictions, progress, "local mode wrote no answer for it")
        shutil.rmtree(staged)

    def predict(self, endpoint: Endpoint, body: bytes, content_type: str) -> Any:
        return hosted.invoke(endpoint, body, content_type)

    def stop(self, endpoint: Endpoint) -> None:
        """End the endpoint's host process (and its docker-compose), then remove whatever container is left."""
        hosted.stop(self.records, endpoint)
        local_mode.remove_containers(Path(endpoint.endpoint_dir), hosted.STOP_GRACE_SECONDS)
