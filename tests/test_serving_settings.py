"""The endpoint's settings from its environment: defaults, and a clear error naming a variable it cannot use."""

from __future__ import annotations

import pytest

from imgclf.serving.settings import ServingSettings, SettingsError


def settings(**environ: str) -> ServingSettings:
    return ServingSettings.from_environ(gpus=0, cores=2, environ=environ)


def test_defaults_without_a_gpu():
    chosen = settings()
    assert (chosen.port, chosen.workers, chosen.threads_per_worker) == (8080, 1, 2)
    assert (chosen.max_batch_size, chosen.max_batch_delay_ms, chosen.errors_as_records) == (8, 10, False)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("yes", True), ("false", False),
                                               ("0", False), ("", False)])  # fmt: skip
def test_errors_as_records_is_a_yes_or_no(raw: str, expected: bool):
    assert settings(IMGCLF_ERRORS_AS_RECORDS=raw).errors_as_records is expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("IMGCLF_ERRORS_AS_RECORDS", "maybe", "is not a yes or no"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "two", "is not a whole number"),
        ("IMGCLF_MAX_BATCH_SIZE", "0", "out of range: use at least 1"),
        ("SAGEMAKER_SAFE_PORT_RANGE", "29000", "is not a range like 29000-29999"),
    ],
)
def test_a_value_it_cannot_use_is_named(name: str, raw: str, message: str):
    with pytest.raises(SettingsError, match=f"{name}=.*{message}"):
        settings(**{name: raw})
