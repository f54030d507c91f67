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
and each error names its key. It is also the layout of the command line's job flags: a flag whose destination is a
key path (`--max-jobs` sets `tuning.max_jobs`) overrides the file in one merge (`job_options`), and the merged
whole is validated as the file is, so a flag's error is the file's error, naming the flag.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args

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
    metric: str = Tuning.objective_metric
    regex: str | None = None  # default: the metric as the container prints it, `<metric>: <number>`
    direction: Direction = Tuning.direction

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
    """A `Tuning` as the file writes it (ranges by name, the objective as a mapping); its defaults are Tuning's."""

    ranges: Annotated[dict[str, Annotated[Range, BeforeValidator(sdk_call)]], Field(min_length=1)]
    objective: Objective = Objective()
    strategy: Strategy = Tuning.strategy
    max_jobs: Annotated[int, Field(ge=1)] = Tuning.max_jobs
    max_parallel_jobs: Annotated[int, Field(ge=1)] = Tuning.max_parallel_jobs
    early_stopping: EarlyStopping = Tuning.early_stopping
    warm_start_from: list[str] = list(Tuning.warm_start_from)

    def tuning(self) -> Tuning:
        same = {name: getattr(self, name) for name in self.model_fields if name not in ("ranges", "objective")}
        same["warm_start_from"] = tuple(self.warm_start_from)
        try:
            return Tuning(
                ranges=tuple(spec.parameter_range(name) for name, spec in self.ranges.items()),
                objective_metric=self.objective.metric,
                objective_regex=self.objective.pattern,
                direction=self.objective.direction,
                **same,
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


def setting_paths(model: type[Section] = ConfigFile, prefix: str = "") -> set[str]:
    """Every key path of the file: `image`, `tuning`, `tuning.max_jobs`, ..."""
    paths = set()
    for name, declared in model.model_fields.items():
        paths.add(prefix + name)
        for inner in (declared.annotation, *get_args(declared.annotation)):
            if isinstance(inner, type) and issubclass(inner, Section):
                paths |= setting_paths(inner, f"{prefix}{name}.")
    return paths


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`: mappings merged key by key, anything else replaced."""
    result = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(result.get(key), Mapping)
        result[key] = merged(result[key], value) if both else value
    return result


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"tuning.max_jobs": 3}` as `{"tuning": {"max_jobs": 3}}`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, key = path.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    return tree


def read_file(path: Path) -> dict[str, Any]:
    """The file's mapping, its local data paths made absolute (they are relative to the file's folder)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read job config {path}: {err}") from err
    if not isinstance(raw, Mapping):
        return raw

    def local(source: Any) -> Any:
        on_host = isinstance(source, str) and not source.startswith(S3_SCHEME)
        return str((path.parent / source).resolve()) if on_host else source

    found = dict(raw)
    if "data" in found:
        found["data"] = local(found["data"])
    if isinstance(found.get("channels"), Mapping):
        found["channels"] = {name: local(source) for name, source in found["channels"].items()}
    return found


def job_options(
    path: Path | None, flags: Mapping[str, Any] | None = None, beneath: Mapping[str, Any] | None = None
) -> JobConfig:
    """The job's options: the file at `path` (if any), `beneath` laid over it (a tuning run's best hyperparameters),
    then `flags` (values by key path, `tuning.max_jobs`), validated as one. Every error names the file's key, or the
    flag that set it."""
    flags = flags or {}
    raw = merged(merged(read_file(path) if path else {}, beneath or {}), nested(flags))
    try:
        return parse_job_config(raw, {key: "--" + key.rsplit(".", 1)[-1].replace("_", "-") for key in flags})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def load_job_config(path: Path) -> JobConfig:
    """Read and validate a job config; every error names the file and the offending key. Local data paths are
    relative to the file's folder."""
    return job_options(path)


def parse_job_config(raw: Any, flags: Mapping[str, str] | None = None) -> JobConfig:
    """`flags`: the key paths the command line set, and the flags that set them, for the errors."""
    try:
        config = ConfigFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("; ".join(explain(e, flags or {}) for e in err.errors(include_url=False))) from None
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


def explain(error: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    """One of pydantic's errors in the file's words: the key's path (or the flag that set it), then what is wrong."""
    where = ".".join(str(part) for part in error["loc"]) or "the file"
    where = f"{flags[where]} ({where})" if where in flags else where
    if error["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where} must be a mapping of names to values, got {error['input']!r}"
    problem = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    return f"{where}: {problem}"
