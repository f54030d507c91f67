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

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import Field, StringConstraints, ValidationError

from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.schema import Number, Section
from launcher.tuning import Tuning


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


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


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
    channels: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    instance_type: str | None = None
    instance_count: Annotated[int, Field(ge=1)] | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    rules: dict[str, Any] | None = None
    profiler: Profiler = Profiler()
    tuning: Tuning | None = None
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
        tuning=config.tuning,
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
