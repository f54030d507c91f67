"""Cold start of an endpoint: seconds from starting `serve` to /ping answering with the model's worker ready,
for ResNet-18 and ResNet-50 (random weights: loading cost does not depend on their values).

    .venv/bin/python bench/cold_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from endpoints import running_endpoint, write_model


def cold_start(base: Path) -> float:
    """Start `serve` on the model and time it until the model is ready; stop it."""
    shutil.rmtree(base / "server", ignore_errors=True)
    start = time.perf_counter()
    with running_endpoint(base):
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in args.models:
            base = write_model(Path(tmp) / architecture, architecture)
            times = [cold_start(base) for _ in range(args.rounds)]
            size = (base / "model" / "model.pth").stat().st_size / 2**20
            print(f"{architecture} ({size:.0f} MiB of weights): serve -> model ready in median "
                  f"{statistics.median(times):.1f} s (rounds: {', '.join(f'{t:.1f}' for t in times)})")  # fmt: skip


if __name__ == "__main__":
    main()
