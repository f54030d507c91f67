"""The built-in trainer's hyperparameters: the contract's checks (`imgclf_contract.hyperparameters`, which the
launcher applies too before any job starts), then the image's rule book on the `rules` value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgclf.diagnostics.rule import RuleConfigError
from imgclf.diagnostics.rulebook import parse_rule_config
from imgclf_contract.errors import HyperparameterError
from imgclf_contract.hyperparameters import Hyperparameters


def parse(values: Mapping[str, Any]) -> Hyperparameters:
    """Validated hyperparameters; HyperparameterError names the bad value and what is accepted."""
    hps = Hyperparameters.from_mapping(values)
    try:
        parse_rule_config(hps.rules)  # builds every configured rule once: unknown names and parameters fail here
    except RuleConfigError as err:
        raise HyperparameterError(f"hyperparameter 'rules': {err}") from None
    return hps
