"""What every rule is: named parameters with SageMaker's defaults, an evaluation, and a JSON-ready result."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

NO_ISSUES = "NoIssuesFound"
ISSUES = "IssuesFound"
ERROR = "Error"
NOT_APPLICABLE = "NotApplicable"


class RuleConfigError(ValueError):
    """A rule name or parameter in the job's rule configuration is not valid."""


@dataclass
class RuleResult:
    rule: str
    kind: str  # "training" or "profiler"
    status: str
    explanation: str
    parameters: dict[str, Any]
    steps: list[int] = field(default_factory=list)  # where it fired
    recommendation: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # IssuesFound only: the rule fired, but not at the last point it judged (it fired early, and the job
    # recovered); `last_judged` is that point, in the unit of `steps`.
    transient: bool = False
    last_judged: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Rule(ABC):
    """A check over the evidence of one job; `stop_on` rules end the job when they fire during training."""

    name: ClassVar[str]
    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    stop_on_default: ClassVar[bool] = False

    def __init__(self, stop_on: bool | None = None, **parameters: Any):
        unknown = sorted(set(parameters) - set(self.defaults))
        if unknown:
            known = ", ".join([*self.defaults, "stop_on"])
            raise RuleConfigError(f"rule {self.name} has no parameter {', '.join(unknown)}; it takes {known}")
        self.parameters = {key: _coerce(self.name, key, self.defaults[key], parameters.get(key, value))
                           for key, value in self.defaults.items()}  # fmt: skip
        self.stop_on = self.stop_on_default if stop_on is None else bool(stop_on)

    @abstractmethod
    def evaluate(self, evidence: Any) -> RuleResult:
        """Judge the evidence gathered so far."""

    def result(
        self,
        status: str,
        explanation: str,
        steps: Iterable[int] = (),
        recommendation: str | None = None,
        **details: Any,
    ) -> RuleResult:
        return RuleResult(self.name, self.kind, status, explanation, dict(self.parameters), sorted(set(steps)),
                          recommendation, details)  # fmt: skip

    def fired(
        self,
        explanation: str,
        steps: Iterable[int] = (),
        recommendation: str | None = None,
        *,
        last_judged: int | None = None,
        **details: Any,
    ) -> RuleResult:
        """IssuesFound at `steps`. With `last_judged` (the last point the rule judged, in the unit of `steps`), a
        rule that did not fire there is marked transient, and its explanation says so."""
        result = self.result(ISSUES, explanation, steps, recommendation, **details)
        if last_judged is not None and result.steps and result.steps[-1] < last_judged:
            result.transient, result.last_judged = True, last_judged
            result.explanation += f"; transient: fired last at step {result.steps[-1]}, not at the end ({last_judged})"
        return result

    def passed(self, explanation: str, **details: Any) -> RuleResult:
        return self.result(NO_ISSUES, explanation, **details)

    def not_applicable(self, reason: str, **details: Any) -> RuleResult:
        """The evidence does not allow a judgement; `reason` says what is missing."""
        return self.result(NOT_APPLICABLE, reason, **details)


def _coerce(rule: str, key: str, default: Any, value: Any) -> Any:
    """A parameter value of the default's type, or a clear error."""
    if value is None or default is None:
        return value
    kind = type(default)
    try:
        if kind is bool:
            if str(value).lower() not in ("true", "false"):
                raise ValueError(value)
            return str(value).lower() == "true"
        if isinstance(value, bool):
            raise ValueError(value)
        converted = kind(value)
        if kind is int and float(value) != converted:
            raise ValueError(value)
        return converted
    except (TypeError, ValueError):
        raise RuleConfigError(f"rule {rule} parameter {key} must be a {kind.__name__}, got {value!r}") from None
