"""A bounded load test of the real model server on 127.0.0.1: a second process sends real JPEGs at a fixed
concurrency for a fixed time; every answer must be a 200, and the server's resident memory (the whole process
tree: `serve`, the Java frontend, the Python workers) may not grow by 10 % or more once warmed up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import write_split
from test_serving import start_server, stop_server

pytestmark = pytest.mark.slow  # a model server under load

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 4


def resident_bytes(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def load(url: str, images: Path, seconds: float) -> dict:
    """Run bench/http_load.py in its own process and return its summary."""
    command = [sys.executable, str(ROOT / "bench" / "http_load.py"), url, str(images),
               "--concurrency", str(CONCURRENCY), "--seconds", str(seconds)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=True)
    return json.loads(done.stdout)


def test_load_gets_no_errors_and_memory_stays_flat(trained_model_dir: Path, tmp_path: Path):
    images = write_split(tmp_path / "images", per_class=5)
    server = start_server(trained_model_dir, tmp_path / "endpoint")
    try:
        warm_up = load(server.url, images, seconds=8)
        before = resident_bytes(server.process.pid)
        measured = load(server.url, images, seconds=20)
        after = resident_bytes(server.process.pid)
    finally:
        stop_server(server)
    for run in (warm_up, measured):
        assert run["errors"] == 0 and run["requests"] > 0, run
    assert measured["requests"] >= 20, measured  # it really was under load
    growth = after / before - 1
    assert growth < 0.10, f"resident memory grew {growth:.1%}: {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
