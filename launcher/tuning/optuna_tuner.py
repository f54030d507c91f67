"""Hyperparameter tuning on this machine with Optuna: every trial is a real training job through a backend
(process: the image's `train` as a process; local: the image in Docker through SageMaker local mode), run in a
thread with its console output off; the job's live log (`log` in its record) gives the epoch metrics and the
objective, by the same regex SageMaker's tuner uses.

Strategies: Bayesian = TPE, Random, Grid, Hyperband = TPE with Hyperband pruning over epochs. Early stopping
`Auto` is SageMaker's median rule: a trial whose validation loss (accuracy when maximising) at an epoch is
worse than the median of earlier trials at that epoch is stopped. The study lives in SQLite, so a tuning run
that was interrupted resumes without repeating finished trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import optuna

from imgclf_contract import metrics
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import RecordStore, TrainingJob, TuningRun
from launcher.specs import TrainingSpec
from launcher.tracking import Tracker
from launcher.tuning.results import TrialRow, write_results
from launcher.tuning.spec import Range, TuningSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner says what each trial does; Optuna need not
POLL_SECONDS = 0.5
STARTUP_TRIALS = 2  # the median rule needs earlier trials to compare with


class TrialFailed(Exception):
    """The trial's training job failed, or its log had no objective line."""


def parallel_trials(requested: int, backend_limit: int | None = None) -> int:
    """Trials at once on this machine: as asked, but at most one per two cores (each trial uses several) and
    no more than the backend can run at once."""
    return max(1, min(requested, (os.cpu_count() or 1) // 2, backend_limit or requested))


def make_sampler(spec: TuningSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.strategy == "Grid":
        grid = {name: list(r.values or ()) for name, r in spec.ranges.items()}  # categorical ranges only
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: TuningSpec, epochs: int) -> optuna.pruners.BasePruner:
    if spec.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    if spec.early_stopping == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, name: str, r: Range) -> Any:
    """A value for one range. Auto scaling is logarithmic when the range spans a factor of 10 or more above 0."""
    if r.type == "categorical":
        return trial.suggest_categorical(name, list(r.values or ()))
    low, high = r.min, r.max
    log = r.scaling == "Logarithmic" or (r.scaling == "Auto" and low > 0 and high / low >= 10)
    if r.type == "integer":
        return trial.suggest_int(name, int(low), int(high), log=log)
    if r.scaling == "ReverseLogarithmic":  # dense near 1: sample 1 - value on a log scale
        return 1 - trial.suggest_float(f"1-{name}", 1 - high, 1 - low, log=True)
    return trial.suggest_float(name, low, high, log=log)


class TrialRunner(Protocol):
    """What the tuner needs of a backend: its training jobs (`launcher.backends.Trains`)."""

    name: str
    records: RecordStore
    tracker: Tracker
    max_concurrent_jobs: int | None

    def train(self, spec: TrainingSpec) -> TrainingJob: ...


@runtime_checkable
class TrialStopper(Protocol):
    """A backend that stops a running job early (`launcher.backends.StopsTraining`): needed for early stopping."""

    def stop_training(self, job_name: str) -> None: ...

    def discard_checkpoints(self, job_name: str) -> None: ...


class OptunaTuner:
    def __init__(
        self, spec: TuningSpec, backend: TrialRunner, folder: Path, parent_run: str | None = None, seed: int = 0
    ):
        if spec.warm_start_from:
            raise LauncherError("warm start is available on the sagemaker backend only")
        self.stopper = backend if isinstance(backend, TrialStopper) else None
        if spec.early_stopping == "Auto" and self.stopper is None:
            raise LauncherError(
                f"early stopping stops trials' jobs early, and the {backend.name} backend cannot stop a running job: "
                "set early_stopping: Off"
            )
        self.spec, self.backend, self.folder, self.seed = spec, backend, folder, seed
        self.parent_run = parent_run  # the tuning run's MLflow run: each trial is a child of it
        self.objective_pattern = re.compile(spec.objective_regex)
        self.epochs = int(spec.training.hyperparameters.get("epochs", 5))

    def run(self) -> TuningRun:
        """Run the trials still missing from the study; return the tuning record (best trial included)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.spec.name,
            storage=f"sqlite:///{self.folder / 'study.db'}",
            load_if_exists=True,
            direction=self.spec.direction.lower(),
            sampler=make_sampler(self.spec, self.seed),
            pruner=make_pruner(self.spec, self.epochs),
        )
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # cut short by an interruption: rerun
        done = len(self._ended(study))
        remaining = self.spec.max_jobs - done
        if remaining > 0:
            at_once = parallel_trials(self.spec.max_parallel_jobs, self.backend.max_concurrent_jobs)
            say(
                f"tuning {self.spec.name}: {done} of {self.spec.max_jobs} trials done, running {remaining} "
                f"({at_once} at a time; study {self.folder / 'study.db'})"
            )
            study.optimize(self._objective, n_trials=remaining, n_jobs=at_once, catch=(TrialFailed,))
        run = self.spec.record(self.backend.name, ended=time.time())
        write_results(self.spec, [self._row(t) for t in self._ended(study)], self.folder, run)
        run.status = "Completed" if run.best else "Failed"
        return run

    @staticmethod
    def _ended(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """Trials whose job ran to its end (completed, stopped early or failed); not those cut by an interruption."""
        return [t for t in study.trials if t.state.is_finished() and "duration" in t.user_attrs]

    def _objective(self, trial: optuna.Trial) -> float:
        tuned = {name: suggest(trial, name, r) for name, r in self.spec.ranges.items()}
        job_name = f"{self.spec.name}-{trial.number + 1:03d}"
        trial.set_user_attr("job", job_name)
        trial.set_user_attr("hyperparameters", tuned)
        training = dataclasses.replace(
            self.spec.training,
            job_name=job_name,
            echo=False,
            hyperparameters={**self.spec.training.hyperparameters, **tuned},
        )
        say(f"trial {trial.number + 1}: job {job_name} with {tuned}")
        run = self.backend.tracker.trial(
            self.parent_run, trial.number + 1, job_name, training.hyperparameters, self.backend.name
        )
        try:
            value = self._run_trial(trial, training, run)
        except optuna.TrialPruned:
            self.backend.tracker.end(run, "Stopped", stopped_early=trial.user_attrs["stopped_at_epoch"])
            raise
        except TrialFailed as err:
            self.backend.tracker.end(run, "Failed", str(err))
            raise
        except BaseException:
            self.backend.tracker.end(run, "Stopped", "interrupted")
            raise
        final = {"objective": value}  # and under its own name, unless it is an epoch metric already logged per epoch
        if self.spec.objective_metric not in metrics.PER_EPOCH:
            final[self.spec.objective_metric] = value
        self.backend.tracker.log_metrics(run, final, step=self.epochs)
        self.backend.tracker.end(run, "Completed")
        return value

    def _run_trial(self, trial: optuna.Trial, training: TrainingSpec, run: str | None) -> float:
        """Train the trial's job in a thread, watching its epochs; its objective, or TrialPruned or TrialFailed."""
        job_name = training.job_name
        outcome: dict[str, Any] = {}
        worker = threading.Thread(target=self._train, args=(training, outcome), name=job_name, daemon=True)
        start = time.time()
        worker.start()
        try:
            pruned_at = self._watch(trial, worker, job_name, run)
        except KeyboardInterrupt:  # stop the trial's job too; the study reruns this trial on resume
            if self.stopper:
                with contextlib.suppress(LauncherError):
                    self.stopper.stop_training(job_name)
            worker.join()
            raise
        worker.join()
        trial.set_user_attr("duration", time.time() - start)
        if "error" in outcome:
            raise TrialFailed(outcome["error"])
        if pruned_at is not None:
            if self.stopper:  # the study never resumes a pruned trial
                self.stopper.discard_checkpoints(job_name)
            trial.set_user_attr("stopped_at_epoch", pruned_at)
            say(f"trial {trial.number + 1}: stopped early after epoch {pruned_at} (worse than the median)")
            raise optuna.TrialPruned()
        job = outcome["job"]
        if job.status != "Completed":
            raise TrialFailed(f"job {job_name} {job.status}: {(job.failure_reason or '')[:300]}")
        value = self._objective_value(Path(job.log))
        trial.set_user_attr("objective", value)
        say(f"trial {trial.number + 1}: {self.spec.objective_metric} = {value:.6g}")
        return value

    def _train(self, training: Any, outcome: dict[str, Any]) -> None:
        try:
            outcome["job"] = self.backend.train(training)
        except LauncherError as err:
            outcome["error"] = str(err)

    def _watch(self, trial: optuna.Trial, worker: threading.Thread, job_name: str, run: str | None) -> int | None:
        """Report each epoch's validation metric as it appears in the log (and its metrics to the trial's MLflow
        run); stop the job if the pruner says so."""
        log, read, reported = None, 0, set()
        while worker.is_alive():
            time.sleep(POLL_SECONDS)
            log = log or self._log_path(job_name)
            if log is None or not log.is_file():
                continue
            text = log.read_text(errors="replace")
            new, read = text[read:], len(text)
            for match in metrics.EPOCH_LINE.finditer(new):
                epoch, values = metrics.epoch_values(match)
                value = values[metrics.per_epoch_judge(self.spec.direction)]
                if epoch in reported or not math.isfinite(value):
                    continue
                reported.add(epoch)
                self.backend.tracker.log_metrics(run, values, step=epoch)
                trial.report(value, epoch)
                if self.stopper and epoch < self.epochs and trial.should_prune():
                    with contextlib.suppress(LauncherError):  # the job ended on its own meanwhile
                        self.stopper.stop_training(job_name)
                    worker.join()
                    return epoch
        return None

    def _log_path(self, job_name: str) -> Path | None:
        if not self.backend.records.exists(TrainingJob, job_name):
            return None
        return Path(self.backend.records.load(TrainingJob, job_name).log)

    def _objective_value(self, log: Path) -> float:
        matches = self.objective_pattern.findall(log.read_text(errors="replace"))
        if not matches:
            raise TrialFailed(f"no line of {log} matches the objective regex {self.spec.objective_regex!r}")
        value = float(matches[-1])
        if not math.isfinite(value):
            raise TrialFailed(f"the objective in {log} is {value}")
        return value

    @staticmethod
    def _row(trial: optuna.trial.FrozenTrial) -> TrialRow:
        status = {"COMPLETE": "Completed", "PRUNED": "Stopped", "FAIL": "Failed"}.get(trial.state.name, "InProgress")
        return TrialRow(
            trial=trial.number + 1,
            job_name=trial.user_attrs["job"],
            hyperparameters=trial.user_attrs.get("hyperparameters", {}),
            objective=trial.user_attrs.get("objective"),
            status=status,
            duration=trial.user_attrs.get("duration"),
            stopped_early=trial.state == optuna.trial.TrialState.PRUNED,
            stopped_at_epoch=trial.user_attrs.get("stopped_at_epoch"),
            curve=dict(sorted(trial.intermediate_values.items())),
        )
