"""`launcher tune`: a job config's tuning section into a run on the chosen backend, and its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.backends.base import Backend, TrainingSpec
from launcher.job_config import TuningConfig
from launcher.records import RecordStore
from launcher.tuning_spec import TuningSpec


def tuning_spec(name: str, training: TrainingSpec, config: TuningConfig) -> TuningSpec:
    return TuningSpec(
        name=name,
        training=training,
        ranges=config.ranges,
        objective_metric=config.objective_metric,
        objective_regex=config.objective_regex,
        direction=config.direction,
        strategy=config.strategy,
        max_jobs=config.max_jobs,
        max_parallel_jobs=config.max_parallel_jobs,
        early_stopping=config.early_stopping,
        warm_start_from=config.warm_start_from,
    )


def run_tuning(spec: TuningSpec, backend: Backend, workdir: Path, records: RecordStore) -> dict[str, Any]:
    """Tune with the backend (Optuna trials on this machine, or SageMaker's tuner); return the saved record."""
    record = backend.tune(spec, workdir / "tuning" / spec.name)
    records.save("tuning", record)
    return record
