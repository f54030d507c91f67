"""The YAML job config: the original project's ranges verbatim, the mapping form, clear errors, and the command
line's job flags as keys of the same model, merged over the file once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from launcher.cli import get_args_parser
from launcher.job_config import ConfigError, job_options, load_job_config, parse_job_config, setting_paths
from launcher.tuning import Range

ORIGINAL = """
data: data/dogs
image: imgclf:latest
hyperparameters: {epochs: 5, model_name: resnet50}
rules: {Overfit: {patience: 2}}
profiler: {interval_ms: 500}
tuning:
  ranges:
    learning_rate: ContinuousParameter(0.001, 0.1)
    batch_size: CategoricalParameter([32, 64, 128, 256, 512])
  objective: {metric: average test loss, direction: Minimize}
  strategy: Bayesian
  max_jobs: 4
  max_parallel_jobs: 2
  early_stopping: Auto
deploy: {workers: 2}
"""


def test_the_original_ranges_are_read_verbatim(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text(ORIGINAL)
    config = load_job_config(path)
    assert config.channels == {"training": str(tmp_path / "data" / "dogs")}  # relative to the file
    assert config.hyperparameters == {
        "epochs": 5,
        "model_name": "resnet50",
        "rules": {"Overfit": {"patience": 2}},
        "profiler_interval_ms": 500,
    }
    assert config.tuning.ranges == {
        "learning_rate": Range(type="continuous", min=0.001, max=0.1),
        "batch_size": Range(type="categorical", values=[32, 64, 128, 256, 512]),
    }
    assert (config.tuning.strategy, config.tuning.max_jobs, config.tuning.early_stopping) == ("Bayesian", 4, "Auto")
    assert config.tuning.objective_regex == r"average test loss: ([0-9.eE+-]+)"


def test_the_mapping_form_and_sdk_keywords():
    config = parse_job_config({"tuning": {"ranges": {
        "learning_rate": {"type": "continuous", "min": 1e-4, "max": 0.1, "scaling": "logarithmic"},
        "epochs": 'IntegerParameter(1, 4, scaling_type="Linear")',
        "momentum": {"type": "continuous", "min": 0.5, "max": 0.99, "scaling": "ReverseLogarithmic"},
    }}})  # fmt: skip
    lr, epochs, momentum = config.tuning.ranges.values()
    assert (lr.type, lr.scaling, lr.min) == ("continuous", "Logarithmic", 1e-4)
    assert (epochs.type, epochs.min, epochs.max, epochs.scaling) == ("integer", 1, 4, "Linear")
    assert momentum.scaling == "ReverseLogarithmic"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"datta": "x"}, "unknown keys datta; known: data, channels"),
        ({"tracking": {"experiment": " "}}, "tracking.experiment: String should have at least 1 character"),
        ({"instance_count": True}, "instance_count: Input should be a valid integer"),
        ({"deploy": {"timeout": 0}}, "deploy.timeout: Input should be greater than 0"),
        ({"tuning": {"ranges": {"lr": {"type": "continuous", "min": 1, "max": float("inf")}}}}, "tuning.ranges.lr.max"),
        ({"tuning": {"ranges": {}}}, "tuning.ranges: Dictionary should have at least 1 item"),
        ({"tuning": {"ranges": {"lr": "ContinuousParameter(0.1, 0.01)"}}}, "min (0.1) must be below max"),
        ({"tuning": {"ranges": {"lr": "__import__('os').system('true')"}}}, "is not ContinuousParameter"),
        (
            {"tuning": {"ranges": {"lr": {"type": "continuous", "min": 0, "max": 1, "scaling": "Logarithmic"}}}},
            "needs min > 0",
        ),
        ({"tuning": {"ranges": {"bs": "CategoricalParameter([])"}}}, "non-empty list"),
        (
            {"tuning": {"ranges": {"lr": "ContinuousParameter(0.001, 0.1)"}, "strategy": "Grid"}},
            "tuning: the Grid strategy searches categorical ranges only (as SageMaker's), and lr is continuous",
        ),
        (
            {"tuning": {"ranges": {"bs": "CategoricalParameter([1])"}, "strategy": "Smart"}},
            "tuning.strategy: must be one of",
        ),
        (
            {"tuning": {"ranges": {"bs": "CategoricalParameter([1])"}, "objective": {"regex": "loss: [0-9.]+"}}},
            "exactly one group",
        ),
        (
            {"tuning": {"ranges": {"bs": "CategoricalParameter([1])"}, "max_jobs": 0}},
            "tuning.max_jobs: Input should be greater than or equal to 1",
        ),
    ],
)
def test_errors_name_the_key(raw: dict, message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_job_config(raw)


def test_a_file_error_names_the_file(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("tuning: {ranges: {lr: 3}}")
    with pytest.raises(ConfigError, match=f"{path}: tuning.ranges.lr must be a mapping"):
        load_job_config(path)
    path.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="cannot read job config"):
        load_job_config(path)


def test_flags_override_the_file_in_one_merge_and_their_errors_name_them(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text(ORIGINAL)
    flags = {"tuning.max_jobs": 7, "hyperparameters": {"epochs": 2}, "data": "/elsewhere", "deploy.workers": 3}
    best = {"hyperparameters": {"learning_rate": 0.5, "epochs": 9}}  # `train --from-tuning`: under the flags
    config = job_options(path, flags, beneath=best)
    assert (config.tuning.max_jobs, config.tuning.strategy, config.tuning.max_parallel_jobs) == (7, "Bayesian", 2)
    assert config.hyperparameters == {
        "epochs": 2,
        "model_name": "resnet50",
        "learning_rate": 0.5,
        "rules": {"Overfit": {"patience": 2}},
        "profiler_interval_ms": 500,
    }
    assert config.channels == {"training": "/elsewhere"}
    assert config.deploy == {"workers": 3}
    with pytest.raises(ConfigError, match=r"job.yaml: --max-jobs \(tuning.max_jobs\): Input should be greater"):
        job_options(path, {"tuning.max_jobs": 0})
    with pytest.raises(ConfigError, match="the Grid strategy searches categorical ranges only"):
        job_options(path, {"tuning.strategy": "Grid"})  # what `launcher tune --strategy Grid` does
    with pytest.raises(ConfigError, match=r"^--workers \(deploy.workers\): Input should be greater"):
        job_options(None, {"deploy.workers": 0})  # `launcher deploy --workers 0`: no file


def test_the_job_flags_are_keys_of_the_job_config():
    """A flag of `train`, `tune` or `run` that sets a job option has its key path as destination; the keys without a
    flag are these, so that a new key of the file gets a flag or a place here."""
    commands = next(a for a in get_args_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    flagged = {action.dest for name in ("train", "tune", "run") for action in commands[name]._actions}
    assert setting_paths() - flagged == {
        "rules",
        "profiler",
        "profiler.interval_ms",
        "tuning",
        "tuning.ranges",
        "tuning.objective",
        "tuning.objective.metric",
        "tuning.objective.regex",
        "tuning.objective.direction",
        "tuning.warm_start_from",
        "deploy",
        "deploy.instance_type",
        "deploy.inference_ami_version",  # the sagemaker backend's option --inference-ami-version
        "tracking",
        "tracking.registered_model",
    }
