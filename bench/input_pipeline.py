"""Images/s of the training input pipeline against two ceilings on the same JPEGs and cores, in paired rounds.

- decode-resize ceiling: every core only decodes JPEGs and resizes them to the crop size (the faster of Pillow and
  `torchvision.io.decode_jpeg`): what no pipeline can beat.
- fair ceiling: every core does what a training pipeline must do and nothing else: decode (torchvision), a random
  resized crop to the crop size with a random flip, and stacking into batches.
- pipeline: `imgclf.data.make_loaders`' train loader with the trainer's default `num_workers`, one epoch over the
  images, each uint8 batch normalised in this process on one thread: more host work than a GPU job's training
  process does (it normalises on the device), and no intra-op threads spinning against the workers for the cores.

With photos much larger than the crop (`--photo 1600x1200`) the pipeline decodes at a reduced DCT scale and can
pass the fair ceiling, which decodes at full size.

Each round measures the three in turn, one pass over all images each; the ratios are the medians of the rounds'
own ratios, so that a slow moment of the machine weighs on both sides of a ratio. Images/s per core is printed so
machines can be compared.

    .venv/bin/python bench/input_pipeline.py [--images 2048] [--rounds 5] [--crop 224] [--photo 500x375]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from imgclf import data
from imgclf_contract.hyperparameters import Hyperparameters

CROP_AREA, CROP_ASPECT = (0.35, 1.0), (3 / 4, 4 / 3)  # the trainer's augmentation


def write_jpegs(folder: Path, count: int, width: int = 500, height: int = 375) -> None:
    """Photos-like JPEGs (smooth gradients and noise) in two class folders; 500x375: a typical photo of the kind
    the reference figures used."""
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        noise = torch.rand(3, height // 8, width // 8, generator=generator)
        picture = torch.nn.functional.interpolate(noise[None], size=(height, width), mode="bilinear")[0]
        image = Image.fromarray((picture.permute(1, 2, 0) * 255).byte().numpy())
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{i % 2}" / f"{i:04d}.jpg", quality=90)


def pillow_decode_resize(paths: list[Path], crop: int) -> int:
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB").resize((crop, crop), Image.BILINEAR)
    return len(paths)


def torchvision_decode_resize(paths: list[Path], crop: int) -> int:
    for path in paths:
        image = torchvision.io.decode_jpeg(torchvision.io.read_file(str(path)))
        F.resize(image, [crop, crop], antialias=True)
    return len(paths)


def decode_crop_collate(paths: list[Path], crop: int) -> int:
    """One batch as a fair pipeline must make it: decode, random resized crop, random flip, stack."""
    images = []
    for path in paths:
        image = torchvision.io.decode_jpeg(torchvision.io.read_file(str(path)))
        top, left, height, width = v2.RandomResizedCrop.get_params(image, CROP_AREA, CROP_ASPECT)
        image = F.resized_crop(image, top, left, height, width, [crop, crop], antialias=True)
        images.append(F.horizontal_flip(image) if torch.rand(1) < 0.5 else image)
    return len(torch.stack(images))


def one_thread() -> None:
    torch.set_num_threads(1)


def ceiling(pool: ProcessPoolExecutor, work: Callable[[list[Path], int], int], batches: list, crop: int) -> float:
    """Images/s when every core does nothing but `work`, a batch at a time."""
    start = time.perf_counter()
    done = sum(pool.map(work, batches, [crop] * len(batches)))
    return done / (time.perf_counter() - start)


def pipeline(loader: torch.utils.data.DataLoader, epoch: int) -> float:
    """Images/s of one epoch of the training loader, counted from its first batch, each batch normalised."""
    loader.sampler.set_epoch(epoch)
    batches = iter(loader)
    data.normalize(next(batches)[0])
    seen, start = 0, time.perf_counter()
    for batch, _, _ in batches:
        data.normalize(batch)
        seen += len(batch)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photo", default="500x375", help="the JPEGs' width x height")
    args = parser.parse_args()
    width, height = (int(side) for side in args.photo.split("x"))
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    workers = Hyperparameters.from_mapping({}).num_workers  # the trainer's default

    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(cores, initializer=one_thread) as pool:
        folder = Path(tmp)
        write_jpegs(folder, args.images, width, height)
        paths = sorted(folder.rglob("*.jpg"))
        batches = [paths[i : i + args.batch_size] for i in range(0, len(paths), args.batch_size)]
        images = data.load_image_folders({"train": folder, "valid": folder, "test": folder})
        loader = data.make_loaders(images, crop_size=args.crop, batch_size=args.batch_size, num_workers=workers,
                                   seed=0, pin_memory=False)["train"]  # fmt: skip
        pipeline(loader, 0)  # start the workers, warm the page cache
        rounds: dict[str, list[float]] = {"pillow": [], "torchvision": [], "fair": [], "pipeline": []}
        for epoch in range(1, args.rounds + 1):
            rounds["pillow"].append(ceiling(pool, pillow_decode_resize, batches, args.crop))
            rounds["torchvision"].append(ceiling(pool, torchvision_decode_resize, batches, args.crop))
            rounds["fair"].append(ceiling(pool, decode_crop_collate, batches, args.crop))
            rounds["pipeline"].append(pipeline(loader, epoch))
    decode_resize = [max(p, t) for p, t in zip(rounds["pillow"], rounds["torchvision"], strict=True)]
    print(f"{len(paths)} JPEGs of {width}x{height}, crop {args.crop}, {cores} cores, {args.rounds} rounds; "
          f"pipeline: batch {args.batch_size}, num_workers {workers} (the default)")  # fmt: skip
    for name, values in rounds.items():
        median = statistics.median(values)
        print(f"  {name:12s} median {median:7.1f} img/s, {median / cores:6.1f} per core  "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")  # fmt: skip
    for name, ceilings in (("fair ceiling", rounds["fair"]), ("decode-resize ceiling", decode_resize)):
        ratios = [p / c for p, c in zip(rounds["pipeline"], ceilings, strict=True)]
        print(f"pipeline / {name}: {statistics.median(ratios):.2f}  (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
