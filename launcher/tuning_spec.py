"""What a tuning run is, whichever backend runs it: the ranges, the objective and the budget."""

from __future__ import annotations

from dataclasses import dataclass

from launcher import metrics
from launcher.backends.base import TrainingSpec

SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
DIRECTIONS = ("Minimize", "Maximize")
EARLY_STOPPING = ("Off", "Auto")


@dataclass(frozen=True)
class ParameterRange:
    """One tuned hyperparameter, as SageMaker's ContinuousParameter / IntegerParameter / CategoricalParameter."""

    name: str
    kind: str  # "continuous", "integer" or "categorical"
    min_value: float | None = None  # continuous and integer
    max_value: float | None = None
    values: tuple[str | int | float, ...] = ()  # categorical
    scaling: str = "Auto"  # one of SCALINGS


@dataclass(frozen=True)
class TuningSpec:
    name: str  # the tuning job's name; its trials are <name>-001, <name>-002, ...
    training: TrainingSpec  # image, channels, instance, fixed hyperparameters of every trial
    ranges: tuple[ParameterRange, ...]
    objective_metric: str = metrics.DEFAULT_OBJECTIVE
    objective_regex: str = metrics.DEFAULT_OBJECTIVE_REGEX
    direction: str = "Minimize"  # one of DIRECTIONS
    strategy: str = "Bayesian"  # one of STRATEGIES
    max_jobs: int = 10
    max_parallel_jobs: int = 1
    early_stopping: str = "Off"  # one of EARLY_STOPPING
    warm_start_from: tuple[str, ...] = ()  # earlier tuning jobs whose results seed this one
