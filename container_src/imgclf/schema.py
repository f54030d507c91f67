"""The built-in trainer's hyperparameter schema as JSON, for the launcher to check jobs before they start.

`python -m imgclf.schema FILE` writes it; the launcher ships a copy (`launcher/hyperparameter_schema.json`, kept
equal by a test) and the image keeps one at `SCHEMA_PATH`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from imgclf import contract
from imgclf.hyperparameters import SPECS, Hyperparameters

SCHEMA_PATH = "/opt/imgclf/hyperparameter_schema.json"  # in the image


def schema() -> dict[str, Any]:
    """Every hyperparameter's kind, bounds, choices, default and description, and the keys the platform adds."""
    defaults = Hyperparameters()
    parameters = []
    for name, spec in SPECS.items():
        entry: dict[str, Any] = {"name": name, "kind": spec.kind, "description": spec.description}
        if spec.minimum is not None:
            entry["minimum"] = spec.minimum
        if spec.maximum is not None:
            entry.update(maximum=spec.maximum, maximum_exclusive=spec.open_max)
        if spec.choices:
            entry["choices"] = list(spec.choices)
        if spec.auto is not None:
            entry["auto"] = spec.auto
        parameters.append({**entry, "default": getattr(defaults, name)})
    return {
        "script_mode_hyperparameter": contract.USER_PROGRAM_HYPERPARAMETER,
        "platform_prefixes": list(contract.PLATFORM_HYPERPARAMETER_PREFIXES),
        "hyperparameters": parameters,
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the schema to the file named in `argv` (stdout without one)."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        Path(args[0]).write_text(render())
    else:
        sys.stdout.write(render())


if __name__ == "__main__":
    main()
