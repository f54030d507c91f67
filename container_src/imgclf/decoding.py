"""Reading and decoding image files, on the CPU or on the GPU, and the training augmentation's place in it.

On the CPU a training JPEG much larger than the crop is decoded at a reduced scale: libjpeg's DCT scaling gives
1/2, 1/4 or 1/8 of the picture for a fraction of a full decode, and the crop is drawn from the size in the file's
header first, so the smallest scale that still gives the crop at least its output size is known before decoding
(`load_augmented`). A photo of 4,000 x 3,000 pixels cropped to 224 decodes at 1/8 or 1/4.

On a GPU host the train split's JPEGs are decoded there by default: loader workers only read the files, the
training process decodes a batch at once with nvJPEG (`torchvision.io.decode_jpeg(..., device="cuda")`), then
crops, resizes and mirrors on the device (`EncodedBatch`), so the host's cores no longer bound the images per
second. Validation and test keep the CPU decoder, whose pixels the endpoint reproduces bit for bit. Every step
also runs with `device="cpu"`, which is how the GPU path is tested without a GPU.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as F

from imgclf import augment

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"
CPU = torch.device("cpu")


def read_file(path: Path) -> torch.Tensor:
    """A JPEG's bytes as a 1-D uint8 tensor; any other format decoded here by Pillow, to (3, H, W) uint8."""
    encoded = bytearray(path.read_bytes())
    if encoded.startswith(JPEG_MAGIC):
        return torch.frombuffer(encoded, dtype=torch.uint8)
    with Image.open(io.BytesIO(encoded)) as image:
        return F.pil_to_tensor(image.convert("RGB"))


def decode_jpeg(encoded: torch.Tensor, device: torch.device = CPU) -> torch.Tensor:
    """(3, H, W) uint8 RGB on `device`: torchvision's decoder (on the CPU, the same pixels as Pillow's in half the
    time), Pillow for what it refuses (CMYK on a GPU, odd JPEGs); Pillow's error if neither can read it."""
    try:
        return torchvision.io.decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    with Image.open(io.BytesIO(encoded.numpy().tobytes())) as image:
        return F.pil_to_tensor(image.convert("RGB")).to(device)


def read_image(path: Path) -> torch.Tensor:
    """An image file as (3, H, W) uint8 RGB on the CPU."""
    file = read_file(path)
    return decode_jpeg(file) if file.dim() == 1 else file


def load_evaluated(path: Path, seed: int | None, transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """An evaluation sample: the whole image decoded on the CPU, then `transform` (the endpoint's preprocessing)."""
    return transform(read_image(path))


def load_augmented(path: Path, seed: int | None, size: int) -> torch.Tensor:
    """A training sample decoded on the CPU: the crop and flip drawn for `seed` (None: at random), the JPEG decoded
    at the smallest DCT scale that keeps the crop at least `size` pixels a side, then cropped and resized to
    `size` x `size`."""
    file = read_file(path)
    shape = jpeg_size(file) if file.dim() == 1 else None
    if shape is None:  # not a JPEG (decoded already), or a header we do not read: decode, then draw
        image = decode_jpeg(file) if file.dim() == 1 else file
        return augment.apply(image, augment.draw(image.shape[-2], image.shape[-1], seed), size)
    how = augment.draw(*shape, seed)
    scale = dct_scale(how, size)
    if scale == 1:
        image = decode_jpeg(file)
    else:
        with Image.open(io.BytesIO(file.numpy().tobytes())) as picture:
            picture.draft("RGB", (math.ceil(shape[1] / scale), math.ceil(shape[0] / scale)))
            image = F.pil_to_tensor(picture.convert("RGB"))
    return augment.apply(image, augment.scaled(how, image.shape[-2] / shape[0], image.shape[-1] / shape[1]), size)


def dct_scale(how: augment.Draw, size: int) -> int:
    """The largest of 8, 4, 2 by which the crop `how` can shrink and stay at least `size` pixels a side, else 1."""
    return next((scale for scale in (8, 4, 2) if min(how.height, how.width) >= size * scale), 1)


def jpeg_size(encoded: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, or None where the segments before it do not parse."""
    data = memoryview(encoded.numpy())
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame, not DHT, JPG or DAC
            height, width = (data[at + 5] << 8) | data[at + 6], (data[at + 7] << 8) | data[at + 8]
            return (height, width) if height and width else None
        at += 2 + ((data[at + 2] << 8) | data[at + 3])
    return None


def load_encoded(path: Path, seed: int) -> tuple[torch.Tensor, Path, int]:
    """A training sample for decoding on the device (`EncodedBatch`): the file as `read_file` leaves it."""
    return read_file(path), path, seed


def choose(setting: str, device: torch.device) -> str:
    """Where the train split's JPEGs are decoded, "gpu" or "cpu": `setting` ("auto": the GPU when training on one
    whose decoder works), the CPU where the GPU cannot (with a warning when the GPU was asked for)."""
    if setting == "cpu":
        return "cpu"
    if device.type != "cuda":
        if setting == "gpu":
            log.warning("decode_device=gpu, but training runs on %s: decoding on the CPU", device)
        return "cpu"
    problem = decoder_problem(device)
    if problem:
        log.warning("cannot decode JPEGs on %s (%s): decoding on the CPU", device, problem)
        return "cpu"
    return "gpu"


def decoder_problem(device: torch.device) -> str | None:
    """Why a batch of JPEGs cannot be decoded on `device` (a torchvision built without nvJPEG), or None."""
    sample = torchvision.io.encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))
    try:
        torchvision.io.decode_jpeg([sample], device=device)
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


@dataclass
class EncodedBatch:
    """A training batch as a loader worker leaves it for `decode` on the device: each sample's file (as `read_file`
    leaves it), path and augmentation seed."""

    samples: list[tuple[torch.Tensor, Path, int]]
    crop_size: int

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """(N, 3, crop, crop) uint8 images on `device`, augmented as the CPU path would, and which samples they
        are (a file nothing can decode is left out, with a warning)."""
        images = self._decode_all(device)
        kept = [i for i, image in enumerate(images) if image is not None]
        size = self.crop_size
        if not kept:
            return torch.empty(0, 3, size, size, dtype=torch.uint8, device=device), kept
        augmented = []
        for i in kept:
            image, seed = images[i], self.samples[i][2]
            augmented.append(augment.apply(image, augment.draw(image.shape[-2], image.shape[-1], seed), size))
        return torch.stack(augmented), kept

    def _decode_all(self, device: torch.device) -> list[torch.Tensor | None]:
        """The JPEGs in one call to the device's decoder; if that call fails, one by one (`decode_jpeg`)."""
        files = [file for file, _, _ in self.samples]
        images: list[torch.Tensor | None] = [file.to(device) if file.dim() == 3 else None for file in files]
        jpegs = [i for i, file in enumerate(files) if file.dim() == 1]
        if not jpegs:
            return images
        try:
            decoded = torchvision.io.decode_jpeg([files[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, decoded, strict=True):
                images[i] = image
        except RuntimeError:
            for i in jpegs:
                try:
                    images[i] = decode_jpeg(files[i], device)
                except (OSError, SyntaxError, ValueError) as err:
                    log.warning("could not decode %s, leaving it out of this batch: %s", self.samples[i][1], err)
        return images
