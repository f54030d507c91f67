"""`launcher tune`: a job config's tuning section into a run on the chosen backend, and its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.backends.base import Backend
from launcher.records import RecordStore
from launcher.tuning_spec import TuningSpec


def run_tuning(spec: TuningSpec, backend: Backend, workdir: Path, records: RecordStore) -> dict[str, Any]:
    """Tune with the backend (Optuna trials on this machine, or SageMaker's tuner); return the saved record."""
    record = backend.tune(spec, workdir / "tuning" / spec.name)
    records.save("tuning", record)
    return record
