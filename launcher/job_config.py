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

The file's layout is a tree of pydantic models (`ConfigFile`): types, bounds and unknown keys are checked there,
and each error names its key.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from imgclf_contract import metrics
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.tuning import DIRECTIONS, EARLY_STOPPING, SCALINGS, STRATEGIES, ParameterRange, Tuning

SDK_RANGE_CLASSES = {
    "ContinuousParameter": "continuous",
    "IntegerParameter": "integer",
    "CategoricalParameter": "categorical",
}


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


def one_of(*choices: str) -> Any:
    """A string among `choices`, in any case, given back as written there."""
    folded = {choice.lower(): choice for choice in choices}

    def pick(value: Any) -> str:
        if str(value).lower() not in folded:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return folded[str(value).lower()]

    return Annotated[str, BeforeValidator(pick)]


Number = int | float
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
RangeKind, Scaling = one_of(*SDK_RANGE_CLASSES.values()), one_of(*SCALINGS)
Direction, Strategy, EarlyStopping = one_of(*DIRECTIONS), one_of(*STRATEGIES), one_of(*EARLY_STOPPING)


class Section(BaseModel):
    """A mapping of the file: its keys are the fields, typed strictly (no "5" for 5), nothing else."""

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def known_keys(cls, data: Any) -> Any:
        unknown = sorted(map(str, set(data) - set(cls.model_fields))) if isinstance(data, Mapping) else []
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}; known: {', '.join(cls.model_fields)}")
        return data


def sdk_call(text: Any) -> Any:
    """`ContinuousParameter(0.001, 0.1, scaling_type="Logarithmic")` as the mapping form, parsed without running
    code; anything but a string is left as it is."""
    if not isinstance(text, str):
        return text
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise ValueError
        kind = SDK_RANGE_CLASSES[call.func.id]
        args = [ast.literal_eval(arg) for arg in call.args]
        keywords = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError, KeyError):
        raise ValueError(
            f"{text!r} is not ContinuousParameter(min, max), IntegerParameter(min, max) or "
            "CategoricalParameter([values]) (with an optional scaling_type=...)"
        ) from None
    names = ["values"] if kind == "categorical" else ["min", "max"]
    spec: dict[str, Any] = {"type": kind, **dict(zip(names, args, strict=False))}
    for key, value in keywords.items():
        spec[{"min_value": "min", "max_value": "max", "scaling_type": "scaling"}.get(key, key)] = value
    return spec


class Range(Section):
    """`{type: continuous, min: 0.001, max: 0.1, scaling: Logarithmic}`, `{type: categorical, values: [32, 64]}`."""

    type: RangeKind
    min: Number | None = None
    max: Number | None = None
    values: list[Any] | None = None
    scaling: Scaling = "Auto"

    @model_validator(mode="after")
    def consistent(self) -> Range:
        if self.type == "categorical":
            if not self.values or self.min is not None or self.max is not None:
                raise ValueError("a categorical range needs a non-empty list of values, and no min or max")
            return self
        low, high = self.min, self.max
        if low is None or high is None or self.values is not None:
            raise ValueError(f"a {self.type} range needs min and max, and no values")
        if self.type == "integer" and not (float(low).is_integer() and float(high).is_integer()):
            raise ValueError("an integer range needs integer min and max")
        if low >= high:
            raise ValueError(f"min ({low}) must be below max ({high})")
        if self.scaling in ("Logarithmic", "ReverseLogarithmic") and low <= 0:
            raise ValueError(f"{self.scaling} scaling needs min > 0")
        if self.scaling == "ReverseLogarithmic" and high >= 1:
            raise ValueError("ReverseLogarithmic scaling needs max < 1")
        return self

    def parameter_range(self, name: str) -> ParameterRange:
        if self.type == "categorical":
            return ParameterRange(name, self.type, values=tuple(self.values or ()))
        return ParameterRange(name, self.type, self.min, self.max, scaling=self.scaling)


class Objective(Section):
    metric: str = metrics.DEFAULT_OBJECTIVE
    regex: str | None = None  # default: the metric as the container prints it, `<metric>: <number>`
    direction: Direction = "Minimize"

    @model_validator(mode="after")
    def one_group(self) -> Objective:
        try:
            groups = re.compile(self.pattern).groups
        except re.error as err:
            raise ValueError(f"regex is not a regular expression: {err}") from None
        if groups != 1:
            raise ValueError("regex must have exactly one group: the number")
        return self

    @property
    def pattern(self) -> str:
        return metrics.regex(self.metric) if self.regex is None else self.regex


class TuningSection(Section):
    ranges: Annotated[dict[str, Annotated[Range, BeforeValidator(sdk_call)]], Field(min_length=1)]
    objective: Objective = Objective()
    strategy: Strategy = "Bayesian"
    max_jobs: Annotated[int, Field(ge=1)] = 10
    max_parallel_jobs: Annotated[int, Field(ge=1)] = 1
    early_stopping: EarlyStopping = "Off"
    warm_start_from: list[str] = []

    def tuning(self) -> Tuning:
        try:
            return Tuning(
                ranges=tuple(spec.parameter_range(name) for name, spec in self.ranges.items()),
                objective_metric=self.objective.metric,
                objective_regex=self.objective.pattern,
                direction=self.objective.direction,
                strategy=self.strategy,
                max_jobs=self.max_jobs,
                max_parallel_jobs=self.max_parallel_jobs,
                early_stopping=self.early_stopping,
                warm_start_from=tuple(self.warm_start_from),
            )
        except LauncherError as err:
            raise ConfigError(f"tuning: {err}") from None


class Profiler(Section):
    interval_ms: Annotated[int, Field(ge=0)] | None = None


class Deploy(Section):
    """As `launcher deploy` takes them."""

    instance_type: str | None = None
    workers: Annotated[int, Field(ge=1)] | None = None
    timeout: Annotated[Number, Field(gt=0)] | None = None  # seconds
    inference_ami_version: str | None = None


class Tracking(Section):
    """The MLflow names (default: the file's name)."""

    experiment: Name | None = None
    registered_model: Name | None = None


class ConfigFile(Section):
    data: str | None = None  # the "training" channel
    channels: dict[str, str] = {}
    image: str | None = None
    instance_type: str | None = None
    instance_count: Annotated[int, Field(ge=1)] | None = None
    hyperparameters: dict[str, Any] = {}
    rules: dict[str, Any] | None = None
    profiler: Profiler = Profiler()
    tuning: TuningSection | None = None
    deploy: Deploy = Deploy()
    output: str | None = None
    tracking: Tracking = Tracking()


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
    try:
        config = ConfigFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("; ".join(map(explain, err.errors(include_url=False)))) from None
    hyperparameters = dict(config.hyperparameters)
    if config.rules is not None:
        hyperparameters["rules"] = config.rules
    if config.profiler.interval_ms is not None:
        hyperparameters["profiler_interval_ms"] = config.profiler.interval_ms
    return JobConfig(
        channels={**config.channels, **({"training": config.data} if config.data is not None else {})},
        image=config.image,
        instance_type=config.instance_type,
        instance_count=config.instance_count,
        output=config.output,
        hyperparameters=hyperparameters,
        tuning=config.tuning.tuning() if config.tuning else None,
        deploy=config.deploy.model_dump(exclude_none=True),
        tracking=config.tracking.model_dump(exclude_none=True),
    )


def explain(error: Mapping[str, Any]) -> str:
    """One of pydantic's errors in the file's words: the key's path, then what is wrong with it."""
    where = ".".join(str(part) for part in error["loc"]) or "the file"
    if error["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where} must be a mapping of names to values, got {error['input']!r}"
    problem = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    return f"{where}: {problem}"
