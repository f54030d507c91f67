"""`launcher ui`: MLflow's web UI on 127.0.0.1 for a tracking store, until Ctrl-C.

It runs `mlflow server` from the full `mlflow` package (the launcher itself needs only `mlflow-skinny`) with its
job runner off: two processes and a few hundred MB instead of about a dozen and 2 GB.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from launcher import hosted
from launcher.errors import LauncherError
from launcher.progress import say

READY_TIMEOUT = 120.0  # seconds: the first start of a new store migrates its schema
INSTALL_HINT = "pip install 'mlflow>=3.17,<4' (or make ui, or pip install 'imgclf-launcher[ui]')"


def has_ui() -> bool:
    """Whether the full mlflow package (its server and the built web pages) is installed."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(p) / "server" / "js" / "build" / "index.html").is_file() for p in spec.submodule_search_locations)


def start(uri: str, port: int, artifact_root: Path | None, log: Path) -> tuple[subprocess.Popen, str]:
    """Start the UI's server and wait until it answers; the process and its address."""
    if not has_ui():
        raise LauncherError(
            f"the MLflow UI needs the full mlflow package, and only mlflow-skinny is installed: {INSTALL_HINT}"
        )
    port = port or hosted.free_port()
    artifacts = {"default_artifact_root": artifact_root.as_uri()} if artifact_root is not None else {}
    command = hosted.module_command(
        "mlflow", "server", backend_store_uri=uri, host="127.0.0.1", port=port, workers=1, **artifacts
    )
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LauncherError(f"the MLflow UI exited with status {server.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2):
                return server, address
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    stop(server)
    raise LauncherError(f"the MLflow UI did not answer at {address} within {READY_TIMEOUT:.0f} s; see {log}")


def stop(server: subprocess.Popen) -> None:
    """End the server and its worker (one process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def runs_page(address: str, experiment_id: str | None) -> str:
    """The experiment's runs page (the UI opens on another page by default)."""
    return f"{address}/#/experiments/{experiment_id}/runs" if experiment_id else address


def serve(uri: str, port: int, artifact_root: Path | None, log: Path, experiment_id: str | None) -> None:
    """Serve the UI until Ctrl-C (or SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the server too, as Ctrl-C does
    server, address = start(uri, port, artifact_root, log)
    say(f"MLflow UI for {uri}: {runs_page(address, experiment_id)}")
    say(f"registered models: {address}/#/models; Ctrl-C stops the UI (its log: {log})")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(server)
