"""SHA-256 of a folder's files, remembered by path, size, modification time and inode, as git's index remembers
them: a folder of 100,000 unchanged files is listed and stat'ed, not read again.

The cache is one SQLite file, `$IMGCLF_HASH_CACHE`, else `$XDG_CACHE_HOME/imgclf/file-hashes.sqlite` (default
`~/.cache/...`). A file changed within `SETTLE_SECONDS` of being hashed could keep its size and time, so such a
"racily clean" file is hashed but not remembered. Where the cache cannot be opened, every file is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
SETTLE_SECONDS = 2.0
SCHEMA = """CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT
)"""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path() -> Path:
    if os.environ.get("IMGCLF_HASH_CACHE"):
        return Path(os.environ["IMGCLF_HASH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "imgclf" / "file-hashes.sqlite"


def folder_files(root: Path) -> list[dict[str, str | int]]:
    """Every file under `root` (relative path, bytes, SHA-256), in path order; only new or changed files are read."""
    base = str(root.resolve()).rstrip("/") + "/"
    with _cache() as cache:
        known = _known(cache, base) if cache else {}
        files, learned = [], []
        settled = time.time() - SETTLE_SECONDS
        for relative, stat in sorted(_walk(root, ""), key=lambda found: found[0].split("/")):
            entry = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            remembered = known.get(base + relative)
            sha256 = remembered[1] if remembered and remembered[0] == entry else None
            if sha256 is None:
                sha256 = file_sha256(root / relative)
                if stat.st_mtime_ns / 1e9 < settled:
                    learned.append((base + relative, *entry, sha256))
            files.append({"path": relative, "bytes": stat.st_size, "sha256": sha256})
        if cache and learned:
            with contextlib.suppress(sqlite3.Error), cache:  # a cache that cannot be written is only slower
                cache.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", learned)
    return files


def _walk(folder: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to the walk's root, stat) of every file, one directory listing per folder (what `rglob` and
    `is_file` see: symbolic links to files are followed, those to folders are not; a folder that is missing or
    cannot be listed has no files)."""
    try:
        listing = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    with listing as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path), f"{prefix}{entry.name}/")
            elif entry.is_file():
                yield f"{prefix}{entry.name}", entry.stat()


def _known(cache: sqlite3.Connection, prefix: str) -> dict[str, tuple[tuple[int, int, int], str]]:
    """The remembered files under the folder `prefix` (ending in /): path -> ((size, mtime_ns, inode), sha256)."""
    try:
        rows = cache.execute(
            "SELECT path, size, mtime_ns, inode, sha256 FROM hashes WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"),  # '0' follows '/': every path under the folder, and no other
        ).fetchall()
    except sqlite3.Error:
        return {}
    return {path: ((size, mtime, inode), sha256) for path, size, mtime, inode, sha256 in rows}


@contextlib.contextmanager
def _cache() -> Iterator[sqlite3.Connection | None]:
    """The cache's connection, or None where it cannot be opened."""
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30)
        connection.execute(SCHEMA)
    except (OSError, sqlite3.Error):
        yield None
        return
    try:
        yield connection
    finally:
        connection.close()
