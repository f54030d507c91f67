"""The `process` backend: the image's `train` and `serve` run as plain processes on this machine.

No Docker and no AWS: each job gets a folder laid out like `/opt/ml` (passed as SAGEMAKER_BASE_DIR), and its
artifacts are packed the way SageMaker uploads them, `<output>/<job>/output/model.tar.gz`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from launcher import contract
from launcher.backends.base import Backend, DeploySpec, TrainingSpec
from launcher.errors import LauncherError
from launcher.progress import say

PING_INTERVAL = 0.5
STOP_GRACE_SECONDS = 30  # SageMaker sends SIGKILL 30 s after SIGTERM
LOG_TAIL_LINES = 30
MMS_PORT_RANGE = (20000, 32767)  # MMS rejects ports >= 32767


def container_command(name: str) -> str:
    """The image's `train` or `serve` executable, looked for beside this Python, then on PATH."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise LauncherError(
            f"the process backend runs the container's {name!r} command on this machine, and none was found; "
            "install it with: pip install -r container_src/requirements.txt ./container_src"
        )
    return found


def free_port() -> int:
    """A free port on 127.0.0.1 below 32767: MMS refuses higher ones, so the kernel's ephemeral range won't do."""
    for port in random.sample(range(*MMS_PORT_RANGE), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LauncherError(f"no free port found in {MMS_PORT_RANGE}; pass --port")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


class ProcessBackend(Backend):
    name = "process"

    # -- training ---------------------------------------------------------------------------------------------
    def train(self, spec: TrainingSpec) -> dict[str, Any]:
        if spec.instance_count != 1:
            raise LauncherError("the process backend runs one instance; use --backend local for several")
        base_dir = self.workdir / "jobs" / spec.job_name
        if base_dir.exists():
            raise LauncherError(f"job folder {base_dir} already exists; choose another --job-name")
        channels = {name: Path(path) for name, path in spec.channels.items()}
        record = {
            "name": spec.job_name,
            "backend": self.name,
            "status": "InProgress",
            "created": time.time(),
            "hyperparameters": spec.hyperparameters,
            "channels": {name: str(path.resolve()) for name, path in channels.items()},
            "job_dir": str(base_dir),
            "log": str(base_dir / "train.log"),
        }
        contract.write_job_config(base_dir, spec.hyperparameters, channels)
        self.records.save("jobs", record)
        say(f"training job {spec.job_name} started (folder {base_dir})")
        returncode = self._run_streamed([container_command("train")], base_dir, Path(record["log"]))

        artifacts = Path(spec.output_path) / spec.job_name / "output"
        record["output_data"] = str(contract.pack(base_dir / "output" / "data", artifacts / contract.OUTPUT_ARTIFACT))
        failure = base_dir / "output" / "failure"
        if returncode == 0:
            record["model_data"] = str(contract.pack(base_dir / "model", artifacts / contract.MODEL_ARTIFACT))
            metrics_file = base_dir / "output" / "data" / "metrics.json"
            if metrics_file.is_file():
                record["test_metrics"] = json.loads(metrics_file.read_text()).get("test")
            record["status"] = "Completed"
        else:
            record["status"] = "Stopped" if returncode < 0 else "Failed"
            record["failure_reason"] = failure.read_text()[:1024] if failure.is_file() else f"exit status {returncode}"
        record["ended"] = time.time()
        self.records.save("jobs", record)
        return record

    def _run_streamed(self, command: list[str], base_dir: Path, log_file: Path) -> int:
        """Run the job's process, copying its output to the console and the job log; Ctrl-C stops it cleanly."""
        env = {
            **os.environ,
            "SAGEMAKER_BASE_DIR": str(base_dir),
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
            try:
                for line in process.stdout:
                    sys.stdout.write(line)
                    log.write(line)
                return process.wait()
            except KeyboardInterrupt:
                say("interrupted: stopping the training process")
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise

    # -- serving ----------------------------------------------------------------------------------------------
    def deploy(self, spec: DeploySpec) -> dict[str, Any]:
        base_dir = self.workdir / "endpoints" / spec.endpoint_name
        if base_dir.exists():
            raise LauncherError(f"endpoint folder {base_dir} already exists; choose another endpoint name")
        contract.unpack(Path(spec.model_data), base_dir / "model")
        port = spec.port or free_port()
        env = {
            **os.environ,
            **spec.environment,
            "SAGEMAKER_BASE_DIR": str(base_dir),
            "SAGEMAKER_BIND_TO_PORT": str(port),
        }
        if spec.workers:
            env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(spec.workers)
        log_file = base_dir / "serve.log"
        with open(log_file, "w") as log:
            process = subprocess.Popen(
                [container_command("serve"), "--config-dir", str(base_dir / "server")],
                env=env,
                cwd=base_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `stop` ends MMS's Java and workers with it
            )
        record = {
            "name": spec.endpoint_name,
            "backend": self.name,
            "status": "Creating",
            "created": time.time(),
            "model_data": spec.model_data,
            "job_name": spec.job_name,
            "url": f"http://127.0.0.1:{port}",
            "pid": process.pid,
            "endpoint_dir": str(base_dir),
            "log": str(log_file),
        }
        self.records.save("endpoints", record)
        say(f"endpoint {spec.endpoint_name} starting on {record['url']} (log {log_file})")
        try:
            self._wait_until_healthy(record, process, spec.startup_timeout)
        except BaseException:
            self._stop_process_group(process.pid)
            record["status"] = "Failed"
            self.records.save("endpoints", record)
            raise
        record["status"] = "InService"
        self.records.save("endpoints", record)
        return record

    def _wait_until_healthy(self, record: dict[str, Any], process: subprocess.Popen, timeout: float) -> None:
        start = time.monotonic()
        next_note = start + 10
        while True:
            if process.poll() is not None:
                raise LauncherError(
                    f"the model server exited with status {process.returncode} before it was healthy; "
                    f"last lines of {record['log']}:\n{log_tail(Path(record['log']))}"
                )
            if self._model_ready(record["url"]):
                say(f"endpoint {record['name']} is in service after {time.monotonic() - start:.0f} s")
                return
            now = time.monotonic()
            if now - start > timeout:
                raise LauncherError(
                    f"the endpoint did not become healthy within {timeout:.0f} s; "
                    f"last lines of {record['log']}:\n{log_tail(Path(record['log']))}"
                )
            if now >= next_note:
                say(f"  waiting for the model server ({now - start:.0f} s)")
                next_note = now + 10
            time.sleep(PING_INTERVAL)

    @staticmethod
    def _model_ready(url: str) -> bool:
        """/ping answers 200 and the model has a worker ready (MMS's management API, on the same port)."""
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as ping:
                if ping.status != 200:
                    return False
            with urllib.request.urlopen(f"{url}/models/model", timeout=2) as described:
                workers = json.loads(described.read()).get("workers", [])
            return any(worker.get("status") == "READY" for worker in workers)
        except (OSError, ValueError, AttributeError):
            return False

    def predict(self, endpoint: dict[str, Any], body: bytes, content_type: str) -> Any:
        request = urllib.request.Request(
            f"{endpoint['url']}/invocations",
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise LauncherError(f"endpoint {endpoint['name']} answered {err.code}: {detail}") from err
        except urllib.error.URLError as err:
            raise LauncherError(
                f"endpoint {endpoint['name']} at {endpoint['url']} is not reachable ({err.reason}); "
                f"is it still running? See {endpoint['log']}"
            ) from err

    def stop(self, endpoint: dict[str, Any]) -> None:
        self._stop_process_group(endpoint["pid"])
        endpoint["status"] = "Deleted"
        endpoint["deleted"] = time.time()
        self.records.save("endpoints", endpoint)

    @staticmethod
    def _stop_process_group(pgid: int) -> None:
        """SIGTERM the endpoint's whole process group, then SIGKILL whatever is left after the grace period."""
        for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pgid, os.WNOHANG)  # reap it if this process started it
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)
