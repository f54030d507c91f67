"""A small real dataset for demos and tests: scikit-learn's bundled handwritten digits as RGB JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def write_digits(
    root: Path, *, size: int = 64, seed: int = 0, limit_per_class: int | None = None, fraction: float = 1.0
) -> dict[str, int]:
    """Write `root/{train,valid,test}/<digit>/<n>.jpg` (1,797 images, 10 classes); return the count per split.

    Each 8x8 greyscale digit (values 0-16) is inverted to dark ink on white, upscaled to `size` pixels and
    saved as an RGB JPEG. The split is stratified and fixed by `seed`. `fraction` keeps the first part of each
    class's share of each split, so a dataset written with 0.5 is a subset of the whole one, split for split (the
    retrain loop's "data so far" before "new data" arrives). Nothing is downloaded.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(SPLIT_FRACTIONS, 0)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))[:limit_per_class]
        n_train = round(len(indices) * SPLIT_FRACTIONS["train"])
        n_valid = round(len(indices) * SPLIT_FRACTIONS["valid"])
        parts = {
            "train": indices[:n_train],
            "valid": indices[n_train : n_train + n_valid],
            "test": indices[n_train + n_valid :],
        }
        for split, members in parts.items():
            members = members[: max(1, round(len(members) * fraction))]
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in members:
                pixels = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)
                image = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
                image.convert("RGB").save(folder / f"{index:04d}.jpg", quality=90)
            counts[split] += len(members)
    return counts
