"""Endpoints hosted on this machine by detached process groups (the `process` and `local` backends).

An endpoint is two groups, each in a session of its own: the model server (`serve`, or the host of a local-mode
container) on a loopback port, and in front of it the router on the endpoint's address (`launcher.router`). The
launcher starts both, waits until the model answers through the router, records their pids and exits; `stop` later
ends both groups. `swap` puts a new model behind the same address: a new model server, the route switched once it
is ready, the old server stopped once the router has no request left in flight to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from launcher import contract, lineage, router
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, RecordStore
from launcher.specs import DeploySpec

# How a backend starts a model server for `model_data` in `folder`, answering on 127.0.0.1:`port`: its command and
# environment.
ServerCommand = Callable[[str, Path, int], tuple[list[str], dict[str, str]]]
ROUTE_TIMEOUT = router.UPSTREAM_TIMEOUT + 10  # the router drains the old server within one request's time

PING_INTERVAL = 0.5
STOP_GRACE_SECONDS = 30  # SageMaker sends SIGKILL 30 s after SIGTERM
LOG_TAIL_LINES = 30
INVOKE_TIMEOUT_SECONDS = 60  # SageMaker's own limit on one invocation
MMS_PORT_RANGE = (20000, 32767)  # multi-model-server rejects ports >= 32767


def invoke(endpoint: Endpoint, body: bytes, content_type: str) -> Any:
    """POST /invocations as the original project's client does (the raw bytes with their content type, JSON asked
    for); return the decoded answer. An error answered by the endpoint is raised with its own status and message."""
    request = urllib.request.Request(
        f"{endpoint.url}/invocations", data=body, headers={"Content-Type": content_type, "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        error = contract.error_answer(detail)
        raise LauncherError(f"endpoint {endpoint.name} answered {err.code}: {error[0] if error else detail}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:  # not listening, cut off, an answer that is not JSON
        reason = getattr(err, "reason", err)
        raise LauncherError(
            f"endpoint {endpoint.name} at {endpoint.url} did not answer ({reason}); is it still running? See "
            f"{endpoint.log}"
        ) from err


def module_command(module: str, *args: str, **options: object) -> list[str]:
    """`python -m module ARGS --option value ...` with this interpreter (underscores in option names become hyphens)."""
    flags = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]
    return [sys.executable, "-m", module, *args, *flags]


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


def start_server(
    name: str, command: list[str], env: dict[str, str], folder: Path, port: int, timeout: float
) -> tuple[int, str, Path]:
    """Start a model server detached in `folder` (its output in `serve.log`), answering on 127.0.0.1:`port`, and
    wait until it serves the model; its pid, URL and log. Stopped again if it fails to."""
    log_file, url = folder / "serve.log", f"http://127.0.0.1:{port}"
    process = None
    try:
        # An interrupt while it starts would leave it running unknown to us: it waits until `process` is known.
        with signals_deferred(), open(log_file, "w") as log:
            process = subprocess.Popen(
                command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        say(f"{name}: model server starting on {url} (log {log_file})")
        _wait_until_ready(name, url, log_file, process, timeout)
    except BaseException:
        if process is not None:
            stop_group(process.pid)
        raise
    return process.pid, url, log_file


def _wait_until_ready(name: str, url: str, log: Path, process: subprocess.Popen, timeout: float) -> None:
    """Until `url` answers /ping; fails with the log's last lines if `process` exits first or `timeout` passes."""
    start_time = time.monotonic()
    next_note = start_time + 10
    while True:
        if process.poll() is not None:
            raise LauncherError(
                f"the endpoint's process exited with status {process.returncode} before the model was ready; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        if model_ready(url):
            say(f"{name} is ready after {time.monotonic() - start_time:.0f} s")
            return
        now = time.monotonic()
        if now - start_time > timeout:
            raise LauncherError(
                f"the endpoint did not become ready within {timeout:.0f} s; last lines of {log}:\n{log_tail(log)}"
            )
        if now >= next_note:
            say(f"  waiting for the model server ({now - start_time:.0f} s)")
            next_note = now + 10
        time.sleep(PING_INTERVAL)


def stop(records: RecordStore, record: Endpoint) -> None:
    stop_groups(record)
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


def serve_routed(
    records: RecordStore, record: Endpoint, server: ServerCommand, listen: str, timeout: float
) -> Endpoint:
    """Start the endpoint: its model server, then the router on `record.port`; saved at each step."""
    folder = Path(record.endpoint_dir)
    record.status, record.created, record.generation = "Creating", time.time(), 1
    records.save(record)
    try:
        pid, upstream, log = _start_server(record, server, record.model_data, folder / "model-1", timeout)
        _write_route(folder, record.generation, upstream, record.model_data)
        record.pid, record.upstream, record.log = pid, upstream, str(log)
        records.save(record)
        command = module_command("launcher.router", listen=listen, port=record.port, folder=folder)
        with open(folder / "router.log", "w") as router_log:
            process = subprocess.Popen(command, stdout=router_log, stderr=subprocess.STDOUT, start_new_session=True)
        record.router_pid = process.pid
        records.save(record)
        _wait_until_ready(f"endpoint {record.name}", record.url, folder / "router.log", process, timeout)
    except BaseException:
        stop_groups(record)
        record.status = "Failed"
        records.save(record)
        raise
    record.status = "InService"
    record.now_serving("deployed", model_sha256=lineage.model_hash(record.model_data))
    records.save(record)
    return record


def swap(records: RecordStore, record: Endpoint, server: ServerCommand, spec: DeploySpec, reason: str) -> Endpoint:
    """Serve `spec`'s model behind the endpoint's address with no failed request: a new model server, the route
    switched once it answers, the old server stopped once drained. A server that fails to start is stopped and the
    old one keeps serving; SIGINT or SIGTERM before the switch does the same, after it the swap completes first."""
    if not record.router_pid:
        raise LauncherError(
            f"endpoint {record.name} has no router (deployed by an older launcher): deploy the model "
            "on a new endpoint instead"
        )
    folder, model_data, job_name = Path(record.endpoint_dir), spec.model_data, spec.job_name
    generation = (record.generation or 1) + 1
    while (folder / f"model-{generation}").exists():  # a try that failed: its folder and log are kept
        generation += 1
    with signals_as_interrupt():
        pid, upstream, log = _start_server(
            record, server, model_data, folder / f"model-{generation}", spec.startup_timeout
        )
    with signals_deferred():
        try:
            _switch(folder, record.router_pid, generation, upstream, model_data)
        except BaseException:
            stop_group(pid)
            raise
        old = record.pid
        record.pid, record.upstream, record.log, record.generation = pid, upstream, str(log), generation
        record.model_data, record.job_name = model_data, job_name
        sha = lineage.model_hash(model_data)
        record.lineage = {**(record.lineage or {}), "job_name": job_name, "model_sha256": sha}
        record.now_serving(reason, model_sha256=sha)
        records.save(record)
        stop_group(old)
    return record


def _start_server(
    record: Endpoint, server: ServerCommand, model_data: str, folder: Path, timeout: float
) -> tuple[int, str, Path]:
    """A model server for `model_data` in `folder`, behind the endpoint's router, ready."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command, env = server(model_data, folder, port)
    return start_server(f"endpoint {record.name} ({folder.name}, {model_data})", command, env, folder, port, timeout)


def _write_route(folder: Path, generation: int, upstream: str, model_data: str) -> None:
    route = {"generation": generation, "upstream": upstream, "model_sha256": lineage.model_hash(model_data)}
    router.write_json(folder / router.ROUTE_FILE, route)


def _switch(folder: Path, router_pid: int, generation: int, upstream: str, model_data: str) -> None:
    """Route to `upstream` and wait until the router has no request left in flight to the old server (at most one
    request's time). Raises only if the route could not be switched."""
    _write_route(folder, generation, upstream, model_data)
    try:
        os.kill(router_pid, signal.SIGHUP)
    except ProcessLookupError:
        log = folder / "router.log"
        raise LauncherError(f"the endpoint's router (pid {router_pid}) is not running; see {log}") from None
    deadline = time.monotonic() + ROUTE_TIMEOUT
    while time.monotonic() < deadline:
        state = router.read_json(folder / router.STATE_FILE) or {}
        if state.get("generation") == generation and state.get("drained"):
            return
        time.sleep(0.1)
    say(f"warning: the router did not report the old model server drained within {ROUTE_TIMEOUT:.0f} s; stopping it")


def stop_groups(record: Endpoint) -> None:
    """The router first (no new request comes in), then the model server."""
    for pid in (record.router_pid, record.pid):
        if pid:
            stop_group(pid)


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as SIGINT does, so that what was started is stopped again."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block has ended, then interrupt (on the main thread, which gets them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: received.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt
