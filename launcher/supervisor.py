"""Keeps a model server on this machine serving: `python -m launcher.supervisor [options] -- serve ...`.

On SageMaker an instance whose `serve` exits (all its model workers died, say) is replaced by the platform; on this
machine the supervisor does the same for an endpoint of the process backend: it runs the server as its child, and
when the child exits after it had served, restarts it after a backoff (1 s, 2 s, 4 s, ...), at most `--restarts`
times within `--window` seconds (a restarted server that exits before it is ready again counts as well). Each
restart, and giving up with the reason, is written to the log (the server's own, which the supervisor shares) and to
the endpoint's record. A first server that never became ready is not restarted: the supervisor exits with its
status, so the launcher reports the start-up failure with the log, as before.

The supervisor and its server share one process group: stopping the endpoint's group ends both, and SIGTERM makes
the supervisor wait for its child and exit instead of restarting it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.records import Endpoint, RecordStore

DEFAULT_RESTARTS = 3
DEFAULT_WINDOW_SECONDS = 600.0  # restarts older than this no longer count against the limit
BACKOFF_CAP_SECONDS = 30.0
PING_INTERVAL = 0.5


def command(
    server: list[str],
    *,
    ping: str,
    records: Path,
    endpoint: str,
    restarts: int = DEFAULT_RESTARTS,
    window: float = DEFAULT_WINDOW_SECONDS,
) -> list[str]:
    """The command line that runs `server` under a supervisor, noting restarts in `endpoint`'s record."""
    options = ["--ping", ping, "--records", str(records), "--endpoint", endpoint]
    options += ["--restarts", str(restarts), "--window", str(window)]
    return [sys.executable, "-m", "launcher.supervisor", *options, "--", *server]


def backoff(restart: int) -> float:
    """Seconds to wait before the `restart`-th restart (1-based): 1, 2, 4, ... capped."""
    return min(BACKOFF_CAP_SECONDS, 2.0 ** (restart - 1))


def answers(ping: str) -> bool:
    try:
        with urllib.request.urlopen(ping, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Supervisor:
    """Runs one server, restarting it within the limits; `note` enters each event in the endpoint's record."""

    def __init__(
        self, server: list[str], ping: str, restarts: int, window: float, note: Callable[[dict[str, Any]], None]
    ):
        self.server, self.ping, self.limit, self.window, self.note = server, ping, restarts, window, note
        self.stopping = False
        self.child: subprocess.Popen | None = None

    def stop(self, _signum: int, _frame: object) -> None:
        """SIGTERM: the group's signal reaches the server too; wait for it to end, restart nothing."""
        self.stopping = True

    def run(self) -> int:
        restarted: list[float] = []  # when each restart within the window happened
        while True:
            served, status = self._run_once()
            if self.stopping or (not served and not restarted):  # not started at all: the launcher reports it
                return status
            now = time.time()
            restarted = [t for t in restarted if now - t < self.window]
            if len(restarted) >= self.limit:
                reason = (
                    f"the model server exited with status {status} and was restarted {len(restarted)} times in "
                    f"the last {self.window:.0f} s already (the limit): gave up; see the log above for the cause"
                )
                log(reason)
                self.note({"event": "gave up", "exit_status": status, "reason": reason})
                return status
            restarted.append(now)
            wait = backoff(len(restarted))
            when = "after serving" if served else "before it was ready again"
            log(
                f"the model server exited with status {status} {when}; restart {len(restarted)} of at most "
                f"{self.limit} in {wait:.0f} s"
            )
            self.note({"event": "restarting", "exit_status": status, "restart": len(restarted)})
            time.sleep(wait)
            if self.stopping:
                return status

    def _run_once(self) -> tuple[bool, int]:
        """Start the server, wait for it to end; whether it answered /ping before it did, and its exit status."""
        self.child = subprocess.Popen(self.server)
        served = False
        while self.child.poll() is None:
            if not served and answers(self.ping):
                served = True
            time.sleep(PING_INTERVAL)
        status = self.child.returncode
        return served, (128 - status if status < 0 else status)


def log(message: str) -> None:
    print(f"supervisor: {time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)


def record_note(records: Path, endpoint: str, pid: int) -> Callable[[dict[str, Any]], None]:
    """Enter an event in the endpoint's record, while this supervisor is still the one serving it."""
    store = RecordStore(records)

    def note(event: dict[str, Any]) -> None:
        if not store.exists(Endpoint, endpoint):
            return
        record = store.load(Endpoint, endpoint)
        if record.pid != pid:  # another model server serves it now (a swap): not ours to write
            return
        record.restarts = [*record.restarts, {**event, "at": time.time(), "generation": record.generation}]
        if event["event"] == "gave up":
            record.status, record.failure_reason = "Failed", event["reason"]
        store.save(record)

    return note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.supervisor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ping", required=True, help="the server's /ping URL: it has served once this answers 200")
    parser.add_argument("--records", type=Path, required=True, help="the launcher's records folder")
    parser.add_argument("--endpoint", required=True, help="the endpoint whose record notes restarts")
    parser.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS, help="restarts allowed within --window")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_SECONDS, help="seconds (default 600)")
    parser.add_argument("server", nargs=argparse.REMAINDER, help="-- and the server's command line")
    args = parser.parse_args(argv)
    server = args.server[1:] if args.server[:1] == ["--"] else args.server
    if not server:
        parser.error("no server command given after --")
    note = record_note(args.records, args.endpoint, os.getpid())
    supervisor = Supervisor(server, args.ping, args.restarts, args.window, note)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
