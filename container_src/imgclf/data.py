"""Image-folder datasets from SageMaker channels: find the splits, check every file once, load batches."""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from imgclf import decoding, inference
from imgclf.shared_batches import Batch, SharedBatches, SharedBatchLoader
from imgclf_contract import layout
from imgclf_contract.layout import SPLITS

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MAX_LOGGED_SKIPS = 20


@dataclass
class Split:
    """One split's readable images (path, class index) and the files left out, with the reason."""

    root: Path
    samples: list[tuple[Path, int]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class ImageFolderData:
    classes: list[str]
    splits: dict[str, Split]

    def skipped_report(self) -> list[dict[str, str]]:
        return [
            {"split": name, "file": str(path), "reason": reason}
            for name, split in self.splits.items()
            for path, reason in split.skipped
        ]


def check_image(path: Path) -> str | None:
    """Decode the file (at reduced scale where the format allows); return why it is unusable, or None."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))  # JPEG: decode at 1/8 scale; still reads the whole stream
            image.load()
    except Image.DecompressionBombError as err:
        return f"image too large ({err})"
    except (OSError, SyntaxError, ValueError) as err:
        return f"not a readable image ({err})"
    return None


def scan_split(root: Path, class_names: list[str] | None = None) -> tuple[list[str], Split]:
    """List class folders and check every file in them, in parallel threads."""
    classes = layout.class_folders(root)
    index = {name: i for i, name in enumerate(class_names or classes)}
    files = [(path, index.get(name, -1)) for name in classes for path in layout.class_files(root, name)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        problems = list(pool.map(lambda item: check_image(item[0]), files))
    split = Split(root=root, samples=[])
    for (path, label), problem in zip(files, problems, strict=True):
        if problem:
            split.skipped.append((path, problem))
        else:
            split.samples.append((path, label))
    return classes, split


def load_image_folders(channels: Mapping[str, Path]) -> ImageFolderData:
    """Scan all splits, decoding every file once; the layout rules (imgclf_contract.layout) hold for what decodes."""
    dirs = layout.find_split_dirs(channels)
    layout.check_classes(dirs, {name: layout.class_folders(root) for name, root in dirs.items()})
    classes, train = scan_split(dirs["train"])
    splits = {"train": train, **{name: scan_split(dirs[name], classes)[1] for name in SPLITS[1:]}}
    for name, split in splits.items():
        _log_skipped(name, split)
    counts = {name: Counter(label for _, label in split.samples) for name, split in splits.items()}  # one pass each
    layout.check_images(dirs, {name: {c: counts[name][i] for i, c in enumerate(classes)} for name in splits})
    return ImageFolderData(classes=classes, splits=splits)


def _log_skipped(name: str, split: Split) -> None:
    if not split.skipped:
        return
    log.warning("skipped %d unreadable file(s) in the %s split:", len(split.skipped), name)
    for path, reason in split.skipped[:MAX_LOGGED_SKIPS]:
        log.warning("  %s: %s", path, reason)
    if len(split.skipped) > MAX_LOGGED_SKIPS:
        log.warning("  ... and %d more (all listed in metrics.json)", len(split.skipped) - MAX_LOGGED_SKIPS)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 batches, as the loaders give them, to the network's input where they are (on the GPU, if moved there
    first): serving's own `normalize`, with ImageNet's statistics."""
    return inference.normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def resize_size_for(crop_size: int) -> int:
    """Short side to resize to before the centre crop (the usual 256/224 ratio)."""
    return round(crop_size * 256 / 224)


def eval_preprocessing(crop_size: int) -> dict:
    """The evaluation preprocessing, as recorded in the model config for serving."""
    return {
        "crop_size": crop_size,
        "resize_size": resize_size_for(crop_size),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % 2**63


class EpochSampler(Sampler[tuple[int, int]]):
    """This host's shard of the train split, in a new order each epoch, each index paired with the seed of its
    augmentation: a sample's crop and flip depend on (seed, epoch, index) only, not on which loader worker
    takes it or what ran before, so a resumed job sees exactly the batches the uninterrupted one would have."""

    def __init__(self, dataset: Dataset, seed: int, rank: int, world_size: int):
        self.order = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.seed, self.epoch, self.start = seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next pass is `epoch`'s order, beginning after its first `start` samples (a resumed epoch)."""
        self.order.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.order)  # a whole epoch, also when resuming: step numbers and schedules stay the same

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in itertools.islice(iter(self.order), self.start, None):
            yield index, sample_seed(self.seed, self.epoch, index)


class ImageDataset(Dataset):
    """(sample, label) pairs, a sample being what `load(path, seed)` makes of a file (`decoding.load_*`); a file
    that fails to load now yields None and is dropped by the collate function.

    Indexed by position, or by (position, seed) for a seeded augmentation (see `EpochSampler`).
    """

    def __init__(self, samples: list[tuple[Path, int]], load: Callable[[Path, int | None], Any]):
        self.samples = samples
        self.load = load

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int] | None:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            return self.load(path, seed), label
        except (OSError, SyntaxError, ValueError) as err:
            log.warning("could not load %s, leaving it out of this batch: %s", path, err)
            return None


def collate(items: list[tuple[torch.Tensor, int] | None], shared: SharedBatches | None = None) -> Batch:
    """Stack the loadable items (in a loader worker, straight into the shared memory that hands the batch over:
    one of `shared`'s buffers, else a new segment as `default_collate` makes); also say how many were dropped."""
    good = [item for item in items if item is not None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), len(items))
    images = [image for image, _ in good]
    stacked, slot = shared.stack(images) if shared else (default_collate(images), None)
    return Batch(stacked, torch.tensor([label for _, label in good]), len(items) - len(good), slot)


def collate_encoded(items: list, crop_size: int) -> Batch:
    """`decoding.load_encoded` samples as one `decoding.EncodedBatch`, the labels, and how many were dropped."""
    good = [item for item in items if item is not None]
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    return Batch(decoding.EncodedBatch([sample for sample, _ in good], crop_size), labels, len(items) - len(good))


def leave_process_group(_worker_id: int) -> None:
    """Put a loader worker in a process group of its own. A stop may signal the training process's whole group
    (torch.distributed.run's does): it must reach the training process alone, which stops at a step boundary and
    then ends its workers. A worker whose training process died ends by itself (DataLoader's watchdog)."""
    os.setpgid(0, 0)


def make_loaders(
    data: ImageFolderData,
    *,
    crop_size: int,
    batch_size: int,
    num_workers: int,
    seed: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
    decode: str = "cpu",
) -> dict[str, DataLoader]:
    """uint8 batches (see `normalize`): augmented ones of this host's shard of train, shuffled each epoch; all of
    valid and test, in order. Workers pass uint8 to the training process: a quarter of float32's bytes. With
    `decode` "gpu", train's batches are `decoding.EncodedBatch`es instead, decoded and augmented on the device;
    otherwise, with workers and no pinning, they come through reused shared buffers (`shared_batches`)."""
    samples = {name: split.samples for name, split in data.splits.items()}
    if decode == "gpu":
        train = ImageDataset(samples["train"], decoding.load_encoded)
        train_collate = functools.partial(collate_encoded, crop_size=crop_size)
    else:
        train = ImageDataset(samples["train"], functools.partial(decoding.load_augmented, size=crop_size))
        train_collate = collate
    preprocessing = eval_preprocessing(crop_size)
    evaluation = functools.partial(
        decoding.load_evaluated,
        transform=inference.eval_transform(preprocessing["crop_size"], preprocessing["resize_size"]),
    )
    options = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=leave_process_group,
    )
    train_loader: Callable[..., DataLoader] = DataLoader
    if decode != "gpu" and num_workers and not pin_memory:  # pinning copies a batch out of shared memory at once
        shared = SharedBatches(num_workers)  # train's uint8 batches, through reused buffers
        train_collate = functools.partial(collate, shared=shared)
        train_loader = functools.partial(SharedBatchLoader, shared=shared)
    sampler = EpochSampler(train, seed=seed, rank=rank, world_size=world_size)
    return {
        "train": train_loader(train, sampler=sampler, collate_fn=train_collate, **options),
        **{n: DataLoader(ImageDataset(samples[n], evaluation), collate_fn=collate, **options) for n in SPLITS[1:]},
    }
