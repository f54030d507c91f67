"""The launcher's copy of the image's hyperparameter schema against the container package it comes from: the file
is what `python -m imgclf.schema` writes today, and the launcher's checks refuse exactly the values the container
refuses, with the container's message. Covered: every hyperparameter with good and bad values; not covered: the
`rules` hyperparameter's contents (the rule book is the image's; it checks them as the job starts)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from imgclf import schema as image_schema
from imgclf.hyperparameters import SPECS, HyperparameterError, Hyperparameters
from launcher import preflight

SHIPPED = resources.files("launcher").joinpath(preflight.SCHEMA_FILE)

# Spellings that some hyperparameter accepts and another refuses, of every JSON type the container may decode.
VALUES = ["abc", "", "auto", "AUTO", "none", "true", "Yes", "0", "1", "-1", "2.5", "nan", "inf", 0, 1, -1, 31, 32,
          0.0, 0.5, 1.0, 1e-4, -0.1, 12.5, True, False, None, [1], "resnet50", "ResNet50", "adamw", "bf16"]  # fmt: skip


def container_message(name: str, value: object) -> str | None:
    try:
        Hyperparameters.from_mapping({name: value})
    except HyperparameterError as err:
        return str(err)
    return None


def test_shipped_schema_is_what_the_container_package_writes():
    assert SHIPPED.read_text() == image_schema.render(), "run `make schema`, commit launcher/hyperparameter_schema.json"


def test_schema_names_every_hyperparameter_with_its_default():
    entries = json.loads(SHIPPED.read_text())["hyperparameters"]
    assert [e["name"] for e in entries] == list(SPECS)
    assert {e["name"]: e["default"] for e in entries} == {name: getattr(Hyperparameters(), name) for name in SPECS}


@pytest.mark.parametrize("name", [name for name, spec in SPECS.items() if spec.kind != "rules"])
def test_launcher_refuses_what_the_container_refuses_in_its_words(name: str):
    entry = preflight.shipped_schema().parameters[name]
    for value in VALUES:
        assert preflight.value_problem(entry, value) == container_message(name, value), value


def test_a_changed_spec_is_caught(monkeypatch: pytest.MonkeyPatch):
    """The drift test itself can fail: a bound changed in the container alone no longer matches the file."""
    monkeypatch.setitem(SPECS, "batch_size", SPECS["batch_size"].__class__("integer", "images", minimum=2))
    assert SHIPPED.read_text() != image_schema.render()
    assert preflight.value_problem(preflight.shipped_schema().parameters["batch_size"], 1) != container_message(
        "batch_size", 1
    )
