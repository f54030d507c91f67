"""Images/s of the training input pipeline against the decode-and-resize ceiling on the same JPEGs and cores.

The ceiling: every core decodes JPEGs and resizes them to the crop size, nothing else (Pillow, and
`torchvision.io.decode_jpeg` when it is faster). The pipeline: `imgclf.data.make_loaders` with the trainer's
default `num_workers` (one per core, at most 8), batches of augmented uint8 tensors, normalised here as the
trainer does on its device (on a CPU job, this process). Both run alternately in one process; the ratio
pipeline/ceiling is printed.

    .venv/bin/python bench/input_pipeline.py [--images 256] [--rounds 3] [--crop 224]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torchvision
from PIL import Image

from imgclf import data
from imgclf.hyperparameters import Hyperparameters

WIDTH, HEIGHT = 500, 375  # a typical photo of the kind the reference figures used


def write_jpegs(folder: Path, count: int) -> None:
    """Photos-like JPEGs (smooth gradients and noise) in two class folders."""
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        noise = torch.rand(3, HEIGHT // 8, WIDTH // 8, generator=generator)
        picture = torch.nn.functional.interpolate(noise[None], size=(HEIGHT, WIDTH), mode="bilinear")[0]
        image = Image.fromarray((picture.permute(1, 2, 0) * 255).byte().numpy())
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{i % 2}" / f"{i:04d}.jpg", quality=90)


def pillow_decode_resize(path: Path, crop: int) -> int:
    with Image.open(path) as image:
        image.convert("RGB").resize((crop, crop), Image.BILINEAR)
    return 1


def torchvision_decode_resize(path: Path, crop: int) -> int:
    torch.set_num_threads(1)
    encoded = torchvision.io.read_file(str(path))
    image = torchvision.io.decode_jpeg(encoded)
    torchvision.transforms.v2.functional.resize(image, [crop, crop], antialias=True)
    return 1


def ceiling(paths: list[Path], crop: int, decode: object, cores: int) -> float:
    """Images/s when every core does nothing but decode and resize."""
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(decode, paths[:cores], [crop] * cores))  # start the workers first
        start = time.perf_counter()
        done = sum(pool.map(decode, paths, [crop] * len(paths), chunksize=8))
        return done / (time.perf_counter() - start)


def pipeline(folder: Path, crop: int, batch_size: int, workers: int) -> float:
    """Images/s of one pass over the training loader, counted from its first batch (worker start-up excluded)."""
    images = data.load_image_folders({"train": folder, "valid": folder, "test": folder})
    loader = data.make_loaders(images, crop_size=crop, batch_size=batch_size, num_workers=workers, seed=0,
                               pin_memory=False)["train"]  # fmt: skip
    loader.sampler.set_epoch(1)
    batches = iter(loader)
    next(batches)
    seen, start = 0, time.perf_counter()
    for batch, _, _ in batches:
        data.normalize(batch)
        seen += len(batch)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = os.cpu_count() or 1
    workers = Hyperparameters.from_mapping({}).num_workers  # the trainer's default

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(folder, args.images)
        paths = sorted(folder.rglob("*.jpg"))
        rounds: dict[str, list[float]] = {"pillow": [], "torchvision": [], "pipeline": []}
        for _ in range(args.rounds):
            rounds["pillow"].append(ceiling(paths, args.crop, pillow_decode_resize, cores))
            rounds["torchvision"].append(ceiling(paths, args.crop, torchvision_decode_resize, cores))
            rounds["pipeline"].append(pipeline(folder, args.crop, args.batch_size, workers))
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    best = max(("pillow", "torchvision"), key=medians.get)
    print(f"{len(paths)} JPEGs of {WIDTH}x{HEIGHT}, crop {args.crop}, {cores} cores, {args.rounds} rounds; "
          f"pipeline: batch {args.batch_size}, num_workers {workers} (the default)")  # fmt: skip
    for name, values in rounds.items():
        print(f"  {name:12s} median {medians[name]:7.1f} img/s  (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"pipeline / ceiling ({best}): {medians['pipeline'] / medians[best]:.2f}")


if __name__ == "__main__":
    main()
