"""The building blocks of the launcher's declared settings (the job config file and the tuning it holds): a strict
mapping that refuses unknown keys, and a case-insensitive choice among names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

Number = int | float


def one_of(*choices: str) -> Any:
    """A string among `choices`, in any case, given back as written there."""
    folded = {choice.lower(): choice for choice in choices}

    def pick(value: Any) -> str:
        if str(value).lower() not in folded:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return folded[str(value).lower()]

    return Annotated[str, BeforeValidator(pick)]


class Section(BaseModel):
    """A mapping of the file: its keys are the fields, typed strictly (no "5" for 5), nothing else."""

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def known_keys(cls, data: Any) -> Any:
        unknown = sorted(map(str, set(data) - set(cls.model_fields))) if isinstance(data, Mapping) else []
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}; known: {', '.join(cls.model_fields)}")
        return data
