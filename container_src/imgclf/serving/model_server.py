"""multi-model-server behind the front: loopback ports only, our handler service, the model registered to batch.

The SageMaker inference toolkit reads the SAGEMAKER_* variables and writes MMS's configuration; we then move
both of MMS's APIs to loopback ports (the management API can load code from a URL, so nothing outside this
host may reach it), give the server its own config file and temp folder (MMS keeps its pid file and its
workers' Unix sockets there, so several servers can share a host), and register the model through the
management API, which waits until its workers have started. We supervise the process tree ourselves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

from imgclf.serving.settings import ServingSettings

log = logging.getLogger(__name__)

HANDLER_SERVICE = "imgclf.serving.handler_service"
MODEL_NAME = "model"
WORKER_SCRIPT = "mms/model_service_worker.py"  # a Python worker of MMS, and the child it forks for each connection
STOP_GRACE_SECONDS = 20
LOOPBACK = "127.0.0.1"
MMS_PORTS = (20000, 32767)  # multi-model-server refuses ports from 32767 up
REQUEST_SIZE_MARGIN = 2**20  # MMS's own limits sit above the front's, so the front's JSON 413 is the one sent
# The temp folder holds the workers' sockets, whose paths may not exceed 107 bytes: keep it short, not in config_dir.
SOCKET_ROOT = "/tmp"
# OpenMP threads spin a while before they sleep. Where the workers' torch threads outnumber the cores, the
# spinning threads starve the working ones (2 requests/s instead of 20 measured on 2 cores), so they then wait
# passively; otherwise spinning is faster (p50 at concurrency 1: 45 against 76 ms measured on 2 cores).
OVERSUBSCRIBED_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


class ModelServerError(RuntimeError):
    """multi-model-server did not start, or refused the model."""


def free_loopback_ports(count: int, within: tuple[int, int] | None = None) -> list[int]:
    """Ports free on 127.0.0.1 below 32767, from SageMaker's safe range when it gives one."""
    low, high = within or MMS_PORTS
    high = min(high, MMS_PORTS[1] - 1)
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates[:500]:
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise ModelServerError(f"no {count} free ports between {low} and {high} on {LOOPBACK}")


class ModelServer:
    """One multi-model-server process tree whose APIs listen on loopback ports only."""

    def __init__(self, config_dir: Path, settings: ServingSettings) -> None:
        self.config_dir = config_dir
        self.settings = settings
        inference_port, management_port = free_loopback_ports(2, settings.safe_ports)
        self.inference_url = f"http://{LOOPBACK}:{inference_port}"
        self.management_url = f"http://{LOOPBACK}:{management_port}"
        self.process: subprocess.Popen | None = None
        self._tmp_dir: Path | None = None

    def config(self) -> str:
        """The toolkit's MMS configuration, with our addresses, limits and handler."""
        from sagemaker_inference import environment, model_server

        text = model_server._generate_mms_config_properties(environment.Environment(), HANDLER_SERVICE)
        properties = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        properties.update(
            inference_address=self.inference_url,
            management_address=self.management_url,
            # A batch carries up to max_batch_size bodies in one message, and its answers in one message back.
            max_request_size=str(self.settings.max_batch_size * self.settings.max_payload_bytes + REQUEST_SIZE_MARGIN),
            max_response_size=str(self.settings.max_batch_size * self.settings.max_payload_bytes + REQUEST_SIZE_MARGIN),
            default_response_timeout=str(self.settings.timeout_seconds),
            load_models="",  # nothing at start-up: `register` loads the model and waits for its workers
        )
        return "".join(f"{key}={value}\n" for key, value in properties.items())

    def start(self) -> None:
        from sagemaker_inference import environment, model_server

        self.config_dir.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = Path(tempfile.mkdtemp(prefix="mms-", dir=SOCKET_ROOT))
        config_file = self.config_dir / "mms.properties"
        config_file.write_text(self.config())
        python_path = os.pathsep.join(filter(None, [environment.code_dir, os.environ.get("PYTHONPATH")]))
        command = [
            sys.executable, "-m", "mms.model_server", "--start", "--foreground",
            "--mms-config", str(config_file),
            "--model-store", "/",
            "--log-config", model_server.DEFAULT_MMS_LOG_FILE,
        ]  # fmt: skip
        env = {
            **(OVERSUBSCRIBED_ENVIRONMENT if self.settings.oversubscribed else {}),
            **os.environ,  # the user's own OMP_WAIT_POLICY wins
            "TMPDIR": str(self._tmp_dir),
            "TEMP": str(self._tmp_dir),
            "PYTHONPATH": python_path,
            # Our model_fn sizes its torch threads from these (inference.threads_per_worker).
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(self.settings.workers),
            "IMGCLF_THREADS_PER_WORKER": str(self.settings.threads_per_worker),
        }
        log.info("starting multi-model-server on %s (management %s)", self.inference_url, self.management_url)
        self.process = subprocess.Popen(command, env=env, cwd=self.config_dir)  # MMS writes logs/ into its cwd

    def register(self, model_dir: Path) -> None:
        """Register the model and wait until its workers have started. MMS gets one message per batch (the front
        batches, see `wire`), hence batch size 1."""
        query = urllib.parse.urlencode(
            {
                "url": str(model_dir.resolve()),
                "model_name": MODEL_NAME,
                "batch_size": 1,
                "initial_workers": self.settings.workers,
                "response_timeout": self.settings.timeout_seconds,
                "synchronous": "true",
            }
        )
        request = urllib.request.Request(f"{self.management_url}/models?{query}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                answer.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail)["message"]
            raise ModelServerError(f"multi-model-server refused the model in {model_dir}: {detail}") from err

    def answering(self) -> bool:
        """The frontend answers on its management port (the model may still be loading)."""
        try:
            with urllib.request.urlopen(f"{self.management_url}/models", timeout=2):
                return True
        except OSError:
            return False

    def workers_alive(self) -> int:
        """Running processes of this server's model workers: the ones the frontend started and the children they fork
        (a child orphaned by its worker's death still answers on its connection). Found by their --tmp-dir, ours."""
        if self._tmp_dir is None:
            return 0
        alive = 0
        for process in psutil.process_iter(["cmdline", "status"]):
            command = process.info["cmdline"] or []
            if process.info["status"] != psutil.STATUS_ZOMBIE and WORKER_SCRIPT in " ".join(command[:2]):
                alive += str(self._tmp_dir) in command
        return alive

    def terminate(self) -> None:
        """End the whole process tree (SIGTERM, SIGKILL after a grace period) without reaping the server."""
        if self.process is not None:
            stop_process_tree(self.process.pid)

    def stop(self) -> None:
        """End the process tree, reap it and remove the temp folder."""
        if self.process is not None:
            stop_process_tree(self.process.pid)
            self.process.wait()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)


def stop_process_tree(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM a process and all its descendants (MMS's Java frontend and Python workers), SIGKILL stragglers."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
