"""Start multi-model-server with our handler service, the SageMaker inference toolkit's way.

Inside the image the toolkit does everything (its config at /etc/sagemaker-mms.properties, one server per
container). Outside it, several endpoints may share a host, which the toolkit cannot do: it writes one fixed
config file and finds "the" MMS process by scanning all processes. So with a `config_dir`, each server gets
its own config file and temp folder (MMS keeps its pid file and its workers' Unix sockets there), and we
supervise the process tree ourselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

HANDLER_SERVICE = "imgclf.serving.handler_service"
STOP_GRACE_SECONDS = 20
# The temp folder holds the workers' sockets, whose paths may not exceed 107 bytes: keep it short, not in config_dir.
SOCKET_ROOT = "/tmp"
# OpenMP threads spin while they wait for work. Where workers' torch threads outnumber the cores (a raised
# IMGCLF_THREADS_PER_WORKER), the spinning threads starve the working ones: 2 requests/s instead of 20 measured
# at concurrency 8 on 2 cores. Passive waiting costs nothing measurable at one thread per worker.
WORKER_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


def serve(config_dir: Path | None = None) -> int:
    """Run the model server until it exits or this process is told to stop; return its exit status."""
    for name, value in WORKER_ENVIRONMENT.items():  # the workers inherit it; the user's own setting wins
        os.environ.setdefault(name, value)
    if config_dir is None:
        from sagemaker_inference import model_server

        model_server.start_model_server(handler_service=HANDLER_SERVICE)
        return 0
    return _serve_isolated(config_dir)


def _serve_isolated(config_dir: Path) -> int:
    from sagemaker_inference import environment, model_server

    config_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="mms-", dir=SOCKET_ROOT))
    config_file = config_dir / "mms.properties"
    settings = environment.Environment()  # the toolkit's reading of the SAGEMAKER_* variables
    config_file.write_text(model_server._generate_mms_config_properties(settings, HANDLER_SERVICE))
    python_path = os.pathsep.join(filter(None, [environment.code_dir, os.environ.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "mms.model_server", "--start", "--foreground",
        "--mms-config", str(config_file),
        "--model-store", "/",
        "--models", f"model={environment.model_dir}",
        "--log-config", model_server.DEFAULT_MMS_LOG_FILE,
    ]  # fmt: skip
    log.info("starting the model server on port %s: %s", settings.inference_http_port, " ".join(command))
    server = subprocess.Popen(
        command,
        env={**os.environ, "TMPDIR": str(tmp_dir), "TEMP": str(tmp_dir), "PYTHONPATH": python_path},
        cwd=config_dir,  # MMS writes its logs/ folder into the working directory
    )

    def stop(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping the model server", signum)
        stop_process_tree(server.pid)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return server.wait()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


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
