"""The job config: one YAML file for data, image, instances, hyperparameters, tuning, rules and deployment.

Example (the original project's tuning, verbatim ranges included):

    data: data/dogs                      # a local folder or s3:// URI with train/ valid/ test/
    image: imgclf:latest
    instance_type: ml.g4dn.xlarge
    hyperparameters: {epochs: 5, model_name: resnet50}
    rules: {Overfit: {patience: 2}}      # passed to the container's `rules` hyperparameter
    profiler: {interval_ms: 500}
    tuning:
      ranges:
        learning_rate: ContinuousParameter(0.001, 0.1)
        batch_size: CategoricalParameter([32, 64, 128, 256, 512])
      objective: {metric: valid loss, direction: Minimize}   # the default; `average test loss` was the original's
      strategy: Bayesian                 # Bayesian, Random, Hyperband or Grid
      max_jobs: 20
      max_parallel_jobs: 2
      early_stopping: Auto               # Off or Auto
    deploy: {instance_type: ml.m5.large, workers: 2, timeout: 240}   # for `launcher run`; also inference_ami_version
    tracking: {experiment: dogs, registered_model: dog-breeds}      # MLflow names (default: the file's name)
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher import metrics
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.tuning.spec import DIRECTIONS, EARLY_STOPPING, SCALINGS, STRATEGIES, ParameterRange, Tuning

SDK_RANGE_CLASSES = {
    "ContinuousParameter": "continuous",
    "IntegerParameter": "integer",
    "CategoricalParameter": "categorical",
}
TOP_LEVEL = (
    "data",
    "channels",
    "image",
    "instance_type",
    "instance_count",
    "hyperparameters",
    "rules",
    "profiler",
    "tuning",
    "deploy",
    "output",
    "tracking",
)
DEPLOY_KEYS = ("instance_type", "workers", "timeout", "inference_ami_version")
TRACKING_KEYS = ("experiment", "registered_model")


class ConfigError(LauncherError):
    """The job config is not valid; the message names the file and the key."""


@dataclass(frozen=True)
class JobConfig:
    channels: dict[str, str] = field(default_factory=dict)  # channel -> folder or s3:// URI
    image: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    output: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # rules and profiler folded in
    tuning: Tuning | None = None
    deploy: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, str] = field(default_factory=dict)  # MLflow experiment and registered model names


def load_job_config(path: Path) -> JobConfig:
    """Read and validate a job config; every error names the file and the offending key. Local data paths are
    relative to the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read job config {path}: {err}") from err
    try:
        config = parse_job_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    folder = path.parent
    channels = {
        name: source if source.startswith(S3_SCHEME) else str((folder / source).resolve())
        for name, source in config.channels.items()
    }
    return dataclasses.replace(config, channels=channels)


def parse_job_config(raw: Any) -> JobConfig:
    config = _mapping(raw, "the file")
    unknown = sorted(set(config) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown keys {', '.join(unknown)}; known: {', '.join(TOP_LEVEL)}")
    channels = {str(k): str(v) for k, v in _mapping(config.get("channels", {}), "channels").items()}
    if "data" in config:
        channels["training"] = str(config["data"])
    hyperparameters = dict(_mapping(config.get("hyperparameters", {}), "hyperparameters"))
    if "rules" in config:
        hyperparameters["rules"] = dict(_mapping(config["rules"], "rules"))
    profiler = _mapping(config.get("profiler", {}), "profiler")
    if set(profiler) - {"interval_ms"}:
        raise ConfigError("profiler takes only interval_ms")
    if "interval_ms" in profiler:
        hyperparameters["profiler_interval_ms"] = _integer(profiler["interval_ms"], "profiler.interval_ms", 0)
    count = config.get("instance_count")
    return JobConfig(
        channels=channels,
        image=_optional_str(config.get("image")),
        instance_type=_optional_str(config.get("instance_type")),
        instance_count=None if count is None else _integer(count, "instance_count", 1),
        output=_optional_str(config.get("output")),
        hyperparameters=hyperparameters,
        tuning=parse_tuning(config["tuning"]) if "tuning" in config else None,
        deploy=parse_deploy(config.get("deploy", {})),
        tracking=parse_tracking(config.get("tracking", {})),
    )


def parse_tracking(raw: Any) -> dict[str, str]:
    """`tracking: {experiment: dogs, registered_model: dog-breeds}`: the MLflow names (default: the file's name)."""
    tracking = {str(k): v for k, v in _mapping(raw, "tracking").items()}
    _no_more({k: v for k, v in tracking.items() if k not in TRACKING_KEYS}, "tracking")
    for key, value in tracking.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"tracking.{key} must be a non-empty name, got {value!r}")
    return tracking


def parse_deploy(raw: Any) -> dict[str, Any]:
    """`deploy: {instance_type: ml.m5.large, workers: 2, timeout: 240}`, as `launcher deploy` takes them."""
    deploy = dict(_mapping(raw, "deploy"))
    _no_more({k: v for k, v in deploy.items() if k not in DEPLOY_KEYS}, "deploy")
    for key in ("instance_type", "inference_ami_version"):
        if key in deploy:
            deploy[key] = str(deploy[key])
    if "workers" in deploy:
        _integer(deploy["workers"], "deploy.workers", 1)
    if "timeout" in deploy and _number(deploy["timeout"], "deploy.timeout") <= 0:
        raise ConfigError(f"deploy.timeout must be a number of seconds > 0, got {deploy['timeout']!r}")
    return deploy


def parse_tuning(raw: Any) -> Tuning:
    tuning = _mapping(raw, "tuning")
    known = ("ranges", "objective", "strategy", "max_jobs", "max_parallel_jobs", "early_stopping", "warm_start_from")
    unknown = sorted(set(tuning) - set(known))
    if unknown:
        raise ConfigError(f"unknown keys tuning.{', tuning.'.join(unknown)}; known: {', '.join(known)}")
    ranges = tuple(
        parse_range(str(name), spec) for name, spec in _mapping(tuning.get("ranges"), "tuning.ranges").items()
    )
    if not ranges:
        raise ConfigError("tuning.ranges names no hyperparameter")
    objective = _mapping(tuning.get("objective", {}), "tuning.objective")
    if set(objective) - {"metric", "regex", "direction"}:
        raise ConfigError("tuning.objective takes metric, regex and direction")
    defaults = Tuning(ranges=())
    metric = str(objective.get("metric", defaults.objective_metric))
    config = tuning_section(
        ranges=ranges,
        objective_metric=metric,
        # A metric named without a regex is read as the container prints it: `<metric>: <number>`.
        objective_regex=str(objective.get("regex", metrics.regex(metric))),
        direction=_choice(objective.get("direction", defaults.direction), DIRECTIONS, "tuning.objective.direction"),
        strategy=_choice(tuning.get("strategy", defaults.strategy), STRATEGIES, "tuning.strategy"),
        max_jobs=_integer(tuning.get("max_jobs", defaults.max_jobs), "tuning.max_jobs", 1),
        max_parallel_jobs=_integer(tuning.get("max_parallel_jobs", 1), "tuning.max_parallel_jobs", 1),
        early_stopping=_choice(tuning.get("early_stopping", "Off"), EARLY_STOPPING, "tuning.early_stopping"),
        warm_start_from=tuple(str(p) for p in tuning.get("warm_start_from", ()) or ()),
    )
    try:
        groups = re.compile(config.objective_regex).groups
    except re.error as err:
        raise ConfigError(f"tuning.objective.regex is not a regular expression: {err}") from None
    if groups != 1:
        raise ConfigError("tuning.objective.regex must have exactly one group: the number")
    return config


def tuning_section(**fields: Any) -> Tuning:
    try:
        return Tuning(**fields)
    except LauncherError as err:
        raise ConfigError(f"tuning: {err}") from None


def parse_range(name: str, spec: Any) -> ParameterRange:
    """`ContinuousParameter(0.001, 0.1)`-style text as in the SageMaker SDK, or a mapping:
    `{type: continuous, min: 0.001, max: 0.1, scaling: Logarithmic}`, `{type: categorical, values: [32, 64]}`."""
    where = f"tuning.ranges.{name}"
    if isinstance(spec, str):
        spec = _sdk_call(spec, where)
    spec = dict(_mapping(spec, where))
    kind = _choice(spec.pop("type", None), tuple(SDK_RANGE_CLASSES.values()), f"{where}.type")
    scaling = _choice(spec.pop("scaling", "Auto"), SCALINGS, f"{where}.scaling")
    if kind == "categorical":
        values = spec.pop("values", None)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: a categorical range needs a non-empty list of values")
        _no_more(spec, where)
        return ParameterRange(name, kind, values=tuple(values))
    low, high = spec.pop("min", None), spec.pop("max", None)
    _no_more(spec, where)
    low_value, high_value = _number(low, f"{where}.min"), _number(high, f"{where}.max")
    if kind == "integer" and not (float(low_value).is_integer() and float(high_value).is_integer()):
        raise ConfigError(f"{where}: an integer range needs integer min and max")
    if low_value >= high_value:
        raise ConfigError(f"{where}: min ({low_value}) must be below max ({high_value})")
    if scaling in ("Logarithmic", "ReverseLogarithmic") and low_value <= 0:
        raise ConfigError(f"{where}: {scaling} scaling needs min > 0")
    if scaling == "ReverseLogarithmic" and high_value >= 1:
        raise ConfigError(f"{where}: ReverseLogarithmic scaling needs max < 1")
    return ParameterRange(name, kind, low_value, high_value, scaling=scaling)


def _sdk_call(text: str, where: str) -> dict[str, Any]:
    """Parse `ContinuousParameter(0.001, 0.1, scaling_type="Logarithmic")` without evaluating code."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise ValueError
        kind = SDK_RANGE_CLASSES[call.func.id]
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError, KeyError):
        raise ConfigError(
            f"{where}: {text!r} is not ContinuousParameter(min, max), IntegerParameter(min, max) or "
            "CategoricalParameter([values]) (with an optional scaling_type=...)"
        ) from None
    spec: dict[str, Any] = {"type": kind}
    if "scaling_type" in kwargs:
        spec["scaling"] = kwargs.pop("scaling_type")
    names = ["values"] if kind == "categorical" else ["min", "max"]
    spec.update(zip(names, args, strict=False))
    for key, value in kwargs.items():
        spec[{"min_value": "min", "max_value": "max"}.get(key, key)] = value
    return spec


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of names to values, got {value!r}")
    return value


def _no_more(spec: dict[str, Any], where: str) -> None:
    if spec:
        raise ConfigError(f"{where}: unknown keys {', '.join(map(str, spec))}")


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    folded = {c.lower(): c for c in choices}
    if str(value).lower() not in folded:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    return folded[str(value).lower()]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return value


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
