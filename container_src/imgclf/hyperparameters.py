"""Typed, validated hyperparameters of the built-in trainer."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgclf import contract, decoding
from imgclf.diagnostics.rule import RuleConfigError
from imgclf.diagnostics.rulebook import parse_rule_config
from imgclf.errors import UserError

log = logging.getLogger(__name__)

MODEL_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULERS = ("cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class HyperparameterError(UserError):
    """A hyperparameter has a value the trainer cannot use."""


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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(
            key for key in values if key not in fields and not key.startswith(contract.PLATFORM_HYPERPARAMETER_PREFIXES)
        )
        if unknown:
            log.warning("ignoring unknown hyperparameters %s; known: %s", unknown, ", ".join(fields))
        parsed = {name: SPECS[name].parse(name, value) for name, value in values.items() if name in fields}
        hps = cls(**parsed)
        if hps.num_workers < 0:  # the host's cores shared by its training processes
            processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # set by torch.distributed.run
            hps = dataclasses.replace(hps, num_workers=min(max((os.cpu_count() or 1) // processes, 1), 8))
        return hps


def _as_int(name: str, value: Any, minimum: int) -> int:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not number.is_integer() or number < minimum:
        raise HyperparameterError(f"hyperparameter {name!r} must be an integer >= {minimum}, got {value!r}")
    return int(number)


def _as_float(name: str, value: Any, minimum: float, maximum: float = float("inf"), *, open_max: bool = False) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    too_big = number is not None and (number >= maximum if open_max else number > maximum)
    if number is None or not math.isfinite(number) or number < minimum or too_big:
        bound = f"< {maximum}" if open_max else f"<= {maximum}"
        raise HyperparameterError(f"hyperparameter {name!r} must be a number >= {minimum} and {bound}, got {value!r}")
    return number


def _as_bool(name: str, value: Any, *, allow_auto: bool = False) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    if allow_auto and text in ("auto", "none", ""):
        return None
    choices = "true, false" + (", auto" if allow_auto else "")
    raise HyperparameterError(f"hyperparameter {name!r} must be one of {choices}, got {value!r}")


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise HyperparameterError(f"hyperparameter {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return text


def _as_rules(name: str, value: Any) -> dict[str, Any]:
    try:
        return parse_rule_config(value)
    except RuleConfigError as err:
        raise HyperparameterError(f"hyperparameter {name!r}: {err}") from None


@dataclass(frozen=True)
class Spec:
    """What one hyperparameter accepts: its kind (`KINDS`), bounds or choices, and the value "auto" stands for.

    The launcher checks hyperparameters against these before any job starts (`imgclf.schema` writes them out)."""

    kind: str
    description: str
    minimum: float | None = None
    maximum: float | None = None  # None: no upper bound
    open_max: bool = False  # the maximum itself is refused
    choices: tuple[str, ...] = ()
    auto: int | None = None  # integer kinds: "auto" is accepted and stands for this value

    def parse(self, name: str, value: Any) -> Any:
        if self.kind == "integer":
            if self.auto is not None and str(value).strip().lower() == "auto":
                return self.auto
            return _as_int(name, value, int(self.minimum or 0))
        if self.kind == "number":
            maximum = float("inf") if self.maximum is None else self.maximum
            return _as_float(name, value, float(self.minimum or 0), maximum, open_max=self.open_max)
        if self.kind in ("boolean", "boolean_or_auto"):
            return _as_bool(name, value, allow_auto=self.kind == "boolean_or_auto")
        if self.kind == "choice":
            return _as_choice(name, value, self.choices)
        return _as_rules(name, value)


KINDS = ("integer", "number", "boolean", "boolean_or_auto", "choice", "rules")

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
        "choice", "where training JPEGs are decoded; auto: on the GPU when training on one", choices=decoding.SETTINGS
    ),
}
