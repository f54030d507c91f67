"""The file-hash cache: an unchanged file is not read again, a changed one always is, and a file changed too soon
after being hashed to be told apart by its time is never trusted from the cache."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from launcher import file_hashes
from launcher.file_hashes import folder_files


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The files read for their hash, in a cache of the test's own."""
    monkeypatch.setenv("IMGCLF_HASH_CACHE", str(tmp_path / "cache.sqlite"))
    read: list[Path] = []
    real = file_hashes.file_sha256
    monkeypatch.setattr(file_hashes, "file_sha256", lambda path: read.append(path) or real(path))
    return read


def write(path: Path, content: bytes, age: float = 60.0) -> None:
    """A file last modified `age` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    then = time.time() - age
    os.utime(path, (then, then))


def test_unchanged_files_are_not_read_again_and_changed_ones_are(tmp_path: Path, reads: list[Path]):
    data = tmp_path / "data"
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        write(data / name, name.encode())
    first = folder_files(data)
    assert [f["path"] for f in first] == ["a/1.jpg", "a/2.jpg", "b/3.jpg"]
    assert all(f["sha256"] == hashlib.sha256((data / f["path"]).read_bytes()).hexdigest() for f in first)
    assert len(reads) == 3

    reads.clear()
    assert folder_files(data) == first and reads == []  # listed and stat'ed only

    write(data / "a/2.jpg", b"other", age=30)  # new content and time
    write(data / "c/4.jpg", b"new")
    again = folder_files(data)
    assert sorted(reads) == [data / "a/2.jpg", data / "c/4.jpg"]
    assert next(f for f in again if f["path"] == "a/2.jpg")["sha256"] == hashlib.sha256(b"other").hexdigest()

    reads.clear()
    assert folder_files(data / "a") == [f | {"path": f["path"][2:]} for f in again if f["path"].startswith("a/")]
    assert reads == []  # a subfolder's files are the same entries


def test_a_file_hashed_just_after_it_changed_is_hashed_again(tmp_path: Path, reads: list[Path]):
    data = tmp_path / "data"
    write(data / "x.jpg", b"one", age=0)  # its time may not tell a change within the next moment
    folder_files(data)
    folder_files(data)
    assert reads == [data / "x.jpg", data / "x.jpg"]


def test_without_a_usable_cache_every_file_is_read(tmp_path: Path, reads: list[Path], monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IMGCLF_HASH_CACHE", str(blocker / "cache.sqlite"))
    write(tmp_path / "data" / "y.jpg", b"y")
    assert folder_files(tmp_path / "data")[0]["sha256"] == hashlib.sha256(b"y").hexdigest()
    assert folder_files(tmp_path / "data") and len(reads) == 2


def test_a_missing_folder_has_no_files_as_rglob_says(tmp_path: Path, reads: list[Path]):
    assert folder_files(tmp_path / "nowhere") == []  # the caller says what is missing, as before the cache
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert folder_files(tmp_path / "file.jpg") == [] and reads == []
