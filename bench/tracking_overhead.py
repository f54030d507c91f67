"""What MLflow tracking adds to a `launcher train` command, as a user runs it (a new process each time).

Three variants of the same tiny training job (4 steps an epoch) on the process backend, in rotating order each
round: tracking off (`--no-tracking`), tracking into the work folder's SQLite store (the default; the store already
made, as after a work folder's first command), and tracking pointed at a closed loopback port (a server that does
not answer). Prints each variant's median wall time and its ratio and difference to tracking off. The data is
scikit-learn's digits written as JPEGs (no download).

    .venv/bin/python bench/tracking_overhead.py [--rounds 3] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launcher.sample_data import write_digits

LAUNCHER = Path(sys.executable).parent / "launcher"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(work: Path, data: Path, name: str, epochs: int, tracking: list[str]) -> float:
    """Seconds one `launcher train` command takes, start to exit."""
    settings = {
        "epochs": epochs,
        "max_steps_per_epoch": 4,
        "batch_size": 32,
        "image_size": 32,
        "num_workers": 0,
        "pretrained": False,
        "profiler_interval_ms": 0,
    }
    hyperparameters = [arg for key, value in settings.items() for arg in ("-H", f"{key}={json.dumps(value)}")]
    command = [
        str(LAUNCHER),
        "--workdir",
        str(work),
        "train",
        "--data",
        str(data),
        "--job-name",
        name,
        *hyperparameters,
        *tracking,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    variants = {
        "tracking off": ["--no-tracking"],
        "work folder's store": [],
        "closed port": ["--tracking-uri", f"http://127.0.0.1:{closed_port()}"],
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "digits"
        write_digits(data, size=32, seed=0)
        work = root / "work"
        train(work, data, "warm-up", args.epochs, [])  # makes the store, as a work folder's first command does
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                seconds[name].append(
                    train(
                        work, data, f"r{round_}-{len(seconds[name])}-{names.index(name)}", args.epochs, variants[name]
                    )
                )
    base = statistics.median(seconds["tracking off"])
    print(f"launcher train, {args.epochs} epoch(s) of digits at 32 px, median of {args.rounds} rounds:")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(
            f"  {name:20s} {median:6.2f} s   ratio to off {median / base:5.3f}   added {median - base:+6.2f} s"
            f"   (rounds: {', '.join(f'{v:.2f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
