"""The address of an endpoint hosted on this machine: a small HTTP proxy in front of the model server that serves it.

The process and local backends give every endpoint one (`python -m launcher.router`, detached like the model
server) so that a new model can replace the old one behind the same address with no failed request, as SageMaker's
load balancer does for a blue/green update: the launcher starts the new model server on a port of its own, waits
until it is ready, writes the route file and sends the router SIGHUP. From then on each request, on a new connection
or a kept-alive one, goes to the new server; the old one answers what it already had, the router says so in its
state file once none is left in flight, and only then does the launcher stop the old server.

Every answer carries the served model's SHA-256 in the `X-Imgclf-Model-Sha256` header, so a client can tell which
model answered.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROUTE_FILE = "route.json"  # written by the launcher: {"generation", "upstream", "model_sha256"}
STATE_FILE = "router.json"  # written by the router: the route it serves, and whether older routes are drained
MODEL_HEADER = "X-Imgclf-Model-Sha256"
UPSTREAM_TIMEOUT = 120.0  # seconds an upstream may take to answer one request
DRAIN_POLL = 0.05
# Headers that belong to one connection, not to the request or answer (RFC 9110, 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically, so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


class Router(ThreadingHTTPServer):
    """Forwards every request to the current route's upstream; counts what is in flight to each upstream."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, listen: str, port: int, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.route: dict[str, Any] = {}
        self.connections = threading.local()  # each thread's kept-alive connections, by upstream
        self.load_route()
        super().__init__((listen, port), _Handler)

    def load_route(self) -> None:
        """Take the route file's route (on start and on SIGHUP); later requests go to its upstream."""
        route = read_json(self.folder / ROUTE_FILE)
        if not route or not route.get("upstream"):
            return
        with self.lock:
            self.route = route
        threading.Thread(target=self.report_when_drained, daemon=True).start()

    def report_when_drained(self) -> None:
        """Write the state file now, and again once no request is in flight to an older upstream."""
        self.write_state(drained=False)
        while True:
            with self.lock:
                current = self.route["upstream"]
                busy = sum(n for upstream, n in self.in_flight.items() if upstream != current)
            if not busy:
                break
            time.sleep(DRAIN_POLL)
        self.write_state(drained=True)

    def write_state(self, drained: bool) -> None:
        with self.lock:
            state = {**self.route, "drained": drained, "pid": os.getpid()}
        write_json(self.folder / STATE_FILE, state)

    def acquire(self) -> dict[str, Any]:
        """The route a request is sent on, counted in flight until `release`."""
        with self.lock:
            route = self.route
            self.in_flight[route["upstream"]] = self.in_flight.get(route["upstream"], 0) + 1
            return route

    def release(self, route: dict[str, Any]) -> None:
        with self.lock:
            self.in_flight[route["upstream"]] -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Router

    def do_GET(self) -> None:
        self.forward()

    def do_POST(self) -> None:
        self.forward()

    def do_PUT(self) -> None:
        self.forward()

    def do_DELETE(self) -> None:
        self.forward()

    def forward(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.answer(411, {"error": "send the body with a Content-Length, not chunked", "status": 411}, None)
            self.close_connection = True
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "content-length"}}
        route = self.server.acquire()
        try:
            status, answer_headers, answer = self.send_upstream(route["upstream"], body, headers)
        except OSError as err:
            message = f"the model server did not answer ({err}); see the endpoint's log"
            self.answer(502, {"error": message, "status": 502}, route)
            return
        finally:
            self.server.release(route)
        self.send_response(status)
        for key, value in answer_headers:
            if key.lower() not in HOP_BY_HOP | {"content-length", "server", "date"}:
                self.send_header(key, value)
        self.send_header(MODEL_HEADER, route.get("model_sha256") or "")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def send_upstream(self, upstream: str, body: bytes, headers: dict[str, str]) -> tuple[int, list, bytes]:
        """The upstream's answer over this thread's kept-alive connection to it; one retry on a fresh connection
        where a kept-alive one was closed under us."""
        local = self.server.connections
        pool: dict[str, http.client.HTTPConnection] = local.__dict__.setdefault("pool", {})
        for attempt in (1, 2):
            connection = pool.get(upstream)
            if connection is None:
                parts = urlsplit(upstream)
                connection = pool[upstream] = http.client.HTTPConnection(
                    parts.hostname, parts.port, timeout=UPSTREAM_TIMEOUT
                )
            try:
                connection.request(
                    self.command, self.path, body=body if body or self.command != "GET" else None, headers=headers
                )
                response = connection.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                del pool[upstream]
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def answer(self, status: int, error: dict[str, Any], route: dict[str, Any] | None) -> None:
        body = json.dumps(error).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if route:
            self.send_header(MODEL_HEADER, route.get("model_sha256") or "")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the model server logs every request already
        return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, required=True, help="the endpoint's port")
    parser.add_argument("--folder", type=Path, required=True, help=f"the folder of {ROUTE_FILE} and {STATE_FILE}")
    args = parser.parse_args(argv)
    router = Router(args.listen, args.port, args.folder)
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=router.load_route, daemon=True).start())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=router.shutdown, daemon=True).start())
    print(f"router on {args.listen}:{args.port}, routes in {args.folder / ROUTE_FILE}", flush=True)
    router.serve_forever()


if __name__ == "__main__":
    main()
