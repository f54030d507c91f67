"""How the built-in trainer reads its data: the splits, found as channels or as subfolders of one `training` channel,
one folder per class with the same class folders in every split, and no split or training class without images.
The image applies these rules to the files it could decode; the launcher, before any job, to the files it counts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from imgclf_contract.errors import LayoutError

SPLITS = ("train", "valid", "test")
# Accepted names for each split, as a channel or as a subfolder of the `training` channel.
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
COMBINED_CHANNEL = "training"
FIX = (
    "lay the data out as train/, valid/ (or val/) and test/, each with one folder per class and the same class "
    "folders in each"
)


def find_split_dirs(channels: Mapping[str, Path]) -> dict[str, Path]:
    """Map train/valid/test to folders: separate channels, or subfolders of one `training` channel."""
    if "train" in channels:
        source, candidates = "channels", dict(channels)
    elif COMBINED_CHANNEL in channels:
        root = channels[COMBINED_CHANNEL]
        source = f"the {COMBINED_CHANNEL!r} channel ({root})"
        candidates = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    else:
        raise LayoutError(
            f"no training data: got channels {sorted(channels) or 'none'}; give a 'train', 'valid' and 'test' "
            f"channel, or one {COMBINED_CHANNEL!r} channel with train/, valid/ (or val/) and test/ subfolders"
        )
    dirs = {}
    for split, names in SPLIT_NAMES.items():
        found = next((candidates[n] for n in names if candidates.get(n) is not None), None)
        if found is None:
            raise LayoutError(f"no {split!r} split in {source}: expected one named {' or '.join(names)}")
        dirs[split] = found
    return dirs


def class_folders(root: Path) -> list[str]:
    """A split's class folders, sorted (hidden folders are not classes)."""
    if not root.is_dir():
        raise LayoutError(f"split folder {root} does not exist")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_files(root: Path, name: str) -> list[Path]:
    """The files of one class folder, at any depth, sorted (hidden files left out)."""
    return [p for p in sorted((root / name).rglob("*")) if p.is_file() and not p.name.startswith(".")]


def check_classes(dirs: Mapping[str, Path], classes: Mapping[str, list[str]]) -> None:
    """Every split has train's class folders, and train has some."""
    if not classes["train"]:
        raise LayoutError(
            f"the train split {dirs['train']} has no class subfolders; put each class's images in its own folder"
        )
    for split in SPLITS[1:]:
        if classes[split] != classes["train"]:
            missing = sorted(set(classes["train"]) - set(classes[split]))
            extra = sorted(set(classes[split]) - set(classes["train"]))
            raise LayoutError(
                f"class folders of the {split} split ({dirs[split]}) differ from train's: "
                f"missing {missing}, extra {extra}; every split needs the same class folders"
            )


def check_images(dirs: Mapping[str, Path], images: Mapping[str, Mapping[str, int]]) -> None:
    """No split without readable images, and no training class without any (`images`: split -> class -> count)."""
    for split in SPLITS:
        if not sum(images[split].values()):
            raise LayoutError(f"the {split} split ({dirs[split]}) has no readable images")
    empty = [name for name, count in images["train"].items() if not count]
    if empty:
        raise LayoutError(f"classes {empty} have no readable images in the train split {dirs['train']}")


def check_files(channels: Mapping[str, Path]) -> None:
    """The layout rules on the files as they are, none decoded: what can be checked before a job starts."""
    dirs = find_split_dirs(channels)
    classes = {split: class_folders(root) for split, root in dirs.items()}
    check_classes(dirs, classes)
    check_images(dirs, {split: {c: len(class_files(dirs[split], c)) for c in classes[split]} for split in dirs})
