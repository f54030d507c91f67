"""`launcher tune`: a job config's tuning section into a run on the chosen backend, and its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.backends.base import Backend, TrainingSpec
from launcher.errors import LauncherError
from launcher.job_config import TuningConfig
from launcher.local_tuning import LocalTuner
from launcher.records import RecordStore
from launcher.tuning_spec import TuningSpec

LOCAL_TUNING_BACKENDS = ("process", "local")  # the backends whose trials Optuna runs on this machine


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
    """Tune on SageMaker, or here with Optuna (trials as processes, or as SageMaker local-mode jobs in Docker);
    return the saved tuning record."""
    if backend.name == "sagemaker":
        from launcher.sagemaker_tuning import tune_on_sagemaker

        return tune_on_sagemaker(spec, records, workdir / "tuning" / spec.name)
    if backend.name not in LOCAL_TUNING_BACKENDS:
        raise LauncherError(
            f"the {backend.name} backend cannot tune: use --backend process (trials as processes here), local "
            "(trials in Docker through SageMaker local mode) or sagemaker"
        )
    record = {"backend": backend.name, **LocalTuner(spec, backend, workdir / "tuning" / spec.name).run()}
    records.save("tuning", record)
    return record
