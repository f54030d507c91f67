"""Backends by name; each is a small class behind `launcher.backends.base.Backend`."""

from __future__ import annotations

from pathlib import Path

from launcher.backends.base import Backend
from launcher.backends.local import LocalBackend
from launcher.backends.process import ProcessBackend
from launcher.backends.sagemaker.backend import SageMakerBackend
from launcher.records import RecordStore
from launcher.tracking import Tracker

BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (ProcessBackend, LocalBackend, SageMakerBackend)
}
DEFAULT_BACKEND = ProcessBackend.name


def get_backend(name: str, workdir: Path, records: RecordStore, tracker: Tracker | None = None) -> Backend:
    return BACKENDS[name](workdir, records, tracker)
