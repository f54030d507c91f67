"""The built-in trainer's hyperparameters: each one's kind, bounds or choices, default and meaning, and the one
parser that turns SageMaker's decoded values into them. The image trains with what `parse` returns; the launcher
refuses, before any job starts, what `parse` would refuse."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgclf_contract.errors import HyperparameterError
from imgclf_contract.platform import PLATFORM_HYPERPARAMETER_PREFIXES

log = logging.getLogger(__name__)

MODEL_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULERS = ("cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DECODE_DEVICES = ("auto", "cpu", "gpu")
KINDS = ("integer", "number", "boolean", "boolean_or_auto", "choice", "rules")
TRUE, FALSE, AUTO = ("true", "1", "yes"), ("false", "0", "no"), ("auto", "none", "")


@dataclass(frozen=True)
class Spec:
    """What one hyperparameter accepts: its kind (`KINDS`), bounds or choices, and the value "auto" stands for."""

    kind: str
    description: str
    minimum: float | None = None
    maximum: float | None = None  # None: no upper bound
    open_max: bool = False  # the maximum itself is refused
    choices: tuple[str, ...] = ()
    auto: int | None = None  # integer kinds: "auto" is accepted and stands for this value

    def parse(self, name: str, value: Any) -> Any:
        """The value as the trainer uses it; HyperparameterError with the accepted values if it is refused."""
        if self.kind == "integer":
            if self.auto is not None and str(value).strip().lower() == "auto":
                return self.auto
            return _as_int(name, value, int(self.minimum or 0))
        if self.kind == "number":
            return _as_float(name, value, self)
        if self.kind in ("boolean", "boolean_or_auto", "choice"):
            text = str(value).strip().lower()
            if self.kind != "choice" and text in TRUE + FALSE:
                return text in TRUE
            if self.kind == "boolean_or_auto" and text in AUTO:
                return None
            if self.kind == "choice" and text in self.choices:
                return text
            accepted = ", ".join(self.named())
            raise HyperparameterError(f"hyperparameter {name!r} must be one of {accepted}, got {value!r}")
        return _as_rules(name, value)

    def named(self) -> tuple[str, ...]:
        """The values a message names (every spelling that is accepted is one of these or a synonym)."""
        if self.kind == "choice":
            return self.choices
        return ("true", "false", "auto") if self.kind == "boolean_or_auto" else ("true", "false")


def _number(value: Any) -> float | None:
    try:
        return float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _as_int(name: str, value: Any, minimum: int) -> int:
    number = _number(value)
    if number is None or not number.is_integer() or number < minimum:
        raise HyperparameterError(f"hyperparameter {name!r} must be an integer >= {minimum}, got {value!r}")
    return int(number)


def _as_float(name: str, value: Any, spec: Spec) -> float:
    number, minimum = _number(value), float(spec.minimum or 0)
    maximum = math.inf if spec.maximum is None else spec.maximum
    too_big = number is not None and (number >= maximum if spec.open_max else number > maximum)
    if number is None or not math.isfinite(number) or number < minimum or too_big:
        bound = f"< {maximum}" if spec.open_max else f"<= {maximum}"
        raise HyperparameterError(f"hyperparameter {name!r} must be a number >= {minimum} and {bound}, got {value!r}")
    return number


def _as_rules(name: str, value: Any) -> dict[str, Any]:
    """A JSON object (or its text) of rule name -> parameters, true or false; the image's rule book checks the names
    and parameters themselves as the job starts."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            message = f"hyperparameter {name!r}: rules must be a JSON object, got {value!r} ({err})"
            raise HyperparameterError(message) from None
    if not isinstance(value, Mapping):
        raise HyperparameterError(
            f"hyperparameter {name!r}: rules must be a JSON object of rule name -> parameters or false, got {value!r}"
        )
    return dict(value)


SPECS = {
    "learning_rate": Spec("number", "0 is allowed: it freezes training (useful to test rules)", minimum=0.0),
    "batch_size": Spec("integer", "images per step and process", minimum=1),
    "epochs": Spec("integer", "passes over the training data", minimum=1),
    "model_name": Spec("choice", "the torchvision ResNet to fine-tune", choices=MODEL_NAMES),
    "pretrained": Spec("boolean_or_auto", "auto: use ImageNet weights if provided, else train from scratch"),
    "freeze_backbone": Spec("boolean", "train only the new classification head"),
    "optimizer": Spec("choice", "the optimizer", choices=OPTIMIZERS),
    "lr_scheduler": Spec(
        "choice", "cosine: decay to 0 over all steps; constant: keep learning_rate", choices=LR_SCHEDULERS
    ),
    "momentum": Spec("number", "SGD only", minimum=0.0, maximum=1.0, open_max=True),
    "weight_decay": Spec("number", "L2 penalty", minimum=0.0),
    "image_size": Spec("integer", "side of the square crop fed to the network", minimum=32),
    "num_workers": Spec(
        "integer", "data-loading processes; auto (-1): one per CPU core, at most 8", minimum=0, auto=-1
    ),
    "seed": Spec("integer", "random seed", minimum=0),
    "max_steps_per_epoch": Spec("integer", "0 means a full pass over the training data", minimum=0),
    "debug_hook": Spec("boolean", "smdebug hook writing output/data/debug (SageMaker's own config wins if given)"),
    "allow_cpu": Spec("boolean", "train on the CPU even where the host's GPUs are unusable (driver too old)"),
    "processes_per_host": Spec(
        "integer", "auto (0): one training process per GPU, one on a host without GPUs", minimum=1, auto=0
    ),
    "debug_train_save_interval": Spec(
        "integer", "the original train.save_interval; also how often rules run", minimum=1
    ),
    "debug_eval_save_interval": Spec("integer", "eval.save_interval", minimum=1),
    "rules": Spec("rules", "rule -> parameters or false (docs/debugging-and-profiling.md)"),
    "profiler_interval_ms": Spec("integer", "system monitor sampling interval; 0 turns the monitor off", minimum=0),
    "checkpoint_interval": Spec(
        "integer", "also checkpoint every this many steps; 0: at epoch ends and on SIGTERM only", minimum=0
    ),
    "mixed_precision": Spec("choice", "auto: bf16 or fp16 on GPU, fp32 on CPU", choices=PRECISIONS),
    "channels_last": Spec("boolean_or_auto", "auto: channels-last tensors on GPU only"),
    "decode_device": Spec(
        "choice", "where training JPEGs are decoded; auto: on the GPU when training on one", choices=DECODE_DEVICES
    ),
}


@dataclass(frozen=True)
class Hyperparameters:
    """The built-in trainer's settings; what each means and accepts: `SPECS`."""

    learning_rate: float = 0.01
    batch_size: int = 32
    epochs: int = 5
    model_name: str = "resnet18"
    pretrained: bool | None = None
    freeze_backbone: bool = False
    optimizer: str = "sgd"
    lr_scheduler: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    image_size: int = 224
    num_workers: int = -1
    seed: int = 0
    max_steps_per_epoch: int = 0
    debug_hook: bool = True
    debug_train_save_interval: int = 100
    debug_eval_save_interval: int = 10
    rules: dict[str, Any] = field(default_factory=dict)
    profiler_interval_ms: int = 500
    checkpoint_interval: int = 0
    mixed_precision: str = "auto"
    channels_last: bool | None = None
    allow_cpu: bool = False
    processes_per_host: int = 0
    decode_device: str = "auto"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """Validate decoded hyperparameters; ignore the keys SageMaker adds and warn about other unknown ones."""
        unknown = sorted(key for key in values if key not in SPECS and not is_platform_key(key))
        if unknown:
            log.warning("ignoring unknown hyperparameters %s; known: %s", unknown, ", ".join(SPECS))
        hps = cls(**{name: SPECS[name].parse(name, value) for name, value in values.items() if name in SPECS})
        if hps.num_workers < 0:  # the host's cores shared by its training processes
            processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # set by torch.distributed.run
            hps = dataclasses.replace(hps, num_workers=min(max((os.cpu_count() or 1) // processes, 1), 8))
        return hps


def is_platform_key(name: str) -> bool:
    """A key SageMaker or its tuner adds (`sagemaker_program`, `_tuning_objective_metric`, ...), not the trainer's."""
    return name.startswith(PLATFORM_HYPERPARAMETER_PREFIXES)
