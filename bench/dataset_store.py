"""Seconds to store an unchanged image folder again as a dataset version (`--backend sagemaker` with a local
folder: the version is already in S3), with the file-hash cache cold (every file read, as the store did before the
cache) and warm (`launcher.file_hashes`), in alternating order each round. The first store, which uploads every
file, is timed once. S3 is moto's, in this process, so request times are not S3's: the figure is the launcher's own
work. Files are small random ones in train/valid/test class folders, last modified an hour ago.

    .venv/bin/python bench/dataset_store.py [--files 20000] [--bytes 65536] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from moto import mock_aws

from launcher.backends.sagemaker import api
from launcher.backends.sagemaker.datasets import store_channel
from launcher.progress import muted_stdout

REGION, BUCKET = "us-east-1", "bench-data"
SPLITS = {"train": 0.8, "valid": 0.1, "test": 0.1}
CLASSES = 10


def write_folder(root: Path, files: int, size: int) -> None:
    """`files` random files spread over the splits and classes, last modified an hour ago."""
    then = time.time() - 3600
    written = 0
    for split, share in SPLITS.items():
        count = round(files * share) if split != "test" else files - written
        for number in range(count):
            path = root / split / f"class-{number % CLASSES}" / f"{number:07d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
            os.utime(path, (then, then))
        written += count


def timed_store(aws: api.Aws, folder: Path, cache: Path) -> float:
    os.environ["IMGCLF_HASH_CACHE"] = str(cache)
    start = time.perf_counter()
    with muted_stdout():
        store_channel(aws, BUCKET, "training", folder)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--bytes", type=int, default=65_536, help="each file's size (a small JPEG's)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, mock_aws():
        folder, warm = Path(tmp) / "data", Path(tmp) / "warm.sqlite"
        write_folder(folder, args.files, args.bytes)
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        aws = api.Aws(REGION)
        print(f"{args.files} files of {args.bytes} bytes; first store (uploads every file): "
              f"{timed_store(aws, folder, warm):.1f} s")  # fmt: skip
        cold, cached = [], []
        for round_number in range(args.rounds):
            order = ("cold", "warm") if round_number % 2 == 0 else ("warm", "cold")
            for variant in order:
                if variant == "cold":
                    cold.append(timed_store(aws, folder, Path(tmp) / f"cold-{round_number}.sqlite"))
                else:
                    cached.append(timed_store(aws, folder, warm))
        cold_median, warm_median = statistics.median(cold), statistics.median(cached)
        print(f"unchanged folder, stored again: every file read {cold_median:.2f} s, hash cache {warm_median:.2f} s "
              f"(medians of {args.rounds})")  # fmt: skip
        print(f"cached / every file read: {warm_median / cold_median:.3f}")


if __name__ == "__main__":
    main()
