"""The training job as SageMaker describes it: config files under the base dir and `SM_*` variables."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf.errors import UserError
from imgclf_contract import platform


def decode_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Decode SageMaker's JSON-encoded strings (`"0.01"`, `"\\"128\\""`); keep a value as is if it is not JSON."""
    decoded = {}
    for key, value in raw.items():
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        decoded[key] = value
    return decoded


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); it is written by the launcher or SageMaker") from err


@dataclass(frozen=True)
class TrainingEnv:
    """Where a training job reads its inputs and writes its outputs."""

    base_dir: Path
    model_dir: Path
    output_data_dir: Path
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    hosts: list[str]
    current_host: str
    num_gpus: int
    network_interface: str | None = None
    user_program: str | None = None  # script mode: SAGEMAKER_PROGRAM or the `sagemaker_program` hyperparameter
    job_name: str | None = None  # TRAINING_JOB_NAME

    @property
    def failure_file(self) -> Path:
        return self.base_dir / platform.FAILURE_FILE

    @property
    def checkpoint_dir(self) -> Path:
        """The job's own folder under the synced checkpoint folder. Every trial of a SageMaker tuning job gets the
        same checkpoint S3 URI and all of it restored, so a trial must tell its checkpoint from the others'; a
        spot-interrupted job keeps its name when it starts again, and so finds its own."""
        root = self.base_dir / platform.CHECKPOINT_DIR
        return root / re.sub(r"[^A-Za-z0-9._-]", "-", self.job_name) if self.job_name else root

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TrainingEnv:
        """Read the job from `SAGEMAKER_BASE_DIR` (default `/opt/ml`) and the toolkit's `SM_*` variables."""
        environ = os.environ if environ is None else environ
        base = Path(environ.get(platform.BASE_DIR_ENV, platform.DEFAULT_BASE_DIR))
        raw_hps = _read_json(base / platform.HYPERPARAMETERS_FILE, {})
        resources = _read_json(base / platform.RESOURCE_CONFIG_FILE, {})
        hosts = json.loads(environ[platform.HOSTS_ENV]) if platform.HOSTS_ENV in environ else resources.get("hosts")
        current_host = environ.get(platform.CURRENT_HOST_ENV) or resources.get("current_host") or "algo-1"
        hyperparameters = decode_hyperparameters(raw_hps)
        return cls(
            base_dir=base,
            model_dir=Path(environ.get(platform.MODEL_DIR_ENV, base / platform.MODEL_DIR)),
            output_data_dir=Path(environ.get(platform.OUTPUT_DATA_DIR_ENV, base / platform.OUTPUT_DATA_DIR)),
            hyperparameters=hyperparameters,
            channels=_find_channels(base, environ),
            hosts=list(hosts or [current_host]),
            current_host=current_host,
            num_gpus=int(environ.get(platform.NUM_GPUS_ENV, _count_gpus())),
            network_interface=environ.get(platform.NETWORK_INTERFACE_ENV) or resources.get("network_interface_name"),
            user_program=environ.get(platform.USER_PROGRAM_ENV)
            or hyperparameters.get(platform.USER_PROGRAM_HYPERPARAMETER),
            job_name=environ.get(platform.TRAINING_JOB_NAME_ENV) or None,
        )


def _find_channels(base: Path, environ: Mapping[str, str]) -> dict[str, Path]:
    """Channels declared in inputdataconfig.json or present under input/data; `SM_CHANNEL_*` overrides both."""
    data_dir = base / platform.INPUT_DATA_DIR
    declared = _read_json(base / platform.INPUT_DATA_CONFIG_FILE, {})
    channels = {name: data_dir / name for name in declared}
    if data_dir.is_dir():
        channels.update({p.name: p for p in data_dir.iterdir() if p.is_dir()})
    for key, value in environ.items():
        if key.startswith(platform.CHANNEL_ENV_PREFIX):
            channels[key[len(platform.CHANNEL_ENV_PREFIX) :].lower()] = Path(value)
    return channels


def _count_gpus() -> int:
    import torch  # deferred: reading the environment should not pay for importing torch

    return torch.cuda.device_count()
