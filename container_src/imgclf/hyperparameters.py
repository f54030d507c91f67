"""Typed, validated hyperparameters of the built-in trainer."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgclf import contract
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
    learning_rate: float = 0.01  # 0 is allowed: it freezes training (useful to test rules)
    batch_size: int = 32
    epochs: int = 5
    model_name: str = "resnet18"
    pretrained: bool | None = None  # None ("auto"): use ImageNet weights if provided, else train from scratch
    freeze_backbone: bool = False  # train only the new classification head
    optimizer: str = "sgd"
    lr_scheduler: str = "cosine"  # cosine: decay to 0 over all steps; constant: keep learning_rate
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    image_size: int = 224  # side of the square crop fed to the network
    num_workers: int = -1  # data-loading processes; -1 means one per CPU core, at most 8
    seed: int = 0
    max_steps_per_epoch: int = 0  # 0 means a full pass over the training data
    debug_hook: bool = True  # smdebug hook writing output/data/debug (SageMaker's own config wins if given)
    debug_train_save_interval: int = 100  # the user's original train.save_interval; also how often rules run
    debug_eval_save_interval: int = 10  # eval.save_interval
    rules: dict[str, Any] = field(default_factory=dict)  # rule -> parameters or false (docs/debugging-and-profiling.md)
    profiler_interval_ms: int = 500  # system monitor sampling interval; 0 turns the monitor off
    checkpoint_interval: int = 0  # also checkpoint every this many steps; 0: at epoch ends and on SIGTERM only
    mixed_precision: str = "auto"  # auto (bf16 or fp16 on GPU, fp32 on CPU), bf16, fp16, fp32
    channels_last: bool | None = None  # None ("auto"): channels-last tensors on GPU only
    allow_cpu: bool = False  # train on the CPU even where the host's GPUs are unusable (driver too old)
    processes_per_host: int = 0  # 0 ("auto"): one training process per GPU, one on a host without GPUs

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """Validate decoded hyperparameters; ignore the keys SageMaker adds and warn about other unknown ones."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(
            key for key in values if key not in fields and not key.startswith(contract.PLATFORM_HYPERPARAMETER_PREFIXES)
        )
        if unknown:
            log.warning("ignoring unknown hyperparameters %s; known: %s", unknown, ", ".join(fields))
        parsed = {name: _PARSERS[name](name, value) for name, value in values.items() if name in fields}
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


_PARSERS = {
    "learning_rate": lambda n, v: _as_float(n, v, 0.0),
    "batch_size": lambda n, v: _as_int(n, v, 1),
    "epochs": lambda n, v: _as_int(n, v, 1),
    "model_name": lambda n, v: _as_choice(n, v, MODEL_NAMES),
    "pretrained": lambda n, v: _as_bool(n, v, allow_auto=True),
    "freeze_backbone": _as_bool,
    "optimizer": lambda n, v: _as_choice(n, v, OPTIMIZERS),
    "lr_scheduler": lambda n, v: _as_choice(n, v, LR_SCHEDULERS),
    "momentum": lambda n, v: _as_float(n, v, 0.0, 1.0, open_max=True),
    "weight_decay": lambda n, v: _as_float(n, v, 0.0),
    "image_size": lambda n, v: _as_int(n, v, 32),
    "num_workers": lambda n, v: -1 if str(v).strip().lower() == "auto" else _as_int(n, v, 0),
    "seed": lambda n, v: _as_int(n, v, 0),
    "max_steps_per_epoch": lambda n, v: _as_int(n, v, 0),
    "debug_hook": _as_bool,
    "allow_cpu": _as_bool,
    "processes_per_host": lambda n, v: 0 if str(v).strip().lower() == "auto" else _as_int(n, v, 1),
    "debug_train_save_interval": lambda n, v: _as_int(n, v, 1),
    "debug_eval_save_interval": lambda n, v: _as_int(n, v, 1),
    "rules": _as_rules,
    "profiler_interval_ms": lambda n, v: _as_int(n, v, 0),
    "checkpoint_interval": lambda n, v: _as_int(n, v, 0),
    "mixed_precision": lambda n, v: _as_choice(n, v, PRECISIONS),
    "channels_last": lambda n, v: _as_bool(n, v, allow_auto=True),
}
