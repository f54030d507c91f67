"""What a finished job leaves behind: the self-contained model directory and the metrics file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from imgclf import inference

METRICS_FILE = "metrics.json"


def save_model(model_dir: Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write weights (a plain state_dict), the model config and the inference code under `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / inference.WEIGHTS_FILE)
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    (model_dir / inference.CONFIG_FILE).write_text(json.dumps({**config, "versions": versions}, indent=2))
    code_dir = model_dir / "code"
    code_dir.mkdir(exist_ok=True)
    shutil.copyfile(inference.__file__, code_dir / "inference.py")


def save_host_report(output_data_dir: Path, host: str, rank: int, report: dict[str, Any]) -> Path:
    """What one training process did (`hosts/<host>-rank<rank>.json`); SageMaker merges every host's output/data."""
    path = output_data_dir / "hosts" / f"{host}-rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return path


def save_metrics(output_data_dir: Path, metrics: dict[str, Any]) -> Path:
    output_data_dir.mkdir(parents=True, exist_ok=True)
    path = output_data_dir / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2))
    return path
