"""What a tuning run is, whichever backend runs it: the ranges, the objective and the budget (`Tuning`, declared once
as a job config's `tuning` section writes it), plus the run's name and the training job every trial runs
(`TuningSpec`)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, InstanceOf, model_validator

from imgclf_contract import metrics
from launcher.records import TuningRun
from launcher.schema import Number, Section, one_of
from launcher.specs import TrainingSpec

SDK_RANGE_CLASSES = {  # the SageMaker SDK's range classes -> a range's type
    "ContinuousParameter": "continuous",
    "IntegerParameter": "integer",
    "CategoricalParameter": "categorical",
}
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
DIRECTIONS = ("Minimize", "Maximize")
EARLY_STOPPING = ("Off", "Auto")


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
    """One tuned hyperparameter, as SageMaker's ContinuousParameter / IntegerParameter / CategoricalParameter:
    `{type: continuous, min: 0.001, max: 0.1, scaling: Logarithmic}`, `{type: categorical, values: [32, 64]}`."""

    type: one_of(*SDK_RANGE_CLASSES.values())
    min: Number | None = None  # continuous and integer
    max: Number | None = None
    values: list[Any] | None = None  # categorical
    scaling: one_of(*SCALINGS) = "Auto"

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

    def describe(self) -> str | list[Any]:
        """As a tracking run's param shows it."""
        if self.type == "categorical":
            return list(self.values or ())
        return f"{self.type} [{self.min}, {self.max}] {self.scaling}"


class Objective(Section):
    metric: str = metrics.DEFAULT_OBJECTIVE
    regex: str | None = None  # default: the metric as the container prints it, `<metric>: <number>`
    direction: one_of(*DIRECTIONS) = "Minimize"

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


class Tuning(Section):
    """The tuning itself, as a job config's `tuning` section writes it; refuses what no backend can run, whoever
    builds it (a config file, the command line)."""

    ranges: Annotated[dict[str, Annotated[Range, BeforeValidator(sdk_call)]], Field(min_length=1)]
    objective: Objective = Objective()
    strategy: one_of(*STRATEGIES) = "Bayesian"
    max_jobs: Annotated[int, Field(ge=1)] = 10
    max_parallel_jobs: Annotated[int, Field(ge=1)] = 1
    early_stopping: one_of(*EARLY_STOPPING) = "Off"
    warm_start_from: list[str] = Field(default_factory=list)  # earlier tuning jobs whose results seed this one

    @model_validator(mode="after")
    def grid_of_categories(self) -> Tuning:
        if self.strategy == "Grid":
            for name, r in self.ranges.items():
                if r.type != "categorical":
                    raise ValueError(
                        f"the Grid strategy searches categorical ranges only (as SageMaker's), and {name} is {r.type}"
                    )
        return self

    @property
    def objective_metric(self) -> str:
        return self.objective.metric

    @property
    def objective_regex(self) -> str:
        return self.objective.pattern

    @property
    def direction(self) -> str:
        return self.objective.direction


class TuningSpec(Tuning):
    """A `Tuning` run as `name`, each trial a copy of `training` with the tuned hyperparameters."""

    name: str  # the tuning job's name; its trials are <name>-001, <name>-002, ...
    training: InstanceOf[TrainingSpec]  # image, channels, instance, fixed hyperparameters of every trial

    @classmethod
    def of(cls, tuning: Tuning, name: str, training: TrainingSpec) -> TuningSpec:
        return cls(**dict(tuning), name=name, training=training)

    def tracked_params(self) -> dict[str, object]:
        """What the tuning run's MLflow run shows as params: objective, strategy, budget, ranges, fixed values."""
        return {
            "objective": f"{self.direction} {self.objective_metric}",
            "strategy": self.strategy,
            "max_jobs": self.max_jobs,
            "max_parallel_jobs": self.max_parallel_jobs,
            "early_stopping": self.early_stopping,
            **{f"range.{name}": r.describe() for name, r in self.ranges.items()},
            **self.training.hyperparameters,
        }

    def record(self, backend: str, **fields: object) -> TuningRun:
        """The run's record as it starts: the tuning's settings the record keeps, the trials' image, instance and
        channels; `fields`: what the backend adds."""
        kept = {f.name for f in dataclasses.fields(TuningRun)} & {"objective_metric", "direction", *Tuning.model_fields}
        return TuningRun(
            name=self.name,
            backend=backend,
            **{name: copy.copy(getattr(self, name)) for name in kept},
            image=self.training.image,
            instance_type=self.training.instance_type,
            channels=dict(self.training.channels),
            **fields,
        )
