"""What the launcher ran, as typed records: one JSON file each, `<workdir>/records/<kind>/<name>.json`.

Every record carries `schema`, the version of the layout it was written in. Version 0 is the layout written
before records carried a version; it loads as it is, and fields a version does not know are kept in `extra` and
written back unchanged, so an older or newer launcher's work folder keeps working.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from launcher.errors import LauncherError

SCHEMA_VERSION = 1


def unique_name(prefix: str) -> str:
    """SageMaker-style name: prefix, UTC timestamp to the millisecond, and a short random suffix."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


@dataclass(kw_only=True)
class Record:
    """What every record has: a name unique within its kind, the backend that ran it, and how it went."""

    kind: ClassVar[str]  # the records folder it lives in
    noun: ClassVar[str]  # what it is called in messages

    name: str
    backend: str
    status: str = "InProgress"  # SageMaker's words: InProgress, Completed, Failed, Stopped; endpoints their own
    created: float = field(default_factory=time.time)
    ended: float | None = None
    failure_reason: str | None = None
    region: str | None = None  # sagemaker backend: where it ran
    lineage: dict[str, Any] | None = None  # what produced it (launcher.lineage)
    mlflow_run: str | None = None  # its MLflow run (launcher.tracking); an endpoint: the run of the job it serves
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know, kept as they were

    def to_json(self) -> dict[str, Any]:
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {"schema": SCHEMA_VERSION, **self.extra, **known}

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        version = data.get("schema", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise LauncherError(
                f"{cls.noun} {data.get('name')!r} was recorded in layout {version!r}, newer than this launcher's "
                f"{SCHEMA_VERSION}: update the launcher to read it"
            )
        data = cls.upgrade(dict(data), version)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = {k: v for k, v in data.items() if k not in names and k != "schema"}
        return cls(**{k: v for k, v in data.items() if k in names}, extra=unknown)

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """An older layout's fields in today's layout."""
        return data


@dataclass(kw_only=True)
class TrainingJob(Record):
    kind = "jobs"
    noun = "training job"

    hyperparameters: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)  # channel -> the folder, file or s3:// URI it read
    image: str | None = None  # None: the process backend runs this checkout's container code, no image
    instance_type: str | None = None
    instance_count: int = 1
    model_data: str | None = None  # its model.tar.gz (a path here, or an s3:// URI)
    output_data: str | None = None  # its output.tar.gz: metrics, rule and profiler report
    test_metrics: dict[str, float] | None = None  # {"accuracy": ..., "loss": ...} once it completed
    log: str | None = None  # process and local backends: the job's log on this machine
    job_dir: str | None = None  # process backend: its /opt/ml folder
    role: str | None = None  # sagemaker backend: the IAM role it ran as
    sagemaker_debugger: bool = False
    max_run: int | None = None
    spot: dict[str, Any] | None = None  # managed spot training's max_wait and checkpoint_s3_uri
    tuning_job: str | None = None  # a SageMaker tuning job's trial: the tuning job
    model_version: str | None = None  # its model in MLflow's registry: models:/NAME/VERSION


@dataclass(kw_only=True)
class Endpoint(Record):
    kind = "endpoints"
    noun = "endpoint"

    status: str = "Creating"
    image: str | None = None
    model_data: str | None = None
    job_name: str | None = None  # the training job whose model it serves, if known
    instance_type: str | None = None
    url: str | None = None  # process and local backends: where it answers (its router)
    port: int | None = None
    pid: int | None = None  # the model server's process group
    router_pid: int | None = None  # process and local backends: the router's process group (launcher.router)
    upstream: str | None = None  # the model server's own URL, behind the router
    generation: int | None = None  # how many models it has served; the current one's number
    environment: dict[str, str] = field(default_factory=dict)  # the serving container's variables
    history: list[dict[str, Any]] = field(default_factory=list)  # each model it served: job, model, since, why
    restarts: list[dict[str, Any]] = field(default_factory=list)  # process backend: its model server restarted, or not
    endpoint_dir: str | None = None
    log: str | None = None
    endpoint_name: str | None = None  # sagemaker backend: its endpoint, endpoint config and model
    endpoint_config_name: str | None = None
    model_name: str | None = None
    inference_ami_version: str | None = None
    deleted: float | None = None

    def now_serving(self, reason: str, **facts: Any) -> None:
        """Enter the model it serves from now on (its generation, job and model, with `facts`) and why in its
        history, ending the entry before."""
        now = time.time()
        if self.history:
            self.history[-1]["until"] = now
        entry = {"generation": self.generation, "job_name": self.job_name, "model_data": self.model_data}
        self.history = [*(self.history or []), {**entry, **facts, "since": now, "reason": reason}]


@dataclass(kw_only=True)
class TuningRun(Record):
    kind = "tuning"
    noun = "tuning run"

    objective_metric: str | None = None
    direction: str | None = None
    strategy: str | None = None
    early_stopping: str | None = None
    max_jobs: int | None = None
    max_parallel_jobs: int | None = None
    trials: int = 0  # trials that ended
    stopped_early: int = 0
    results: str | None = None  # results.csv
    plot: str | None = None  # results.html
    # The best completed trial: trial, job_name, objective, tuned_hyperparameters, hyperparameters (all of them).
    best: dict[str, Any] | None = None
    warm_start_from: list[str] = field(default_factory=list)  # sagemaker backend
    image: str | None = None
    instance_type: str | None = None
    channels: dict[str, str] = field(default_factory=dict)
    training_jobs: dict[str, int] | None = None  # sagemaker backend: its trials' status counters

    @classmethod
    def upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 0 and "status" not in data:  # the local tuner recorded a run only once it had ended
            data["status"] = "Completed" if data.get("best") else "Failed"
        return data


@dataclass(kw_only=True)
class LoopRun(Record):
    kind = "runs"
    noun = "run"

    steps: list[dict[str, Any]] = field(default_factory=list)  # each finished step: step, name, ended, facts
    tuning_run: str | None = None  # the names of its parts, once each has finished
    training_job: str | None = None
    endpoint: str | None = None
    prediction: str | None = None  # the sample image it sent
    promotion: str | None = None  # with a champion endpoint: the promotion that decided between them


@dataclass(kw_only=True)
class TransformJob(Record):
    kind = "transforms"
    noun = "transform job"

    model_data: str | None = None  # the model.tar.gz it classified with
    job_name: str | None = None  # the training job that produced the model, if known
    image: str | None = None
    instance_type: str | None = None
    input: str | None = None  # the folder or s3:// prefix it read
    output: str | None = None  # its folder on this machine: predictions.jsonl and summary.json
    files: int = 0  # image files under the input
    classified: int = 0  # of those, answered with predictions
    failed: int = 0  # answered with an error (listed in predictions.jsonl with the reason)
    s3_output: str | None = None  # sagemaker backend: where SageMaker wrote its .out files
    transform_job_name: str | None = None  # sagemaker backend: its batch transform job (and model)


@dataclass(kw_only=True)
class Evaluation(Record):
    kind = "evaluations"
    noun = "evaluation"

    model_data: str | None = None
    job_name: str | None = None
    data: str | None = None  # the labelled folder it read
    transform: str | None = None  # the transform job that classified its images
    report: str | None = None  # evaluation.json
    page: str | None = None  # evaluation.html
    metrics: dict[str, Any] | None = None  # accuracy, top-5 accuracy, loss, images, ...


@dataclass(kw_only=True)
class Promotion(Record):
    """A champion (the model an endpoint serves) against a challenger on the same test split, and what was done."""

    kind = "promotions"
    noun = "promotion"

    endpoint: str | None = None
    rule: str | None = None  # the decision rule, as printed
    data: str | None = None  # the labelled test split both were evaluated on
    champion: dict[str, Any] = field(default_factory=dict)  # job_name, model_data, model_sha256, evaluation, metrics
    challenger: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None  # promoted, kept (the champion stays), rolled back
    reason: str | None = None  # why, in words
    forced: bool = False  # --force: promoted whatever the rule said


R = TypeVar("R", bound=Record)


class RecordStore:
    """One JSON file per record, `<root>/<kind>/<name>.json`, written atomically."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, kind: type[Record], name: str) -> Path:
        return self.root / kind.kind / f"{name}.json"

    def exists(self, kind: type[Record], name: str) -> bool:
        return self.path(kind, name).is_file()

    def save(self, record: Record) -> Path:
        path = self.path(type(record), record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(record.to_json(), indent=2, default=str))
        os.replace(partial, path)
        return path

    def load(self, kind: type[R], name: str) -> R:
        path = self.path(kind, name)
        if not path.is_file():
            known = ", ".join(self.names(kind)[-5:]) or "none"
            raise LauncherError(f"no {kind.noun} named {name!r} in {self.root} (most recent: {known})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise LauncherError(f"the record {path} is not JSON ({err}); move it away or repair it") from err
        return kind.from_json(data)

    def names(self, kind: type[Record]) -> list[str]:
        """Names of the records of a kind, oldest first."""
        folder = self.root / kind.kind
        files = sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name)) if folder.is_dir() else []
        return [p.stem for p in files]

    def find(self, kind: type[R], **fields: Any) -> list[R]:
        """Records whose fields equal the given values, oldest first."""
        records = (self.load(kind, name) for name in self.names(kind))
        return [r for r in records if all(getattr(r, k) == v for k, v in fields.items())]
