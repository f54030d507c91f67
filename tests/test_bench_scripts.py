"""The benchmarks still run (tiny settings, CPU): they import the trainer's internals, which change. Their
figures are not checked here; `make bench` and docs/performance.md report them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmarks, run small

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    ("script", "args", "printed"),
    [
        ("gpu_train.py", ["--device", "cpu", "--model", "resnet18", "--steps", "1", "--rounds", "1", "--images",
                          "16", "--image-size", "32", "--batch-size", "4", "--workers", "1", "--serve-seconds",
                          "0.2"], "serving hooks, batch 32"),
        ("input_pipeline.py", ["--images", "16", "--rounds", "1", "--crop", "32", "--batch-size", "4"],
         "pipeline / fair ceiling"),
        ("train_overhead.py", ["--steps", "1", "--rounds", "1", "--image-size", "32"], "ratio with/without"),
        ("diagnostics_overhead.py", ["--steps", "2", "--rounds", "1"], "ratio on/off"),
        ("cold_start.py", ["--rounds", "1", "--models", "resnet18"], "serve -> model ready"),
        ("transform.py", ["--images", "8", "--rounds", "1", "--seconds", "1"], "transform / endpoint c8"),
        ("tracking_overhead.py", ["--rounds", "1"], "closed port"),
        ("dataset_store.py", ["--files", "30", "--rounds", "1"], "cached / every file read"),
        ("router.py", ["--images", "2", "--rounds", "1", "--seconds", "0.5", "--concurrency", "1"],
         "router_over_direct_throughput"),
        ("serve.py", ["--images", "4", "--seconds", "1", "--warm-up", "0.5", "--max-batch", "2", "--concurrency", "1",
                      "2", "--rounds", "1", "--torchserve-venv", "/nonexistent"], "endpoint req/s at concurrency 2"),
    ],
)  # fmt: skip
def test_benchmark_runs(script: str, args: list[str], printed: str):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert printed in done.stdout
