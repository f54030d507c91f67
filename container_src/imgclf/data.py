"""Image-folder datasets from SageMaker channels: find the splits, check every file once, load batches."""

from __future__ import annotations

import io
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision import transforms
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as F

from imgclf import inference
from imgclf.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# Accepted names for each split, as a channel or as a subfolder of the `training` channel.
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
COMBINED_CHANNEL = "training"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MAX_LOGGED_SKIPS = 20
JPEG_MAGIC = b"\xff\xd8"
CROP_AREA, CROP_ASPECT = (0.35, 1.0), (3 / 4, 4 / 3)  # the training crop's share of the image, width / height


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


def find_split_dirs(channels: Mapping[str, Path]) -> dict[str, Path]:
    """Map train/valid/test to folders: separate channels, or subfolders of one `training` channel."""
    if "train" in channels:
        source, candidates = "channels", dict(channels)
    elif COMBINED_CHANNEL in channels:
        root = channels[COMBINED_CHANNEL]
        source = f"the {COMBINED_CHANNEL!r} channel ({root})"
        candidates = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    else:
        raise UserError(
            f"no training data: got channels {sorted(channels) or 'none'}; give a 'train', 'valid' and 'test' "
            f"channel, or one {COMBINED_CHANNEL!r} channel with train/, valid/ (or val/) and test/ subfolders"
        )
    dirs = {}
    for split, names in SPLIT_NAMES.items():
        found = next((candidates[n] for n in names if candidates.get(n) is not None), None)
        if found is None:
            raise UserError(f"no {split!r} split in {source}: expected one named {' or '.join(names)}")
        dirs[split] = found
    return dirs


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
    if not root.is_dir():
        raise UserError(f"split folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    index = {name: i for i, name in enumerate(class_names or classes)}
    files = [
        (path, index.get(name, -1))
        for name in classes
        for path in sorted((root / name).rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    ]
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
    """Scan all splits; the class folders must be the same in each, and no split may be empty."""
    dirs = find_split_dirs(channels)
    classes, train = scan_split(dirs["train"])
    if not classes:
        raise UserError(
            f"the train split {dirs['train']} has no class subfolders; put each class's images in its own folder"
        )
    splits = {"train": train}
    for name in SPLITS[1:]:
        split_classes, splits[name] = scan_split(dirs[name], classes)
        if split_classes != classes:
            missing = sorted(set(classes) - set(split_classes))
            extra = sorted(set(split_classes) - set(classes))
            raise UserError(
                f"class folders of the {name} split ({dirs[name]}) differ from train's: "
                f"missing {missing}, extra {extra}; every split needs the same class folders"
            )
    for name, split in splits.items():
        _log_skipped(name, split)
        if not split.samples:
            raise UserError(f"the {name} split ({split.root}) has no readable images")
    present = {label for _, label in train.samples}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise UserError(f"classes {empty} have no readable images in the train split {train.root}")
    return ImageFolderData(classes=classes, splits=splits)


def _log_skipped(name: str, split: Split) -> None:
    if not split.skipped:
        return
    log.warning("skipped %d unreadable file(s) in the %s split:", len(split.skipped), name)
    for path, reason in split.skipped[:MAX_LOGGED_SKIPS]:
        log.warning("  %s: %s", path, reason)
    if len(split.skipped) > MAX_LOGGED_SKIPS:
        log.warning("  ... and %d more (all listed in metrics.json)", len(split.skipped) - MAX_LOGGED_SKIPS)


class TrainAugmentation:
    """A random resized crop (`CROP_AREA` of the area, `CROP_ASPECT`) and a coin-flip mirror of a uint8 image
    tensor, drawn from torch's default generator: torchvision's training augmentation without its per-call
    dispatch, which cost as much as the resize itself."""

    def __init__(self, crop_size: int):
        self.size = [crop_size, crop_size]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, height, width = transforms.RandomResizedCrop.get_params(image, CROP_AREA, CROP_ASPECT)
        image = F.resized_crop(image, top, left, height, width, self.size, antialias=True)
        return F.horizontal_flip(image) if torch.rand(1) < 0.5 else image


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 batches, as the loaders give them, to the network's input where they are (on the GPU, if moved there
    first): serving's own `normalize`, with ImageNet's statistics."""
    return inference.normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def read_image(path: Path) -> torch.Tensor:
    """An RGB uint8 tensor (3, H, W). JPEGs go through torchvision's decoder (the same pixels as Pillow's, in half
    the time), other formats and anything it refuses through Pillow."""
    encoded = bytearray(path.read_bytes())
    if encoded.startswith(JPEG_MAGIC):
        try:
            return torchvision.io.decode_jpeg(torch.frombuffer(encoded, dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # Pillow decides, and says why if it cannot
    with Image.open(io.BytesIO(encoded)) as image:
        return F.pil_to_tensor(image.convert("RGB"))


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
    """(uint8 image tensor, label) pairs; a file that fails to load now yields None and is dropped by `collate`.

    Indexed by position, or by (position, seed) for a seeded augmentation (see `EpochSampler`).
    """

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable[[torch.Tensor], torch.Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            picture = read_image(path)
        except (OSError, SyntaxError, ValueError) as err:
            log.warning("could not load %s, leaving it out of this batch: %s", path, err)
            return None
        if seed is None:
            return self.transform(picture), label
        generator = torch.default_generator  # the transforms draw from it; leave it as it was afterwards
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.transform(picture), label
        finally:
            generator.set_state(state)


def collate(items: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the loadable items; also return how many were dropped."""
    good = [item for item in items if item is not None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), len(items)
    images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good])
    return images, labels, len(items) - len(good)


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
) -> dict[str, DataLoader]:
    """uint8 batches (see `normalize`): augmented ones of this host's shard of train, shuffled each epoch; all of
    valid and test, in order. Workers pass uint8 to the training process: a quarter of float32's bytes."""
    train = ImageDataset(data.splits["train"].samples, TrainAugmentation(crop_size))
    preprocessing = eval_preprocessing(crop_size)
    evaluation = inference.eval_transform(preprocessing["crop_size"], preprocessing["resize_size"])
    datasets = {"train": train, **{n: ImageDataset(data.splits[n].samples, evaluation) for n in SPLITS[1:]}}
    sampler = EpochSampler(train, seed=seed, rank=rank, world_size=world_size)
    return {
        name: DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler if name == "train" else None,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            worker_init_fn=leave_process_group,
        )
        for name, dataset in datasets.items()
    }
