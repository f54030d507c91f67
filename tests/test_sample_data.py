from pathlib import Path

from PIL import Image

from launcher.sample_data import write_digits


def test_digits_as_rgb_jpegs_in_three_splits(tmp_path: Path):
    counts = write_digits(tmp_path, size=32, limit_per_class=10)
    assert counts == {"train": 70, "valid": 20, "test": 10}
    for split in ("train", "valid", "test"):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == [str(d) for d in range(10)]
    with Image.open(next((tmp_path / "test" / "7").iterdir())) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))


def test_the_full_set_is_split_without_overlap(tmp_path: Path):
    counts = write_digits(tmp_path, size=8)
    assert sum(counts.values()) == 1797
    names = {split: {p.name for p in (tmp_path / split).rglob("*.jpg")} for split in counts}
    assert not (names["train"] & names["test"]) and not (names["valid"] & names["test"])
