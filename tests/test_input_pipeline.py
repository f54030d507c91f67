"""The training input pipeline: the augmentation's statistics against torchvision's, and the GPU decode path (run on
the CPU) against the CPU path, pixel for pixel."""

import logging
import shutil
import statistics
import types
from pathlib import Path

import pytest
import torch
from conftest import draw_shape
from torchvision.transforms import v2

from imgclf import augment, data, decoding, shared_batches
from imgclf.precision import StepPrecision
from imgclf.train import on_device

DRAWS = 2000


@pytest.mark.parametrize(("height", "width"), [(375, 500), (40, 400)])  # a photo; a strip where few draws fit
def test_the_crop_and_flip_are_torchvisions_for_the_same_seed(height: int, width: int):
    """Each sample's draw is what torchvision's RandomResizedCrop and a coin flip draw after `torch.manual_seed`
    of the sample's seed (what the loaders did before drawing from a generator of the sample's own): the same
    crops, so the same crop-area, aspect and flip statistics."""
    image = torch.empty(3, height, width)
    ours, theirs = [], []
    for seed in range(DRAWS):
        ours.append(augment.draw(height, width, seed))
        torch.manual_seed(seed)
        box = v2.RandomResizedCrop.get_params(image, list(augment.CROP_AREA), list(augment.CROP_ASPECT))
        theirs.append(augment.Draw(*box, bool(torch.rand(1) < 0.5)))
    assert ours == theirs
    assert statistics.fmean(d.flip for d in ours) == pytest.approx(0.5, abs=0.03)
    areas = [d.height * d.width / (height * width) for d in ours]
    assert min(areas) >= augment.CROP_AREA[0] - 0.01 or (height, width) == (40, 400)  # the strip falls back


def test_a_samples_draw_depends_on_its_seed_alone():
    assert augment.draw(375, 500, 7) == augment.draw(375, 500, 7)
    assert len({augment.draw(375, 500, seed) for seed in range(50)}) == 50


def test_decoding_on_the_gpu_is_chosen_only_where_it_can_run(caplog: pytest.LogCaptureFixture):
    cpu = torch.device("cpu")
    assert decoding.choose("auto", cpu) == "cpu" and decoding.choose("cpu", cpu) == "cpu"
    assert decoding.choose("cpu", torch.device("cuda")) == "cpu"  # asked for the CPU: no probe of the GPU
    with caplog.at_level(logging.WARNING):
        assert decoding.choose("gpu", cpu) == "cpu"
    assert "decode_device=gpu" in caplog.text and "decoding on the CPU" in caplog.text
    assert decoding.decoder_problem(cpu) is None  # the probe itself runs (here on the CPU's decoder)


def write_train_split(root: Path) -> data.ImageFolderData:
    folder = root / "circle"
    folder.mkdir(parents=True)
    for i in range(5):
        draw_shape("circle", size=60, seed=i).resize((60, 45)).save(folder / f"{i}.jpg", quality=85)
    draw_shape("circle", size=60).convert("CMYK").save(folder / "cmyk.jpg")
    draw_shape("circle", size=60).save(folder / "plain.png")
    samples = [(path, 0) for path in sorted(folder.iterdir())]
    return data.ImageFolderData(["circle"], {name: data.Split(root, samples) for name in data.SPLITS})


def first_batch(images: data.ImageFolderData, decode: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    loader = data.make_loaders(images, crop_size=32, batch_size=8, num_workers=0, seed=3, pin_memory=False,
                               decode=decode)["train"]  # fmt: skip
    loader.sampler.set_epoch(2)
    batch, labels, dropped = next(iter(loader))
    assert dropped == 0
    return on_device(batch, labels, StepPrecision.choose("fp32", None, torch.device("cpu")))


def test_the_gpu_decode_path_gives_the_cpu_paths_pixels(tmp_path: Path):
    """On the CPU's decoder the device path (files read in the workers, decoded and augmented in the training
    process) must feed the network exactly what the CPU path does: same decoder, same seeds, same crops."""
    images = write_train_split(tmp_path)

    cpu_images, cpu_labels, _ = first_batch(images, "cpu")
    device_images, device_labels, left_out = first_batch(images, "gpu")

    assert left_out == 0 and cpu_images.shape == (7, 3, 32, 32)
    assert torch.equal(device_images, cpu_images) and torch.equal(device_labels, cpu_labels)


def test_a_file_no_decoder_can_read_is_left_out_with_its_label(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    good = tmp_path / "good.jpg"
    draw_shape("circle").save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:2] + b"not a jpeg at all" * 10)
    batch = decoding.EncodedBatch([(decoding.read_file(p), p, i) for i, p in enumerate([broken, good])], 16)

    with caplog.at_level(logging.WARNING):
        images, labels, left_out = on_device(
            batch, torch.tensor([0, 1]), StepPrecision.choose("fp32", None, torch.device("cpu"))
        )

    assert left_out == 1 and labels.tolist() == [1] and images.shape == (1, 3, 16, 16)
    assert "broken.jpg" in caplog.text


@pytest.mark.parametrize(("mode", "progressive"), [("RGB", False), ("RGB", True), ("L", False), ("CMYK", False)])
def test_a_jpegs_size_is_read_from_its_header(tmp_path: Path, mode: str, progressive: bool):
    path = tmp_path / "a.jpg"
    draw_shape("circle", size=64).resize((123, 77)).convert(mode).save(path, progressive=progressive, dpi=(72, 72))
    assert decoding.jpeg_size(decoding.read_file(path)) == (77, 123)
    assert decoding.jpeg_size(torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0\x00"), dtype=torch.uint8)) is None


def test_a_large_photo_is_decoded_at_a_reduced_scale_to_nearly_the_same_crop(tmp_path: Path):
    """A 1,600 x 1,200 JPEG cropped to 64: most draws decode at 1/8, 1/4 or 1/2 of the photo, and the sample is
    the full decode's within a few levels (the resize from a reduced decode differs only in its rounding)."""
    path = tmp_path / "photo.jpg"
    noise = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0))
    photo = torch.nn.functional.interpolate(noise[None], size=(1200, 1600), mode="bilinear")[0]
    v2.functional.to_pil_image(photo).save(path, quality=90)
    full = decoding.read_image(path)

    scales = [decoding.dct_scale(augment.draw(1200, 1600, seed), 64) for seed in range(200)]
    assert min(scales) >= 2 and 8 in scales
    differs = []
    for seed in range(5):
        reduced = decoding.load_augmented(path, seed, 64)
        exact = augment.apply(full, augment.draw(1200, 1600, seed), 64)
        assert reduced.shape == exact.shape == (3, 64, 64)
        assert (reduced.float() - exact.float()).abs().mean() < 3
        differs.append(not torch.equal(reduced, exact))
    assert all(differs)  # decoded at a reduced scale indeed: a full decode would give the exact crop


def write_photos(root: Path, count: int) -> data.ImageFolderData:
    folder = root / "shape"
    folder.mkdir(parents=True)
    for i in range(count):
        draw_shape(("circle", "square")[i % 2], size=48, seed=i).save(folder / f"{i}.jpg", quality=85)
    samples = [(path, 0) for path in sorted(folder.iterdir())]
    return data.ImageFolderData(["shape"], {name: data.Split(root, samples) for name in data.SPLITS})


def loaders(images: data.ImageFolderData, num_workers: int) -> dict[str, torch.utils.data.DataLoader]:
    return data.make_loaders(images, crop_size=24, batch_size=4, num_workers=num_workers, seed=5, pin_memory=False)


def test_workers_hand_batches_over_in_reused_buffers_with_the_same_pixels(tmp_path: Path):
    """Train's batches stacked into a worker's reused shared buffers are the batches the training process would make
    itself, epoch after epoch; and the buffers are reused, not made anew."""
    images = write_photos(tmp_path, 40)
    reused, alone = loaders(images, 2), loaders(images, 0)
    slots = []
    for epoch in (1, 2):
        for name in ("train", "valid"):
            if name == "train":
                reused[name].sampler.set_epoch(epoch)
                alone[name].sampler.set_epoch(epoch)
            for got, expected in zip(reused[name], alone[name], strict=True):
                assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
                if name == "train":
                    slots.append(got.slot)
                else:
                    assert got.slot is None  # valid and test keep no buffers between epochs
    used = [slot for slot in slots if slot is not None]
    assert len(used) > len(set(used)) and len(used) >= len(slots) / 2  # the same slots, again and again


def test_a_batch_that_is_kept_is_never_overwritten(tmp_path: Path):
    """While anything refers to a batch, its buffer is not handed to a worker again: keep every batch of an epoch,
    draw the next epoch (the workers stack into new memory meanwhile), and the kept batches are unchanged."""
    loader = loaders(write_photos(tmp_path, 40), 2)["train"]
    kept, copies = [], []
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        for images, _, _ in loader:
            kept.append(images)
            copies.append(images.clone())
    assert all(torch.equal(batch, copy) for batch, copy in zip(kept, copies, strict=True))


def test_workers_hand_over_as_before_where_shared_memory_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Docker container's /dev/shm is 64 MB unless told otherwise: buffers are kept only where it has room for
    them and for the batches on their way."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(free=0))  # forked workers see it
    loader = loaders(write_photos(tmp_path, 16), 2)["train"]
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 4 and all(batch.slot is None for batch in batches)


def test_a_batch_survives_pinning():
    """On a GPU host DataLoader pins each batch by rebuilding it from its items (torch's `pin_memory`, which needs no
    GPU for items that are not tensors): it must come back a whole batch."""
    from torch.utils.data._utils.pin_memory import pin_memory

    images, labels, dropped = pin_memory(shared_batches.Batch("images", "labels", 2, slot=1))
    assert (images, labels, dropped) == ("images", "labels", 2)
