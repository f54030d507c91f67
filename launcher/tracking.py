"""MLflow tracking: every tuning run, trial, training job, evaluation, transform and endpoint as MLflow runs and
tags, every trained model.tar.gz as a version of a registered model.

Tracking is the launcher's, never the container's: it logs what it reads of each job (the log it follows, the
records it writes), so a job needs no network path to a tracking server. It is best-effort: the first failure
(a server that does not answer, a refused request) prints one warning and turns tracking off for the rest of the
command, which goes on with its records intact. MLflow's HTTP client retries for minutes by default; here the
first request gives up after 5 s, and every later one after three tries.

Where it goes: `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<workdir>/mlflow.db` with
artifacts under `<workdir>/mlartifacts/` (nothing to start). A SageMaker managed MLflow tracking server is
addressed by its ARN, through the `sagemaker-mlflow` plugin (an optional extra).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from launcher.contract import S3_SCHEME
from launcher.progress import say

TRACKING_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_EXPERIMENT = "imgclf"
STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"
MODEL_ARTIFACT_PATH = "model"  # where a run keeps its model.tar.gz; a model version's source
# MLflow's HTTP client retries for minutes; a tracking server that does not answer must not hold a job.
# Each request: up to 3 tries of 20 s (1 s and 2 s apart); the first request, which tells whether a server answers
# at all, one try of 5 s. A variable the user set wins.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
FIRST_REQUEST_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
REGISTERED_MODEL_DESCRIPTION = "model.tar.gz archives (weights, labels, inference code) for the imgclf serving image"
# MLflow's run statuses, by the launcher's record statuses.
RUN_STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED", "InProgress": "RUNNING"}

T = TypeVar("T")


def default_uri(workdir: Path) -> str:
    """The embedded store: one SQLite file in the work folder."""
    return f"sqlite:///{workdir / STORE_FILE}"


def best_effort(method: Callable[..., T]) -> Callable[..., T | None]:
    """A tracker method that does nothing once tracking is off, and turns it off (with one warning) on failure."""

    @functools.wraps(method)
    def guarded(self: Tracker, *args: Any, **kwargs: Any) -> T | None:
        if not self.enabled:
            return None
        try:
            self._connect()
            return method(self, *args, **kwargs)
        except Exception as err:
            self._give_up(err)
            return None

    return guarded


class Tracker:
    """One command's tracking: an MLflow client for one experiment, connected on first use. `uri=None`: off."""

    def __init__(
        self,
        uri: str | None,
        experiment: str = DEFAULT_EXPERIMENT,
        model_name: str | None = None,
        artifact_root: Path | None = None,
    ):
        self.uri, self.experiment = uri, experiment
        self.model_name = model_name or experiment
        store = sqlite_path(uri) if uri else None
        if artifact_root is None and store is not None:  # beside the store, never MLflow's ./mlruns in the cwd
            artifact_root = store.parent / ARTIFACTS_FOLDER
        self.artifact_root = artifact_root
        self.enabled = uri is not None
        self.experiment_id: str | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def off(cls) -> Tracker:
        return cls(None)

    # -- connection -------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        """Make the client and the experiment once; a new SQLite store is created under a file lock, so that
        launchers starting at once do not race in its schema migration."""
        with self._lock:
            if self._client is not None:
                return
            from mlflow.tracking import MlflowClient  # importing mlflow sets its loggers' levels; then ours

            for name in ("mlflow", "alembic"):  # a new store's migration logs every step at INFO
                logging.getLogger(name).setLevel(logging.WARNING)
            if self.uri.startswith("arn:"):  # the sagemaker-mlflow plugin signs requests for the global URI only
                import mlflow

                mlflow.set_tracking_uri(self.uri)
            limits = {name: value for name, value in HTTP_LIMITS.items() if name not in os.environ}
            os.environ.update({**limits, **{k: v for k, v in FIRST_REQUEST_LIMITS.items() if k in limits}})
            try:
                with self._store_lock():
                    client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
                    client.search_experiments(max_results=1)  # a server answers, or a new store is made here
            finally:
                os.environ.update(limits)
            self._client = client

    def _experiment(self) -> str:
        """The experiment's id, made on first use (a command that only tags runs makes none)."""
        with self._lock:
            if self.experiment_id is None:
                with self._store_lock():
                    experiment = self._client.get_experiment_by_name(self.experiment)
                    self.experiment_id = (
                        experiment.experiment_id
                        if experiment
                        else self._client.create_experiment(
                            self.experiment, artifact_location=self._artifact_location()
                        )
                    )
            return self.experiment_id

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        path = sqlite_path(self.uri)
        if path is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _artifact_location(self) -> str | None:
        if self.artifact_root is None:
            return None  # the server's default
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.experiment)
        return (self.artifact_root / safe).as_uri()

    def _give_up(self, err: Exception) -> None:
        with self._lock:
            if not self.enabled:
                return
            self.enabled = False
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        say(
            f"warning: tracking to {self.uri} failed ({type(err).__name__}: {reason}); going on without it "
            "(the records under the work folder are complete). Fix the server or pass --no-tracking."
        )

    @best_effort
    def find_experiment(self, name: str | None) -> str | None:
        """The named experiment's id; without a name, the newest experiment's; None if there is none."""
        if name:
            found = self._client.get_experiment_by_name(name)
            return found.experiment_id if found else None
        newest = self._client.search_experiments(max_results=1, order_by=["creation_time DESC"])
        return newest[0].experiment_id if newest else None

    @contextlib.contextmanager
    def ending_on_error(self, run_id: str | None) -> Iterator[None]:
        """Around a step: if it raises, its run ends KILLED (Ctrl-C) or FAILED with the reason."""
        try:
            yield
        except KeyboardInterrupt:
            self.end(run_id, "Stopped", "interrupted by the user")
            raise
        except BaseException as err:
            self.end(run_id, "Failed", str(err) or type(err).__name__)
            raise

    # -- runs -------------------------------------------------------------------------------------------------
    @best_effort
    def start(
        self,
        name: str,
        kind: str,
        parent: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        reuse: bool = False,
    ) -> str:
        """A new run of `kind` (tuning, trial, training, evaluation, transform); its id. `reuse`: the latest run of
        that kind and name goes on instead (a tuning run resumed after an interruption)."""
        from mlflow.entities import Param

        if reuse:
            query = f"attributes.run_name = '{name}' and tags.`imgclf.kind` = '{kind}'"
            earlier = self._client.search_runs(
                [self._experiment()], query, max_results=1, order_by=["attributes.start_time DESC"]
            )
            if earlier:
                self._client.update_run(earlier[0].info.run_id, status="RUNNING")
                return earlier[0].info.run_id
        all_tags = {"imgclf.kind": kind, **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self._client.create_run(
            self._experiment(), run_name=name, tags={k: _text(v) for k, v in all_tags.items() if v is not None}
        )
        run_id = run.info.run_id
        if params:
            self._client.log_batch(run_id, params=[Param(k, _text(v)[:6000]) for k, v in sorted(params.items())])
        return run_id

    def trial(
        self, parent: str | None, number: int, job_name: str, hyperparameters: dict[str, Any], backend: str
    ) -> str | None:
        """A tuning trial's run: a child of the tuning run, with all of its job's hyperparameters as params."""
        tags = {"imgclf.trial": number, "imgclf.job_name": job_name, "imgclf.backend": backend}
        return self.start(job_name, "trial", parent=parent, params=hyperparameters, tags=tags)

    @best_effort
    def log_metrics(self, run_id: str | None, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        if run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(metric_name(k), float(v), now, step) for k, v in values.items() if v is not None]
        if batch:
            self._client.log_batch(run_id, metrics=batch)

    @best_effort
    def set_tags(self, run_id: str | None, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        if run_id is not None:
            self._client.log_batch(run_id, tags=[RunTag(k, _text(v)) for k, v in tags.items() if v is not None])

    @best_effort
    def end(self, run_id: str | None, status: str, reason: str | None = None, stopped_early: Any = None) -> None:
        """End a run with a record status (Completed, Failed, Stopped); a failure's reason and an early stop (the
        epoch it came after) become tags."""
        if run_id is None:
            return
        if reason:
            self._client.set_tag(run_id, "imgclf.failure_reason", reason[:5000])
        if stopped_early is not None:
            self._client.set_tag(run_id, "imgclf.stopped_early", _text(stopped_early))
        self._client.set_terminated(run_id, status=RUN_STATUS.get(status, "FAILED"))

    @best_effort
    def log_artifacts(self, run_id: str | None, paths: list[Path], folder: str | None = None) -> None:
        if run_id is None:
            return
        for path in paths:
            if path.is_file():
                self._client.log_artifact(run_id, str(path), folder)

    @best_effort
    def log_dataset(self, run_id: str | None, dataset: dict[str, Any]) -> None:
        """The job's input as an MLflow dataset: our manifest's digest, file count, bytes and sources."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if run_id is None or not dataset:
            return
        sources = dataset.get("channels", {})
        remote = any(str(s).startswith(S3_SCHEME) for s in sources.values())
        entity = Dataset(
            name=dataset.get("name") or "images",
            digest=dataset["digest"][:36],
            source_type="s3" if remote else "local",
            source=json.dumps(sources),
            profile=json.dumps(
                {
                    "files": dataset.get("files"),
                    "bytes": dataset.get("bytes"),
                    "digest": dataset["digest"],
                    "manifest": dataset.get("manifest"),
                }
            ),
        )
        self._client.log_inputs(
            run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])]
        )

    # -- the model registry ----------------------------------------------------------------------------------
    @best_effort
    def register_model(self, run_id: str | None, model_data: str, tags: dict[str, Any]) -> str | None:
        """A model.tar.gz as the next version of the registered model, with the run as its source: a file here is
        logged as the run's artifact `model/model.tar.gz` first; one in S3 is registered where it lies. Returns
        `models:/NAME/VERSION`."""
        from mlflow.exceptions import MlflowException

        if run_id is None:
            return None
        if model_data.startswith(S3_SCHEME):
            source = model_data.rsplit("/", 1)[0]
        else:
            self._client.log_artifact(run_id, model_data, MODEL_ARTIFACT_PATH)
            source = f"{self._client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
        try:
            self._client.create_registered_model(self.model_name, description=REGISTERED_MODEL_DESCRIPTION)
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                raise
        version = self._client.create_model_version(
            self.model_name, source=source, run_id=run_id, tags={k: _text(v) for k, v in tags.items() if v is not None}
        )
        uri = f"models:/{self.model_name}/{version.version}"
        self._client.set_tag(run_id, "imgclf.model_version", uri)
        return uri

    @best_effort
    def tag_model_version(self, model_version: str | None, tags: dict[str, Any]) -> None:
        if not model_version:
            return
        name, version = model_version.removeprefix("models:/").rsplit("/", 1)
        for key, value in tags.items():
            self._client.set_model_version_tag(name, version, key, _text(value))

    @best_effort
    def set_alias(self, model_version: str | None, alias: str) -> None:
        """Point the registered model's `alias` (e.g. `champion`) at this version."""
        if not model_version:
            return
        name, version = model_version.removeprefix("models:/").rsplit("/", 1)
        self._client.set_registered_model_alias(name, alias, version)


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def metric_name(name: str) -> str:
    """A metric's name as MLflow takes it (letters, digits, `_-. :/` and spaces; the log's names as they are)."""
    return re.sub(r"[^\w.\- :/]+", "_", name.strip())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
