"""Local channels in S3 once per content, each dataset version reproducible.

Every file goes to a key made of its folder, its SHA-256 and its name: `imgclf/data/<folder>/<sha256:16>/<name>`.
A rerun on the same folder uploads nothing, a grown folder only its new or changed files, and a changed file gets
a new key instead of overwriting the object an earlier job read. A dataset version is a SageMaker ManifestFile,
`imgclf/datasets/<digest>.manifest`, that lists exactly its objects under the prefix `imgclf/data/`: in the
container each lands at `<folder>/<sha256:16>/<name>`, so the class folders stay where the trainer looks for them.
The manifest is written last: a version whose upload was interrupted is never a channel, and its rerun uploads
only what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from launcher import lineage
from launcher.backends.sagemaker import api
from launcher.contract import MANIFEST_SUFFIX, S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say

DATA_PREFIX = "imgclf/data"
MANIFEST_PREFIX = "imgclf/datasets"
HASH_CHARACTERS = 16
PROGRESS_SECONDS = 5.0


def object_key(relative_path: str, sha256: str) -> str:
    folder, _, name = relative_path.rpartition("/")
    return "/".join(part for part in (DATA_PREFIX, folder, sha256[:HASH_CHARACTERS], name) if part)


def version_digest(files: list[dict]) -> str:
    """The same for the same relative paths and contents, wherever the folder is."""
    listed = sorted((f["path"], f["sha256"]) for f in files)
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()


def store_channel(aws: api.Aws, bucket: str, channel: str, source: Path, manifest_prefix: str = MANIFEST_PREFIX) -> str:
    """The S3 URI of the ManifestFile of `source`'s files (a folder or one file), after uploading those S3 lacks;
    the manifest goes under `manifest_prefix` (a retrain pipeline's may watch its own)."""
    files = lineage.channel_manifest(str(source))["files"]
    if not files:
        raise LauncherError(f"channel {channel!r}: {source} holds no file to upload")
    manifest_key = f"{manifest_prefix.strip('/')}/{version_digest(files)}{MANIFEST_SUFFIX}"
    manifest_uri = f"{S3_SCHEME}{bucket}/{manifest_key}"
    with s3_refusals(bucket):
        if manifest_key in api.s3_keys(aws, bucket, manifest_key):
            say(f"channel {channel!r}: {len(files)} files of {source} already in S3 as {manifest_uri}")
            return manifest_uri
        entries = store_files(aws, bucket, f"channel {channel!r}", source if source.is_dir() else source.parent, files)
        api.put_object(aws, bucket, manifest_key, manifest(bucket, sorted(entries.values())))
    return manifest_uri


def store_files(aws: api.Aws, bucket: str, label: str, root: Path, files: list[dict]) -> dict[str, str]:
    """Upload those of `files` (path relative to `root`, bytes, sha256) that S3 lacks; return each one's entry
    under DATA_PREFIX (its place in a channel)."""
    with s3_refusals(bucket):
        present = set(api.s3_keys(aws, bucket, f"{DATA_PREFIX}/"))
        keys = {f["path"]: object_key(f["path"], f["sha256"]) for f in files}
        missing = [(root / f["path"], keys[f["path"]], f["bytes"]) for f in files if keys[f["path"]] not in present]
        say(
            f"{label}: {len(files) - len(missing)} of {len(files)} files of {root} already in "
            f"{S3_SCHEME}{bucket}/{DATA_PREFIX}/; uploading {len(missing)} ({megabytes(sum(m[2] for m in missing))})"
        )
        upload(aws, bucket, label, missing)
    return {path: key.removeprefix(f"{DATA_PREFIX}/") for path, key in keys.items()}


def manifest(bucket: str, entries: list[str]) -> bytes:
    """A ManifestFile of `entries` under DATA_PREFIX."""
    return json.dumps([{"prefix": f"{S3_SCHEME}{bucket}/{DATA_PREFIX}/"}, *entries]).encode()


def upload(aws: api.Aws, bucket: str, label: str, uploads: list[tuple[Path, str, int]]) -> None:
    """Upload each (file, key, bytes) of `uploads`, saying how far it got every few seconds and at the end."""
    total = sum(size for _, _, size in uploads)
    done = sent = 0
    shown = time.monotonic()
    for path, key, size in uploads:
        api.upload_file(aws, path, bucket, key)
        done, sent = done + 1, sent + size
        if time.monotonic() - shown >= PROGRESS_SECONDS or done == len(uploads):
            shown = time.monotonic()
            say(f"{label}: {done} of {len(uploads)} uploaded ({megabytes(sent)} of {megabytes(total)})")


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@contextlib.contextmanager
def s3_refusals(bucket: str) -> Iterator[None]:
    """Say which bucket and which permissions when S3 refuses (access denied, no such bucket)."""
    try:
        yield
    except LauncherError as err:
        text = str(err.__cause__ or err)
        if any(word in text for word in ("AccessDenied", "Forbidden", "(403)")):
            raise LauncherError(
                f"S3 refused access to bucket {bucket} ({text}): the launcher needs s3:ListBucket on it and "
                f"s3:GetObject and s3:PutObject on its keys {DATA_PREFIX}/* and {MANIFEST_PREFIX}/*"
            ) from err
        if "NoSuchBucket" in text:
            raise LauncherError(f"bucket {bucket} does not exist: create it, or give another with --bucket") from err
        raise
