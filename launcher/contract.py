"""The container's contracts as the launcher meets them: SageMaker's training-job layout, written on this machine
for the process backend, the JSON error its endpoints answer, and how data in S3 is named."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from imgclf_contract import platform
from launcher.errors import LauncherError

S3_SCHEME = "s3://"
MANIFEST_SUFFIX = ".manifest"  # an S3 object listing a channel's objects (SageMaker's ManifestFile)
MODEL_ARTIFACT = "model.tar.gz"
OUTPUT_ARTIFACT = "output.tar.gz"


def error_answer(body: bytes | str) -> tuple[str, int | None] | None:
    """The message and status of an endpoint's error answer (`{"error": MESSAGE, "status": N}`); None for any other
    body."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or "error" not in answer:
        return None
    status = answer.get("status")
    return str(answer["error"]), status if isinstance(status, int) else None


def encode_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, str]:
    """SageMaker hands every value to the container as a JSON-encoded string (`"0.01"`, `"\\"128\\""`)."""
    return {str(key): json.dumps(value) for key, value in hyperparameters.items()}


def decode_value(text: str) -> Any:
    """The container's reading of one such string: JSON (`0.01`, `64`, `true`), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def write_job_config(
    base_dir: Path, hyperparameters: dict[str, Any], channels: dict[str, Path], host: str = "algo-1"
) -> None:
    """Lay out `input/config/*.json` and `input/data/<channel>` (links to the local folders) as SageMaker would."""
    (base_dir / platform.HYPERPARAMETERS_FILE).parent.mkdir(parents=True, exist_ok=True)
    hyperparameters_json = json.dumps(encode_hyperparameters(hyperparameters), indent=2)
    (base_dir / platform.HYPERPARAMETERS_FILE).write_text(hyperparameters_json)
    resource = {"current_host": host, "hosts": [host], "network_interface_name": "eth0"}
    (base_dir / platform.RESOURCE_CONFIG_FILE).write_text(json.dumps(resource))
    channel_config = {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for name in channels}
    (base_dir / platform.INPUT_DATA_CONFIG_FILE).write_text(json.dumps(channel_config))
    for folder in (platform.MODEL_DIR, platform.OUTPUT_DATA_DIR, platform.CHECKPOINT_DIR):  # SageMaker makes these
        (base_dir / folder).mkdir(parents=True, exist_ok=True)
    data = base_dir / platform.INPUT_DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    for name, source in channels.items():
        if not source.exists():
            raise LauncherError(f"channel {name!r}: {source} does not exist")
        (data / name).symlink_to(source.resolve())


def pack(source_dir: Path, archive: Path) -> Path:
    """Tar and gzip the contents of a folder (SageMaker's model.tar.gz / output.tar.gz)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source_dir.iterdir()) if source_dir.is_dir() else []:
            tar.add(path, arcname=path.name)
    return archive


def unpack(archive: Path, target_dir: Path) -> None:
    """Extract a model artifact; members that would escape `target_dir` or link outside it are refused."""
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target_dir, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise LauncherError(f"cannot unpack {archive}: {err}") from err


def read_metrics(output_archive: Path) -> dict | None:
    """metrics.json from an output.tar.gz, or None. SageMaker packs output/data's files at the top level;
    SageMaker local mode packs output/ itself, so there it is data/metrics.json."""
    try:
        with tarfile.open(output_archive, "r:*") as tar:
            names = set(tar.getnames())
            member = next((m for m in ("metrics.json", "data/metrics.json") if m in names), None)
            extracted = tar.extractfile(member) if member else None
            return json.load(extracted) if extracted else None
    except (OSError, tarfile.TarError, ValueError):
        return None
