"""A closed-loop HTTP load generator: `concurrency` clients, each on its own persistent (keep-alive) connection,
sending the next JPEG as soon as the previous answer arrives, for a fixed time. Prints one JSON object:
requests, errors, statuses, throughput, latencies.

    python bench/http_load.py http://127.0.0.1:8080 IMAGE_DIR --concurrency 4 --seconds 20
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 60


class Client:
    """One client's connection, kept open between requests (as a pooled HTTP client keeps it) and opened again
    where the server closed it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> int:
        """The answer's status; 0 where no answer came, or one that is not JSON."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)
        try:
            self.connection.request("POST", self.path, body=body, headers={"Content-Type": "image/jpeg"})
            answer = self.connection.getresponse()
            json.loads(answer.read())
            if answer.will_close:
                self.close()
            return answer.status
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            return 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def run_load(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, path: str = "/invocations"
) -> dict[str, Any]:
    """POST `bodies` round-robin to `url + path` from `concurrency` threads for `seconds`; sum up the answers."""
    deadline = time.monotonic() + seconds
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    source = itertools.cycle(bodies)

    def client() -> None:
        connection = Client(f"{url}{path}")
        while time.monotonic() < deadline:
            with lock:
                body = next(source)
            start = time.perf_counter()
            status = connection.post(body)
            elapsed = time.perf_counter() - start
            with lock:
                statuses[status] += 1
                latencies.append(elapsed)
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    duration = time.monotonic() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests": len(latencies),
        "errors": sum(count for status, count in statuses.items() if status != 200),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "requests_per_second": len(latencies) / duration,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the endpoint, e.g. http://127.0.0.1:8080")
    parser.add_argument("images", type=Path, help="a folder of JPEGs (searched recursively)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--path", default="/invocations", help="the inference route (TorchServe: /predictions/NAME)")
    args = parser.parse_args()
    bodies = [path.read_bytes() for path in sorted(args.images.rglob("*.jpg"))]
    if not bodies:
        parser.error(f"no .jpg files under {args.images}")
    print(json.dumps(run_load(args.url, bodies, args.concurrency, args.seconds, args.path)))


if __name__ == "__main__":
    main()
