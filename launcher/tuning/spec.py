"""What a tuning run is, whichever backend runs it: the ranges, the objective and the budget (`Tuning`, what a job
config's `tuning` section says), plus the run's name and the training job every trial runs (`TuningSpec`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from imgclf_contract import metrics
from launcher.errors import LauncherError
from launcher.records import TuningRun
from launcher.specs import TrainingSpec

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
class Tuning:
    """The tuning itself; refuses what no backend can run, whoever builds it (a config file, the command line)."""

    ranges: tuple[ParameterRange, ...]
    objective_metric: str = metrics.DEFAULT_OBJECTIVE
    objective_regex: str = metrics.DEFAULT_OBJECTIVE_REGEX
    direction: str = "Minimize"  # one of DIRECTIONS
    strategy: str = "Bayesian"  # one of STRATEGIES
    max_jobs: int = 10
    max_parallel_jobs: int = 1
    early_stopping: str = "Off"  # one of EARLY_STOPPING
    warm_start_from: tuple[str, ...] = ()  # earlier tuning jobs whose results seed this one

    def __post_init__(self) -> None:
        if self.strategy == "Grid":
            for r in self.ranges:
                if r.kind != "categorical":
                    raise LauncherError(
                        f"the Grid strategy searches categorical ranges only (as SageMaker's), and {r.name} is {r.kind}"
                    )


@dataclass(frozen=True, kw_only=True)
class TuningSpec(Tuning):
    name: str  # the tuning job's name; its trials are <name>-001, <name>-002, ...
    training: TrainingSpec  # image, channels, instance, fixed hyperparameters of every trial

    @classmethod
    def of(cls, tuning: Tuning, name: str, training: TrainingSpec) -> TuningSpec:
        """`tuning` run as `name`, each trial a copy of `training` with the tuned hyperparameters."""
        fields = {field.name: getattr(tuning, field.name) for field in dataclasses.fields(Tuning)}
        return cls(name=name, training=training, **fields)

    def tracked_params(self) -> dict[str, object]:
        """What the tuning run's MLflow run shows as params: objective, strategy, budget, ranges, fixed values."""
        ranges = {
            f"range.{r.name}": list(r.values)
            if r.kind == "categorical"
            else f"{r.kind} [{r.min_value}, {r.max_value}] {r.scaling}"
            for r in self.ranges
        }
        return {
            "objective": f"{self.direction} {self.objective_metric}",
            "strategy": self.strategy,
            "max_jobs": self.max_jobs,
            "max_parallel_jobs": self.max_parallel_jobs,
            "early_stopping": self.early_stopping,
            **ranges,
            **self.training.hyperparameters,
        }

    def record(self, backend: str, **fields: object) -> TuningRun:
        """The run's record as it starts: the tuning's settings the record keeps, the trials' image, instance and
        channels; `fields`: what the backend adds."""
        kept = {f.name for f in dataclasses.fields(Tuning)} & {f.name for f in dataclasses.fields(TuningRun)}
        settings = {name: getattr(self, name) for name in kept}
        return TuningRun(
            name=self.name,
            backend=backend,
            **{**settings, "warm_start_from": list(self.warm_start_from)},
            image=self.training.image,
            instance_type=self.training.instance_type,
            channels=dict(self.training.channels),
            **fields,
        )
