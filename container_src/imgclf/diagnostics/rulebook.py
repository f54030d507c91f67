"""All rules by name, and the job's `rules` hyperparameter: which rules run, with which parameters.

The hyperparameter is a JSON object: `{"Overfit": {"patience": 2}, "StepOutlier": false,
"LossNotDecreasing": {"stop_on": true}}`. Rules not named run with their defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imgclf.diagnostics.profiler_rules import PROFILER_RULES
from imgclf.diagnostics.rule import Rule, RuleConfigError
from imgclf.diagnostics.training_rules import TRAINING_RULES

ALL_RULES: dict[str, type[Rule]] = {rule.name: rule for rule in (*TRAINING_RULES, *PROFILER_RULES)}


def parse_rule_config(value: Any) -> dict[str, Any]:
    """Check a `rules` value (a mapping or its JSON text) by building every rule it configures."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise RuleConfigError(f"rules must be a JSON object, got {value!r} ({err})") from None
    if not isinstance(value, Mapping):
        raise RuleConfigError(f"rules must be a JSON object of rule name -> parameters or false, got {value!r}")
    config = dict(value)
    build_rules(config)
    return config


def build_rules(config: Mapping[str, Any]) -> list[Rule]:
    """Every rule not switched off (`false`), configured from `config`."""
    unknown = sorted(set(config) - set(ALL_RULES))
    if unknown:
        raise RuleConfigError(f"unknown rules {', '.join(unknown)}; known: {', '.join(ALL_RULES)}")
    rules = []
    for name, rule_class in ALL_RULES.items():
        setting = config.get(name, True)
        if setting is False:
            continue
        if setting is True:
            setting = {}
        if not isinstance(setting, Mapping):
            raise RuleConfigError(f"rule {name} must be configured with an object of parameters, true or false")
        rules.append(rule_class(**setting))
    return rules
