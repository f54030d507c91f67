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
    """Every file under `root` (relative path, bytes, SHA-256), sorted by path; only new or changed files are read."""
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    with _cache() as cache:
        known = _known(cache, root) if cache else {}
        files, learned = [], []
        settled = time.time() - SETTLE_SECONDS
        for path in paths:
            stat = path.stat()
            key = str(path.resolve())
            entry = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            remembered = known.get(key)
            sha256 = remembered[1] if remembered and remembered[0] == entry else None
            if sha256 is None:
                sha256 = file_sha256(path)
                if stat.st_mtime_ns / 1e9 < settled:
                    learned.append((key, *entry, sha256))
            files.append({"path": str(path.relative_to(root)), "bytes": stat.st_size, "sha256": sha256})
        if cache and learned:
            with contextlib.suppress(sqlite3.Error), cache:  # a cache that cannot be written is only slower
                cache.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", learned)
    return files


def _known(cache: sqlite3.Connection, root: Path) -> dict[str, tuple[tuple[int, int, int], str]]:
    """The remembered files under `root`: path -> ((size, mtime_ns, inode), sha256)."""
    prefix = str(root.resolve()).rstrip("/") + "/"
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
