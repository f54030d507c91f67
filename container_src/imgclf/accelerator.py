"""The device to run on, and no silent fall-back to the CPU.

torch sees no CUDA device when the host's NVIDIA driver is older than the CUDA it was built for, and code that
picks "cuda if available, else cpu" then trains and serves many times slower without a word. Here a host whose
driver shows GPUs that torch cannot use stops the job in seconds, naming the driver found, the CUDA the image
needs and the fix, unless the user opts in to the CPU.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from imgclf.errors import UserError

log = logging.getLogger(__name__)

DRIVER_DIR_ENV = "IMGCLF_NVIDIA_DRIVER_DIR"  # where the driver's files are (tests point it at a simulated host)
DEFAULT_DRIVER_DIR = "/proc/driver/nvidia"  # the NVIDIA container runtime shows the container's GPUs here
ALLOW_CPU_ENV = "IMGCLF_ALLOW_CPU"  # serving's opt-in to the CPU; training also has the allow_cpu hyperparameter
# The oldest Linux driver that runs each CUDA major release (CUDA's minor-version compatibility).
MINIMUM_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}
GPU_AMI_VERSION = "al2023-ami-sagemaker-inference-gpu-4-1"  # SageMaker endpoints with driver 580, CUDA 13.0
TRUE = ("1", "true", "yes", "on")


class GpuUnusable(UserError):
    """The host has NVIDIA GPUs that this torch build cannot use."""


@dataclass(frozen=True)
class HostGpus:
    """What the NVIDIA driver shows, whether or not torch can use it."""

    count: int
    driver: str | None  # e.g. "470.182.03"; None when unknown


def host_gpus(driver_dir: Path | None = None) -> HostGpus:
    """The GPUs in the driver's files (one folder per GPU under `gpus/`) and its version."""
    folder = driver_dir or Path(os.environ.get(DRIVER_DIR_ENV) or DEFAULT_DRIVER_DIR)
    gpus = folder / "gpus"
    count = sum(1 for _ in gpus.iterdir()) if gpus.is_dir() else 0
    version_file = folder / "version"
    found = re.search(r"\s(\d{3,}\.\d+(?:\.\d+)?)\s", version_file.read_text()) if version_file.is_file() else None
    return HostGpus(count, found.group(1) if found else None)


def allowed_by_environment() -> bool:
    """IMGCLF_ALLOW_CPU=true, or GPUs hidden on purpose (CUDA_VISIBLE_DEVICES empty or -1)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    return hidden or os.environ.get(ALLOW_CPU_ENV, "").strip().lower() in TRUE


def gpu_problem(gpus: HostGpus) -> str:
    """Why torch cannot use the host's GPUs."""
    driver = f"driver {gpus.driver}" if gpus.driver else "a driver of unknown version"
    cuda = torch.version.cuda
    if cuda is None:
        need = f"torch {torch.__version__} was built without CUDA"
    else:
        minimum = MINIMUM_DRIVER.get(int(cuda.split(".")[0]))
        need = f"torch {torch.__version__} needs CUDA {cuda}" + (f", which needs driver {minimum} or newer" if minimum
                                                                  else "")  # fmt: skip
    return f"this host has {gpus.count} NVIDIA GPU(s) with {driver}, but torch cannot use them: {need}"


def unusable_message(gpus: HostGpus) -> str:
    """Why torch cannot use the host's GPUs, and what to do."""
    return (
        f"{gpu_problem(gpus)}. "
        f"Fix: update the host's driver (a SageMaker endpoint gets driver 580 / CUDA 13.0 with the endpoint "
        f"config's InferenceAmiVersion {GPU_AMI_VERSION}), or use an image whose torch matches the driver. "
        f"To run on the CPU anyway, set the allow_cpu hyperparameter (training) or {ALLOW_CPU_ENV}=true."
    )


def unsupported_architecture(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """True when torch has no kernels for a GPU of this compute capability (e.g. a V100, sm_70, on a build for
    sm_75 and newer); an empty list means torch did not say."""
    built = {int(arch.split("_")[1]) for arch in arch_list if arch.startswith("sm_") and arch[3:].isdigit()}
    return bool(built) and capability[0] * 10 + capability[1] < min(built)


def select_device(allow_cpu: bool = False, local_rank: int = 0) -> torch.device:
    """`cuda:<local_rank>` where torch can use the GPUs; the CPU where there are none, or where the user allowed
    it; otherwise GpuUnusable."""
    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability(local_rank)
        if unsupported_architecture(capability, torch.cuda.get_arch_list()):
            raise GpuUnusable(
                f"GPU {local_rank} ({torch.cuda.get_device_name(local_rank)}, sm_{capability[0]}{capability[1]}) "
                f"is older than this torch build supports ({', '.join(torch.cuda.get_arch_list())}); "
                f"use an instance type with a newer GPU (ml.g4dn, ml.g5, ml.g6, ml.p4d, ml.p5)"
            )
        return torch.device("cuda", local_rank)
    gpus = host_gpus()
    if gpus.count:
        if not (allow_cpu or allowed_by_environment()):
            raise GpuUnusable(unusable_message(gpus))
        log.warning("running on the CPU as allowed, although %s", gpu_problem(gpus))
    return torch.device("cpu")


def use_worker_gpu(gpu_id: int | None) -> None:
    """Make the model server worker's GPU (MMS's `gpu_id`) the current CUDA device, so that `model_fn` hooks
    placing the model on "cuda" (ours, or a user's) put it there: one worker per GPU, not all on GPU 0."""
    if gpu_id is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(gpu_id))
