"""The endpoint's public port: SageMaker's three routes, every answer JSON, forwarded to the model server.

`GET /ping` answers 200 only once the model has loaded and answered a warm-up request, and 503 again once no
model worker can answer (`Front.fail`: then `/invocations` too, at once, and the requests already waiting).
`POST /invocations` joins a batch that the `Batcher` hands to a multi-model-server worker as one message (see `wire`);
`GET /execution-parameters` tells batch transform how to call us. Nothing else is reachable from outside:
MMS and its management API listen on loopback. The front also owns what MMS's Java frontend would answer
without JSON: bodies over the payload limit (413) and form bodies it would parse itself (the client's body
and content type reach the hooks untouched, inside the batch).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from imgclf.serving import wire
from imgclf.serving.settings import ServingSettings

log = logging.getLogger(__name__)

PING, INVOCATIONS, EXECUTION_PARAMETERS = "/ping", "/invocations", "/execution-parameters"
ROUTES = {PING: "GET", INVOCATIONS: "POST", EXECUTION_PARAMETERS: "GET"}
JSON = "application/json"
RECENT_BATCHES = 8  # how many past batches say how many requests to wait for
DRAIN_LIMIT = 64 * 2**20  # an over-limit body up to this size is read and dropped before the 413; beyond, cut off
WAIT_GRACE_SECONDS = 10  # a request waits for MMS's response timeout plus this before the front answers 504
Answer = tuple[int, str, bytes]  # status, content type, body
WORKER_DIED = "Worker died."  # MMS's 500 for a request whose worker process died under it


class Upstream:
    """Keep-alive HTTP connections to MMS's inference port, one per thread."""

    def __init__(self, url: str, path: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path, self.timeout = parts.hostname, parts.port, path, timeout
        self._local = threading.local()

    def post(self, body: bytes, content_type: str) -> Answer:
        """MMS's answer; one retry where an idle connection was closed under us."""
        for attempt in (1, 2):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                connection.connect()
                # Headers and body go out in two writes: without this, Nagle's algorithm holds the body back
                # until the server's delayed ACK (up to 40 ms).
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._local.connection = connection
            try:
                connection.request("POST", self.path, body=body, headers={"Content-Type": content_type})
                answer = connection.getresponse()
                return answer.status, answer.getheader("Content-Type", JSON), answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@dataclass
class _Pending:
    request: tuple[bytes, str, str]  # body, content type, accept
    answer: Answer | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """Dynamic batching. One thread per model-server worker collects a batch and sends it as one message: the
    oldest request, those already queued, and, for up to `max_delay` after the first, as many more as recent
    batches held (so a lone client waits for nobody, and concurrent ones fill the batch), at most `max_size`.
    Requests that arrive while every worker is busy queue and join the next batch at once."""

    def __init__(self, upstream: Upstream, workers: int, max_size: int, max_delay: float) -> None:
        self.upstream, self.max_size, self.max_delay = upstream, max_size, max_delay
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._collecting = threading.Lock()  # one batch at a time, or concurrent collectors split it
        self._recent_sizes: deque[int] = deque([1], maxlen=RECENT_BATCHES)
        self._sent: dict[int, _Pending] = {}  # sent to the model server, not answered yet
        self._lock = threading.Lock()
        for number in range(workers):
            threading.Thread(target=self._dispatch, name=f"batcher-{number}", daemon=True).start()

    def submit(self, body: bytes, content_type: str, accept: str, timeout: float) -> Answer:
        pending = _Pending((body, content_type, accept))
        self._queue.put(pending)
        if not pending.done.wait(timeout):
            return 504, JSON, error_body(504, "the model did not answer in time; see the endpoint's log")
        return pending.answer

    def _collect(self) -> list[_Pending]:
        with self._collecting:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_delay
            expected = min(self.max_size, max(self._recent_sizes))
            while len(batch) < self.max_size:
                wait = deadline - time.monotonic() if len(batch) < expected else 0.0
                try:
                    batch.append(self._queue.get(timeout=max(0.0, wait)))
                except queue.Empty:
                    break
            self._recent_sizes.append(len(batch))
            return batch

    def _dispatch(self) -> None:
        while True:
            batch = self._collect()
            with self._lock:
                self._sent.update((id(pending), pending) for pending in batch)
            for pending, answer in zip(batch, self._send(batch), strict=True):
                with self._lock:
                    if self._sent.pop(id(pending), None) is not None:
                        pending.answer = answer
                        pending.done.set()

    def fail_all(self, answer: Answer) -> None:
        """Answer every request sent to the model server or waiting for it with `answer`, now."""
        with self._lock:
            waiting = list(self._sent.values())
            self._sent.clear()
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for pending in waiting:
            pending.answer = answer
            pending.done.set()

    def _send(self, batch: list[_Pending]) -> list[Answer]:
        body = wire.pack([([content_type, accept], part) for part, content_type, accept in (p.request for p in batch)])
        try:
            status, content_type, answer = self.upstream.post(body, wire.CONTENT_TYPE)
            if status == 500 and mms_message(answer) == WORKER_DIED:  # killed (out of memory, say): classify again
                log.warning("a model worker died with a batch of %d; sending it again", len(batch))
                status, content_type, answer = self.upstream.post(body, wire.CONTENT_TYPE)
        except OSError as err:
            log.error("the model server did not answer: %s", err)
            failed = 504 if isinstance(err, TimeoutError) else 502
            message = "the model server did not answer; see the endpoint's log"
            return [(failed, JSON, error_body(failed, message))] * len(batch)
        if status == 200 and content_type.startswith(wire.CONTENT_TYPE):
            return [(status, part_type, part) for (status, part_type), part in wire.unpack(answer)]
        return [(status, JSON, as_our_error(status, answer))] * len(batch)  # MMS's own error, for the whole batch


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


def as_our_error(status: int, body: bytes) -> bytes:
    """MMS's own errors ({"code", "type", "message"}, or none) in our shape; the handler's pass unchanged."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "error" in answer and "status" in answer:
        return body
    return error_body(status, mms_message(body) or phrase(status))


def mms_message(body: bytes) -> str | None:
    """The message of MMS's own error body, if it is one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("message") if isinstance(answer, dict) else None


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Front(ThreadingHTTPServer):
    """The HTTP server on the public port; `ready` opens /ping once the model has answered its warm-up."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, settings: ServingSettings, batcher: Batcher) -> None:
        self.settings = settings
        self.batcher = batcher
        self.ready = threading.Event()
        self.failure: str | None = None
        super().__init__((host, settings.port), _Handler)

    def fail(self, reason: str) -> None:
        """From now on /ping and /invocations answer 503 with `reason`, and so do the requests already waiting."""
        self.failure = reason
        self.ready.clear()
        self.batcher.fail_all((503, JSON, error_body(503, reason)))

    def execution_parameters(self) -> dict:
        """What batch transform asks before it sends records: enough requests at once to fill every batch."""
        return {
            "MaxConcurrentTransforms": self.settings.workers * self.settings.max_batch_size,
            "BatchStrategy": "SINGLE_RECORD",  # one image per request
            "MaxPayloadInMB": max(1, self.settings.max_payload_bytes // 2**20),
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the answer's headers and body are two writes
    server: Front
    error_content_type = JSON

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        if path not in ROUTES:
            self._answer(404, error_body(404, f"no route {path}; this endpoint serves GET /ping, POST /invocations "
                                              "and GET /execution-parameters"))  # fmt: skip
        elif ROUTES[path] != method:
            self._answer(405, error_body(405, f"{path} takes {ROUTES[path]}, not {method}"))
        elif path == EXECUTION_PARAMETERS:
            self._answer(200, json.dumps(self.server.execution_parameters()).encode())
        elif self.server.failure is not None:
            if path == INVOCATIONS and self._read_body() is None:
                return  # answered already (too large, malformed)
            self._answer(503, error_body(503, self.server.failure))
        elif path == PING:
            if self.server.ready.is_set():
                self._answer(200, json.dumps({"status": "Healthy"}).encode())
            else:
                self._answer(503, error_body(503, "the model is loading"))
        else:
            self._invoke()

    def _invoke(self) -> None:
        body = self._read_body()
        if body is None:
            return
        timeout = self.server.settings.timeout_seconds + WAIT_GRACE_SECONDS
        content_type, accept = self.headers.get("Content-Type", ""), self.headers.get("Accept", "")
        status, answer_type, answer = self.server.batcher.submit(body, content_type, accept, timeout)
        if self.server.settings.errors_as_records and 400 <= status < 500 and status not in (408, 429):
            status = 200  # the body still says which error, for batch transform to write
        self._answer(status, answer, answer_type)

    def _read_body(self) -> bytes | None:
        """The request body, or None once an error has been answered (too large, malformed framing)."""
        limit = self.server.settings.max_payload_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self._content_length(sent=True)
        if length is None:
            return None
        return self.rfile.read(length)

    def _content_length(self, sent: bool) -> int | None:
        """The announced body length, or None once refused. An over-limit body the client is sending (`sent`) is
        read and dropped first where it is not huge: a client still writing would not see the answer."""
        raw = self.headers.get("Content-Length", "0")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self._answer(400, error_body(400, f"Content-Length {raw!r} is not a byte count"), close=True)
            return None
        if length > self.server.settings.max_payload_bytes:
            drain = sent and length <= DRAIN_LIMIT
            if drain:
                for start in range(0, length, 2**16):
                    self.rfile.read(min(2**16, length - start))
            self._refuse_too_large(length, close=not drain)
            return None
        return length

    def _read_chunked(self, limit: int) -> bytes | None:
        parts, size = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self._answer(400, error_body(400, "malformed chunked body"), close=True)
                return None
            if chunk == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            size += chunk
            if size > limit:
                self._refuse_too_large(size)
                return None
            parts.append(self.rfile.read(chunk))
            self.rfile.readline(1024)

    def _refuse_too_large(self, size: int, close: bool = True) -> None:
        limit = self.server.settings.max_payload_bytes
        message = (f"the body is {size:,} bytes, over this endpoint's limit of {limit:,} "
                   "(SAGEMAKER_MAX_PAYLOAD_IN_MB); send a smaller image")  # fmt: skip
        self._answer(413, error_body(413, message), close=close)

    def handle_expect_100(self) -> bool:
        """Refuse an announced over-limit body before the client sends it."""
        if self.command == "POST" and self._content_length(sent=False) is None:
            return False
        return super().handle_expect_100()

    def _answer(self, status: int, body: bytes, content_type: str = JSON, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (a malformed request line, say), as JSON."""
        self.close_connection = True
        body = error_body(code, message or phrase(code))
        if self.command == "HEAD" or code < 200 or code in (204, 304):
            body = b""
        with contextlib.suppress(OSError):  # the client may be gone already
            self._answer(code, body, close=True)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
