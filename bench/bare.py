"""The bare loops' data: torchvision's usual training transform on Pillow images, normalised in the loader's
workers, as the classification references do (ours hands uint8 batches over and normalises on the device)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from imgclf import augment, data


def standard_train_transform(crop_size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(crop_size, scale=augment.CROP_AREA, ratio=augment.CROP_ASPECT, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=data.IMAGENET_MEAN, std=data.IMAGENET_STD),
        ]
    )
