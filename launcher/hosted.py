"""Endpoints hosted on this machine by a detached process group (the `process` and `local` backends).

The launcher starts the host process in its own session, waits until the model answers, records its pid,
and exits; `stop` later ends the whole group (model server, Java frontend, workers, docker-compose).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, RecordStore

PING_INTERVAL = 0.5
STOP_GRACE_SECONDS = 30  # SageMaker sends SIGKILL 30 s after SIGTERM
LOG_TAIL_LINES = 30
MMS_PORT_RANGE = (20000, 32767)  # multi-model-server rejects ports >= 32767


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
    """The last lines of a server log, without the access log's lines (the health checks would hide the cause)."""
    if not path.is_file():
        return ""
    kept = [line for line in path.read_text(errors="replace").splitlines() if "ACCESS_LOG" not in line]
    return "\n".join(kept[-lines:])


def model_ready(url: str) -> bool:
    """/ping answers 200: `serve` opens it once the model has loaded and answered a warm-up request."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as ping:
            return ping.status == 200
    except OSError:
        return False


def start(
    records: RecordStore | None,
    record: Endpoint,
    command: list[str],
    env: dict[str, str],
    base_dir: Path,
    timeout: float,
) -> Endpoint:
    """Start `command` detached, wait until `record.url` serves the model; save the record at each step (unless
    `records` is None: a server that lives only as long as the launcher's command)."""
    save = records.save if records else lambda _record: None
    log_file = base_dir / "serve.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=base_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    record.status, record.created, record.pid = "Creating", time.time(), process.pid
    record.endpoint_dir, record.log = str(base_dir), str(log_file)
    save(record)
    say(f"endpoint {record.name} starting on {record.url} (log {log_file})")
    try:
        _wait_until_ready(record, process, timeout)
    except BaseException:
        stop_group(process.pid)
        record.status = "Failed"
        save(record)
        raise
    record.status = "InService"
    save(record)
    return record


def _wait_until_ready(record: Endpoint, process: subprocess.Popen, timeout: float) -> None:
    start_time = time.monotonic()
    next_note = start_time + 10
    while True:
        if process.poll() is not None:
            raise LauncherError(
                f"the endpoint's process exited with status {process.returncode} before the model was ready; "
                f"last lines of {record.log}:\n{log_tail(Path(record.log))}"
            )
        if model_ready(record.url):
            say(f"endpoint {record.name} is in service after {time.monotonic() - start_time:.0f} s")
            return
        now = time.monotonic()
        if now - start_time > timeout:
            raise LauncherError(
                f"the endpoint did not become ready within {timeout:.0f} s; "
                f"last lines of {record.log}:\n{log_tail(Path(record.log))}"
            )
        if now >= next_note:
            say(f"  waiting for the model server ({now - start_time:.0f} s)")
            next_note = now + 10
        time.sleep(PING_INTERVAL)


def stop(records: RecordStore, record: Endpoint) -> None:
    stop_group(record.pid)
    record.status, record.deleted = "Deleted", time.time()
    records.save(record)


def stop_group(pgid: int) -> None:
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
