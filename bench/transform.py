"""Batch transform against the endpoint it is built on: `launcher transform` (process backend) over a folder of
photo-size JPEGs, and the same model served by `serve` under 8 concurrent keep-alive clients, in paired rounds.

Prints, per round and as the median of the same-round ratios: the transform's files/s (from its first request to
its last answer, without the model server's start) over the endpoint's requests/s at concurrency 8.

    python bench/transform.py --images 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from endpoints import photo_jpegs, running_endpoint, write_model
from http_load import run_load

from launcher import contract

CONCURRENCY = 8


def transform_rate(model: Path, images: Path, work: Path) -> dict:
    """One `launcher transform` over every image; its summary."""
    output = work / "output"
    command = [sys.executable, "-m", "launcher.cli", "--workdir", str(work), "transform", str(model),
               "--input", str(images), "--output", str(output)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((output / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="JPEGs to classify (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="endpoint load per round (default 15)")
    parser.add_argument("--architecture", default="resnet18")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        served = write_model(tmp / "served", args.architecture)
        model = contract.pack(served / "model", tmp / "model.tar.gz")
        bodies = photo_jpegs(args.images)
        images = tmp / "images"
        for i, body in enumerate(bodies):
            folder = images / f"{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:05d}.jpg").write_bytes(body)
        print(f"{args.images} JPEGs of 500x375, {args.architecture}, {args.rounds} rounds", flush=True)
        ratios = []
        for round_number in range(1, args.rounds + 1):
            with running_endpoint(served) as url:
                load = run_load(url, bodies[:64], CONCURRENCY, args.seconds)
            summary = transform_rate(model, images, tmp / f"transform-{round_number}")
            assert summary["classified"] == args.images, summary
            ratio = summary["files_per_second"] / load["requests_per_second"]
            ratios.append(ratio)
            print(f"round {round_number}: endpoint c{CONCURRENCY} {load['requests_per_second']:.1f} req/s "
                  f"({load['errors']} errors); transform {summary['files_per_second']:.1f} files/s; "
                  f"ratio {ratio:.3f}", flush=True)  # fmt: skip
        print(f"transform / endpoint c{CONCURRENCY}: median {statistics.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
