import functools
from pathlib import Path

import pytest
import torch
from conftest import draw_shape, png_header, write_split

from imgclf import data, decoding
from imgclf_contract import layout
from imgclf_contract.errors import ContractError

TRAIN_32 = functools.partial(decoding.load_augmented, size=32)  # the train split's loading, crop 32


def three_splits(root: Path, names=("train", "valid", "test")) -> dict[str, Path]:
    return {name: write_split(root / name, per_class=2) for name in names}


def test_separate_channels(tmp_path: Path):
    splits = three_splits(tmp_path)
    channels = {"train": splits["train"], "validation": splits["valid"], "test": splits["test"]}
    assert layout.find_split_dirs(channels) == splits


@pytest.mark.parametrize("valid_name", ["valid", "val", "validation"])
def test_one_training_channel_with_subfolders(tmp_path: Path, valid_name: str):
    splits = three_splits(tmp_path, ("train", valid_name, "test"))
    dirs = layout.find_split_dirs({"training": tmp_path})
    assert dirs == {"train": splits["train"], "valid": splits[valid_name], "test": splits["test"]}


def test_missing_split_names_what_is_expected(tmp_path: Path):
    three_splits(tmp_path, ("train", "test"))
    with pytest.raises(ContractError, match=r"no 'valid' split in the 'training' channel .*valid or validation or val"):
        layout.find_split_dirs({"training": tmp_path})


def test_no_data_channel_at_all():
    with pytest.raises(ContractError, match="no training data: got channels none"):
        layout.find_split_dirs({})


def test_classes_come_from_folder_names(tmp_path: Path):
    three_splits(tmp_path)
    images = data.load_image_folders({"training": tmp_path})
    assert images.classes == ["circle", "square", "triangle"]
    assert {label for _, label in images.splits["test"].samples} == {0, 1, 2}


def test_class_mismatch_is_named(tmp_path: Path):
    write_split(tmp_path / "train", 2)
    write_split(tmp_path / "valid", 2, classes=("circle", "square", "hexagon"))
    write_split(tmp_path / "test", 2)
    with pytest.raises(ContractError, match=r"valid split .* missing \['triangle'\], extra \['hexagon'\]"):
        data.load_image_folders({"training": tmp_path})


def test_unreadable_files_are_skipped_and_reported(tmp_path: Path):
    three_splits(tmp_path)
    folder = tmp_path / "train" / "circle"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    good = (folder / "circle_0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])

    images = data.load_image_folders({"training": tmp_path})

    skipped = {Path(row["file"]).name for row in images.skipped_report()}
    assert skipped == {"empty.jpg", "notes.txt", "truncated.jpg"}
    assert len(images.splits["train"].samples) == 6


def test_a_decompression_bomb_is_skipped_and_cmyk_is_kept(tmp_path: Path):
    three_splits(tmp_path)
    folder = tmp_path / "train" / "square"
    (folder / "bomb.png").write_bytes(png_header(20000, 20000))  # 400 megapixels claimed, 100 bytes on disk
    draw_shape("square").convert("CMYK").save(folder / "cmyk.jpg")

    images = data.load_image_folders({"training": tmp_path})

    [row] = images.skipped_report()
    assert Path(row["file"]).name == "bomb.png" and row["reason"].startswith("image too large")
    image, _ = data.ImageDataset([(folder / "cmyk.jpg", 0)], TRAIN_32)[0]
    assert image.shape == (3, 32, 32)


def test_an_empty_split_is_an_error(tmp_path: Path):
    three_splits(tmp_path)
    for path in (tmp_path / "test").rglob("*.jpg"):
        path.write_bytes(b"broken")
    with pytest.raises(ContractError, match=r"the test split .* has no readable images"):
        data.load_image_folders({"training": tmp_path})


def test_a_class_without_training_images_is_an_error(tmp_path: Path):
    three_splits(tmp_path)
    for path in (tmp_path / "train" / "square").iterdir():
        path.unlink()
    with pytest.raises(ContractError, match=r"classes \['square'\] have no readable images in the train split"):
        data.load_image_folders({"training": tmp_path})


def test_greyscale_and_alpha_images_become_rgb_tensors(tmp_path: Path):
    draw_shape("circle").convert("L").save(tmp_path / "grey.png")
    draw_shape("square").convert("RGBA").save(tmp_path / "alpha.png")
    dataset = data.ImageDataset([(tmp_path / "grey.png", 0), (tmp_path / "alpha.png", 1)], TRAIN_32)
    for index in range(2):
        image, _ = dataset[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_a_file_that_breaks_after_the_scan_is_dropped_from_its_batch(tmp_path: Path):
    draw_shape("circle").save(tmp_path / "ok.jpg")
    (tmp_path / "gone.jpg").write_bytes(b"")
    dataset = data.ImageDataset([(tmp_path / "ok.jpg", 0), (tmp_path / "gone.jpg", 1)], TRAIN_32)
    images, labels, dropped = data.collate([dataset[0], dataset[1]])
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [0] and dropped == 1


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("progressive", [False, True])
def test_training_evaluates_exactly_what_serving_feeds_the_network(tmp_path: Path, mode: str, progressive: bool):
    """The test split's loader (torchvision's JPEG decoder, uint8 batches normalised after) and the endpoint's
    hooks (Pillow, per request) give the network the same tensor, bit for bit."""
    from imgclf import inference

    path = tmp_path / "test" / "circle" / "a.jpg"
    path.parent.mkdir(parents=True)
    draw_shape("circle", size=150).resize((150, 110)).convert(mode).save(path, quality=85, progressive=progressive)
    samples = {"train": [], "valid": [], "test": [(path, 0)]}
    folders = data.ImageFolderData(["circle"], {n: data.Split(tmp_path, s) for n, s in samples.items()})
    loader = data.make_loaders(folders, crop_size=64, batch_size=1, num_workers=0, seed=0, pin_memory=False)["test"]
    batch, _, _ = next(iter(loader))

    served = inference.Classifier(None, ["circle"], inference.eval_transform(64, data.resize_size_for(64)),
                                  data.IMAGENET_MEAN, data.IMAGENET_STD, torch.device("cpu"), 1)  # fmt: skip
    image = inference.input_fn(path.read_bytes(), "image/jpeg")
    expected = inference.normalize(served.transform(image)[None], served.mean, served.std)
    assert batch.dtype == torch.uint8
    assert torch.equal(data.normalize(batch), expected)


def test_normalize_matches_torchvisions_scale_and_normalise():
    from torchvision.transforms import v2

    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = v2.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)(v2.ToDtype(torch.float32, scale=True)(images))
    assert torch.allclose(data.normalize(images), reference, atol=1e-6, rtol=0)
