"""The serving contract against a real `serve` (the front, multi-model-server and our handler), over HTTP."""

from __future__ import annotations

import contextlib
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import BIN, draw_shape

from launcher.hosted import free_port

pytestmark = pytest.mark.slow  # real multi-model-servers


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    base: Path

    @property
    def management_url(self) -> str:
        """multi-model-server's management API, on the loopback port `serve` wrote into its config."""
        lines = (self.base / "server" / "mms.properties").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)["management_address"]


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict, str]:  # fmt: skip
    """(status, JSON body, content type) of one HTTP call; errors are answers too."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers.get("Content-Type", "")


def worker_ids(server: Server) -> list[str]:
    with urllib.request.urlopen(f"{server.management_url}/models/model", timeout=5) as response:
        return [w["id"] for w in json.loads(response.read())["workers"] if w["status"] == "READY"]


def launch(base: Path, extra_env: dict[str, str] | None = None) -> Server:
    """Start `serve` on the model in `base/model`, on a free port of 127.0.0.1; do not wait."""
    port = free_port()
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port), **(extra_env or {})}
    log = base / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "serve"), "--host", "127.0.0.1", "--config-dir", str(base / "server")],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", process, log, base)


def start_server(model_dir: Path, base: Path, extra_env: dict[str, str] | None = None) -> Server:
    """Serve a copy of `model_dir`; return once /ping answers 200 (the model has answered its warm-up)."""
    shutil.copytree(model_dir, base / "model")
    return start_server_in(base, extra_env)


def start_server_in(base: Path, extra_env: dict[str, str] | None = None) -> Server:
    """Serve `base/model`; return once /ping answers 200."""
    server = launch(base, extra_env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()
        try:
            if request(f"{server.url}/ping")[0] == 200:
                return server
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"server not ready in time:\n{server.log.read_text()}")


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
    workers_before = worker_ids(server)
    answer_status, answer, answer_type = request(f"{server.url}/invocations", body, headers)
    assert answer_status == status
    assert answer_type.startswith("application/json")
    assert answer["status"] == status and answer["error"] and "Traceback" not in answer["error"]
    assert request(f"{server.url}/ping")[0] == 200
    assert worker_ids(server) == workers_before  # no worker restarted
    ok_status, _, _ = request(f"{server.url}/invocations", image_bytes("JPEG"), {"Content-Type": "image/jpeg"})
    assert ok_status == 200


def worker_processes(server: Server) -> list[psutil.Process]:
    """The model's workers: MMS 1.1 starts one Python process, which forks one child per worker."""
    tree = psutil.Process(server.process.pid).children(recursive=True)
    return [p for p in tree if p.parent().name() != "java" and any("model_service_worker" in a for a in p.cmdline())]


def test_one_worker_uses_every_core_by_default(server: Server):
    workers = worker_processes(server)
    assert len(workers) == 1, [p.cmdline() for p in workers]
    worker = workers[0]
    assert worker.environ()["IMGCLF_THREADS_PER_WORKER"] == str(len(os.sched_getaffinity(0)))
    assert "OMP_WAIT_POLICY" not in worker.environ() or "OMP_WAIT_POLICY" in os.environ


def test_oversubscribed_workers_wait_for_work_passively(trained_model_dir: Path, tmp_path: Path):
    cores = len(os.sched_getaffinity(0))
    server = start_server(trained_model_dir, tmp_path, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2",
                                                        "IMGCLF_THREADS_PER_WORKER": str(cores)})  # fmt: skip
    try:
        workers = worker_processes(server)
        assert len(workers) == 2 and all(p.environ().get("OMP_WAIT_POLICY") == "PASSIVE" for p in workers)
    finally:
        stop_server(server)


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


def test_only_the_sagemaker_routes_are_reachable(server: Server):
    # multi-model-server's management API loads a model archive, handler code included, from a URL.
    for method, path in [("GET", "/models"), ("POST", "/models?url=http://example.com/m.mar"),
                         ("GET", "/models/model"), ("DELETE", "/models/model"), ("GET", "/metrics")]:  # fmt: skip
        req = urllib.request.Request(f"{server.url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 404 and json.loads(refused.value.read())["status"] == 404
    assert request(f"{server.url}/ping", b"", {})[0] == 405  # POST /ping
    java = next(p for p in psutil.Process(server.process.pid).children(recursive=True) if p.name() == "java")
    listening = [c.laddr.ip for c in java.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening), listening


def test_execution_parameters_tell_batch_transform_how_to_call(server: Server):
    status, body, _ = request(f"{server.url}/execution-parameters")
    assert status == 200
    assert body == {"MaxConcurrentTransforms": 8, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}


def test_concurrent_requests_are_answered_each_with_its_own_result(server: Server):
    # They share batches: every answer must still be the one for its own image.
    bodies = {shape: image_bytes("JPEG", shape) for shape in ("circle", "square", "triangle")}
    alone = {shape: request(f"{server.url}/invocations", body, {"Content-Type": "image/jpeg"})[1]["logits"]
             for shape, body in bodies.items()}  # fmt: skip
    order = list(bodies) * 6

    def ask(shape: str) -> list[float]:
        return request(f"{server.url}/invocations", bodies[shape], {"Content-Type": "image/jpeg"})[1]["logits"]

    with ThreadPoolExecutor(len(order)) as pool:
        answers = list(pool.map(ask, order))
    for shape, logits in zip(order, answers, strict=True):
        assert logits == pytest.approx(alone[shape], abs=1e-4)


BROKEN_MODELS = {
    "corrupt weights": lambda model: (model / "model.pth").write_bytes(b"not a checkpoint"),
    "no model_config.json": lambda model: (model / "model_config.json").unlink(),
    "model_fn raises": lambda model: (model / "code" / "inference.py").write_text(
        "def model_fn(model_dir):\n    raise RuntimeError('this model cannot load')\n"
    ),
    "inference.py does not import": lambda model: (model / "code" / "inference.py").write_text(
        "import no_such_module\n"
    ),
}


@pytest.mark.parametrize("breakage", BROKEN_MODELS.values(), ids=BROKEN_MODELS.keys())
def test_a_model_that_cannot_serve_ends_serve_with_the_reason(trained_model_dir: Path, tmp_path: Path, breakage):
    shutil.copytree(trained_model_dir, tmp_path / "model")
    breakage(tmp_path / "model")
    server = launch(tmp_path)
    try:
        status = server.process.wait(timeout=120)
    finally:
        stop_server(server)
    log = server.log.read_text()
    assert status == 1, log
    reason = next(line for line in log.splitlines() if "cannot serve:" in line)
    assert "could not be loaded" in reason, reason
    # Through process_iter's attrs, a process that ends while listed reads as having no command line (no raise).
    processes = psutil.process_iter(["name", "cmdline"])
    assert not [p for p in processes if p.info["name"] == "java" and str(tmp_path) in " ".join(p.info["cmdline"] or ())]


COURSE_STYLE_SCRIPT = """
import json, os
import torch, torchvision
from PIL import Image
import io

def model_fn(model_dir):
    config = json.load(open(os.path.join(model_dir, "model_config.json")))
    model = torchvision.models.get_model(config["architecture"], num_classes=len(config["classes"]))
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), map_location="cpu"))
    return model.eval()

def input_fn(request_body, content_type="image/jpeg"):
    if content_type == "image/jpeg":
        image = Image.open(io.BytesIO(request_body)).convert("RGB").resize((64, 64))
        return torchvision.transforms.functional.to_tensor(image).unsqueeze(0)
    raise Exception(f"unsupported content type {content_type}")

def predict_fn(input_object, model):
    with torch.no_grad():
        return model(input_object)
"""


def test_a_course_style_script_without_output_fn_serves_unchanged(trained_model_dir: Path, tmp_path: Path):
    shutil.copytree(trained_model_dir, tmp_path / "model")
    (tmp_path / "model" / "code" / "inference.py").write_text(COURSE_STYLE_SCRIPT)
    server = start_server_in(tmp_path)
    try:
        status, body, answer_type = request(f"{server.url}/invocations", image_bytes("JPEG"),
                                            {"Content-Type": "image/jpeg"})  # fmt: skip
    finally:
        stop_server(server)
    assert status == 200 and answer_type == "application/json"
    assert len(body) == 1 and len(body[0]) == 3 and all(isinstance(x, float) for x in body[0])  # [[logits]]


def test_the_bare_logits_format_answers_as_the_original_endpoint(trained_model_dir: Path, tmp_path: Path):
    server = start_server(trained_model_dir, tmp_path, {"IMGCLF_RESPONSE_FORMAT": "logits"})
    try:
        status, body, _ = request(f"{server.url}/invocations", image_bytes("JPEG"), {"Content-Type": "image/jpeg"})
    finally:
        stop_server(server)
    assert status == 200 and len(body) == 1 and len(body[0]) == 3


def test_for_batch_transform_a_bad_image_is_an_answer_not_a_failure(trained_model_dir: Path, tmp_path: Path):
    """IMGCLF_ERRORS_AS_RECORDS: a request the model cannot classify gets 200 with its error, so that a SageMaker
    transform job writes it and goes on; what the server itself refuses (a wrong route) keeps its status."""
    server = start_server(trained_model_dir, tmp_path, {"IMGCLF_ERRORS_AS_RECORDS": "true"})
    try:
        broken = request(f"{server.url}/invocations", b"\xff\xd8\xff not a jpeg", {"Content-Type": "image/jpeg"})
        fine = request(f"{server.url}/invocations", image_bytes("JPEG"), {"Content-Type": "image/jpeg"})
        route = request(f"{server.url}/models")
    finally:
        stop_server(server)
    status, body, _ = broken
    assert status == 200 and body["status"] == 400 and "not a decodable image" in body["error"]
    assert fine[0] == 200 and "predictions" in fine[1]
    assert route[0] == 404


def model_workers(server: Server) -> list[psutil.Process]:
    """multi-model-server's Python workers under this `serve`, and the children they fork (they hold the model)."""
    workers = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone, or a zombie not reaped yet
            if "mms/model_service_worker.py" in " ".join(process.cmdline()[:2]):
                workers.append(process)
    return workers


class Load:
    """Clients sending the same image over and over until stopped, refused or answered `last`; every outcome is
    kept."""

    def __init__(self, url: str, clients: int = 2, timeout: float = 45, last: int | None = None) -> None:
        self.url, self.timeout, self.last, self.outcomes = url, timeout, last, []
        self._stop = False
        self._pool = ThreadPoolExecutor(clients)
        self._futures = [self._pool.submit(self._send) for _ in range(clients)]

    def _send(self) -> None:
        body = image_bytes("JPEG")
        while not self._stop:
            try:
                status, answer, _ = request(f"{self.url}/invocations", body, {"Content-Type": "image/jpeg"},
                                            timeout=self.timeout)  # fmt: skip
                self.outcomes.append((status, answer))
                if status == self.last:
                    return
            except urllib.error.URLError as err:
                if isinstance(err.reason, ConnectionRefusedError):
                    return  # serve has exited
                self.outcomes.append(("error", repr(err)))
            except OSError as err:  # a timeout, a reset
                self.outcomes.append(("error", repr(err)))

    def stop(self) -> list[tuple]:
        self._stop = True
        for future in self._futures:
            future.result(timeout=120)
        self._pool.shutdown()
        return self.outcomes


def test_a_killed_worker_child_is_forked_again_with_no_failed_request(trained_model_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture):  # fmt: skip
    server = start_server(trained_model_dir, tmp_path)
    try:
        load = Load(server.url)
        time.sleep(1)
        child = next(p for p in model_workers(server) if p.parent().cmdline()[:2] == p.cmdline()[:2])
        child.kill()  # what an out-of-memory kill picks: the largest process
        deadline = time.monotonic() + 60
        while child.pid in [p.pid for p in model_workers(server)] or len(model_workers(server)) < 2:
            assert time.monotonic() < deadline, "the worker forked no new child"
            time.sleep(0.2)
        time.sleep(2)
        outcomes = load.stop()  # the batch in the killed child got MMS's "Worker died.": the front sent it again
        assert outcomes and {status for status, _ in outcomes} == {200}, [o for o in outcomes if o[0] != 200]
        assert request(f"{server.url}/ping")[0] == 200 and server.process.poll() is None
        with capsys.disabled():
            print(f"\nworker's child killed: {len(outcomes)} requests, none failed")
    finally:
        stop_server(server)


def test_an_endpoint_whose_workers_all_died_says_so_answers_every_request_and_exits(
    trained_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    # Without the watchdog, /ping stays 200 and every request waits for MMS's 60 s response timeout: the clients'
    # 45 s would run out. With it, each request gets an answer, the waiting ones a 503 naming the reason.
    server = start_server(trained_model_dir, tmp_path)
    try:
        load = Load(server.url, last=503)  # no new request while serve exits
        time.sleep(1)
        for worker in model_workers(server):
            worker.kill()  # a worker and its child: what an out-of-memory kill of the group does
        killed = time.monotonic()
        pings, deadline = [], time.monotonic() + 120
        while server.process.poll() is None:
            assert time.monotonic() < deadline, f"serve still runs two minutes on; /ping said {pings[-1:]}"
            with contextlib.suppress(OSError):
                pings.append(request(f"{server.url}/ping", timeout=10))
            time.sleep(0.5)
        exited = time.monotonic()
        assert server.process.wait(timeout=60) == 1
        outcomes = load.stop()
        assert [o for o in outcomes if o[0] not in (200, 503)] == []  # MMS's "Worker died." is sent again, too
        refused = [answer for status, answer in outcomes if status == 503]
        assert refused and all("no model worker has run" in answer["error"] for answer in refused)
        assert pings[-1][0] == 503 and "must be replaced" in pings[-1][1]["error"]
        assert "cannot serve: no model worker has run" in server.log.read_text()
        with capsys.disabled():
            print(f"\nworkers killed: {len(refused)} waiting requests answered 503, serve exited 1 "
                  f"{exited - killed:.0f} s after the kill")  # fmt: skip
    finally:
        if server.process.poll() is None:
            stop_server(server)
