"""The training augmentation: a random resized crop and a coin-flip mirror, drawn from one seed per sample.

torchvision's `RandomResizedCrop.get_params` and `RandomHorizontalFlip`, draw for draw, but from a generator of
the sample's own rather than torch's global one (saving and restoring that one cost a tenth of a sample's time): a
sample's crop depends on its seed alone, is what the earlier loaders drew for the same seed, and can be drawn where
the image's size is known — in a loader worker from the JPEG's header (`decoding.load_augmented`), or in the
training process after decoding on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

CROP_AREA, CROP_ASPECT = (0.35, 1.0), (3 / 4, 4 / 3)  # the crop's share of the image, its width / height
ATTEMPTS = 10  # torchvision's: draws before falling back to a centre crop
LOG_ASPECT = torch.log(torch.tensor(CROP_ASPECT)).tolist()  # float32 values, as torchvision computes them


@dataclass(frozen=True)
class Draw:
    """Where to crop an image (pixels of the full-size image) and whether to mirror it."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw(height: int, width: int, seed: int | None) -> Draw:
    """The crop and flip of one sample of an image `height` x `width`: torchvision's draws, in its order, from a
    generator of the sample's own seeded with `seed` (None: torch's global one)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    for _ in range(ATTEMPTS):
        area = height * width * torch.empty(1).uniform_(*CROP_AREA, generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(*LOG_ASPECT, generator=generator)).item()
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
            return Draw(top, left, crop_h, crop_w, flip(generator))
    aspect = width / height  # no draw fits: the whole image, cut to the nearest allowed aspect ratio
    crop_w, crop_h = width, height
    if aspect < CROP_ASPECT[0]:
        crop_h = round(width / CROP_ASPECT[0])
    elif aspect > CROP_ASPECT[1]:
        crop_w = round(height * CROP_ASPECT[1])
    return Draw((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w, flip(generator))


def flip(generator: torch.Generator | None) -> bool:
    return bool(torch.rand(1, generator=generator) < 0.5)


def apply(image: torch.Tensor, how: Draw, size: int) -> torch.Tensor:
    """Crop, resize to `size` x `size` (antialiased bilinear) and maybe mirror a (3, H, W) image on its device."""
    image = F.resized_crop(image, how.top, how.left, how.height, how.width, [size, size], antialias=True)
    return F.horizontal_flip(image) if how.flip else image


def scaled(how: Draw, y: float, x: float) -> Draw:
    """The same crop on the image scaled by `y` vertically and `x` horizontally (decoded at a reduced size)."""
    top, left = round(how.top * y), round(how.left * x)
    return Draw(top, left, round((how.top + how.height) * y) - top, round((how.left + how.width) * x) - left, how.flip)
