"""The YAML job config: the original project's ranges verbatim, the mapping form, and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from launcher.errors import LauncherError
from launcher.job_config import ConfigError, load_job_config, parse_job_config
from launcher.tuning.spec import ParameterRange

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
    assert config.tuning.ranges == (
        ParameterRange("learning_rate", "continuous", 0.001, 0.1),
        ParameterRange("batch_size", "categorical", values=(32, 64, 128, 256, 512)),
    )
    assert (config.tuning.strategy, config.tuning.max_jobs, config.tuning.early_stopping) == ("Bayesian", 4, "Auto")
    assert config.tuning.objective_regex == r"average test loss: ([0-9.eE+-]+)"


def test_the_mapping_form_and_sdk_keywords():
    config = parse_job_config({"tuning": {"ranges": {
        "learning_rate": {"type": "continuous", "min": 1e-4, "max": 0.1, "scaling": "logarithmic"},
        "epochs": 'IntegerParameter(1, 4, scaling_type="Linear")',
        "momentum": {"type": "continuous", "min": 0.5, "max": 0.99, "scaling": "ReverseLogarithmic"},
    }}})  # fmt: skip
    lr, epochs, momentum = config.tuning.ranges
    assert (lr.kind, lr.scaling, lr.min_value) == ("continuous", "Logarithmic", 1e-4)
    assert (epochs.kind, epochs.min_value, epochs.max_value, epochs.scaling) == ("integer", 1, 4, "Linear")
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


def test_a_command_line_override_is_checked_as_the_config_is():
    config = parse_job_config({"tuning": {"ranges": {"lr": "ContinuousParameter(0.001, 0.1)"}}})
    with pytest.raises(LauncherError, match="the Grid strategy searches categorical ranges only"):
        dataclasses.replace(config.tuning, strategy="Grid")  # what `launcher tune --strategy Grid` does
