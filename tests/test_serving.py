"""The serving contract against a real multi-model-server, started by the real `serve` entry point, over HTTP."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import BIN, draw_shape

from launcher.hosted import free_port


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """(status, JSON body, content type) of one HTTP call; errors are answers too."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers.get("Content-Type", "")


def worker_ids(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/models/model", timeout=5) as response:
        return [w["id"] for w in json.loads(response.read())["workers"] if w["status"] == "READY"]


def start_server(model_dir: Path, base: Path, extra_env: dict[str, str] | None = None) -> Server:
    shutil.copytree(model_dir, base / "model")
    port = free_port()
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        **(extra_env or {}),
    }
    log = base / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "serve"), "--config-dir", str(base / "server")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if worker_ids(server.url):
                return server
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    stop_server(server)
    raise AssertionError(f"server not ready in time:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    """SIGTERM `serve` alone, as `docker stop` does."""
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(trained_model_dir, tmp_path_factory.mktemp("endpoint"))
    yield running
    stop_server(running)


def image_bytes(fmt: str, shape: str = "square") -> bytes:
    buffer = io.BytesIO()
    draw_shape(shape).save(buffer, fmt)
    return buffer.getvalue()


def test_ping(server: Server):
    status, body, _ = request(f"{server.url}/ping")
    assert status == 200 and body == {"status": "Healthy"}


@pytest.mark.parametrize(("fmt", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_image_in_json_out(server: Server, fmt: str, content_type: str):
    status, body, answer_type = request(f"{server.url}/invocations", image_bytes(fmt), {"Content-Type": content_type})
    assert status == 200, body
    assert answer_type.startswith("application/json")
    assert len(body["logits"]) == 3
    top = body["predictions"]
    assert [p["label"] for p in top] == [["circle", "square", "triangle"][p["index"]] for p in top]
    assert top == sorted(top, key=lambda p: -p["probability"])


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"hello", {"Content-Type": "text/plain"}, 415),
        (image_bytes("JPEG"), {"Content-Type": "application/json"}, 415),
        (b"\xff\xd8\xff\xe0 not really a jpeg", {"Content-Type": "image/jpeg"}, 400),
        (image_bytes("JPEG")[:200], {"Content-Type": "image/jpeg"}, 400),
        (image_bytes("JPEG"), {"Content-Type": "image/jpeg", "Accept": "text/csv"}, 406),
    ],
)
def test_bad_requests_get_a_json_error_and_the_server_stays_up(server: Server, body, headers, status):
    workers_before = worker_ids(server.url)
    answer_status, answer, answer_type = request(f"{server.url}/invocations", body, headers)
    assert answer_status == status
    assert answer_type.startswith("application/json")
    assert answer["status"] == status and answer["error"] and "Traceback" not in answer["error"]
    assert request(f"{server.url}/ping")[0] == 200
    assert worker_ids(server.url) == workers_before  # no worker restarted
    ok_status, _, _ = request(f"{server.url}/invocations", image_bytes("JPEG"), {"Content-Type": "image/jpeg"})
    assert ok_status == 200


def test_workers_wait_for_work_passively(server: Server):
    tree = psutil.Process(server.process.pid).children(recursive=True)
    workers = [p for p in tree if any("model_service_worker" in arg for arg in p.cmdline())]
    assert workers and all(p.environ().get("OMP_WAIT_POLICY") == "PASSIVE" for p in workers)


def test_stopping_serve_ends_the_whole_process_tree(trained_model_dir: Path, tmp_path: Path):
    # A deep endpoint folder: the workers' Unix sockets must not live under it (107-byte limit on their paths).
    server = start_server(trained_model_dir, tmp_path / ("d" * 60) / ("e" * 60))
    tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    assert "java" in [p.name() for p in tree]  # MMS's frontend, besides `serve` and the Python workers
    sockets = {Path(arg) for p in tree for arg in p.cmdline() if ".mms.sock" in arg}
    assert sockets and all(len(str(s)) < 100 for s in sockets)
    stop_server(server)
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert alive == []
    assert not any(s.parent.exists() for s in sockets)  # the server's temp folder is removed with it
