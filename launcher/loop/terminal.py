"""`launcher run`: tune (every trial with rules and profiler), take the best trial's model (or train its configuration
once more, `retrain_best`; or, without tuning, train the config as given), deploy, predict a sample image, and
evaluate the model on the test split. With a champion endpoint (`--endpoint NAME`), the new model does not get an
endpoint of its own: it challenges the model that endpoint serves, on the same test split, and replaces it only if
it wins (launcher.promotion).

The run's record (`records/runs/<name>.json`) lists each step as it ends; its parts are named after the run
(`<name>-tune` and its trials `<name>-tune-001`..., `<name>-train`, `<name>-ep`, `<name>-eval`,
`<name>-promotion`), so running the same command again after an interruption goes on from where it stopped: a
finished tuning run, a taken model, a completed training job, an endpoint serving its model, an evaluation of it
and a decided promotion are reused, an unfinished local study resumes, and a job or endpoint that failed is kept
while the retry gets the next name (`<name>-train-2`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import lineage, promotion, steps
from launcher.backends import Backend, EndpointSettings, TrainingSpec, TransformSettings
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, Evaluation, LoopRun, Promotion, R, TrainingJob, TuningRun
from launcher.report import show_report
from launcher.transform import CONTENT_TYPES
from launcher.tuning import TuningSpec, load_best_hyperparameters

# The run's jobs (the trials too, one of which becomes the model) save the smdebug trace and sample the system, so
# the model's report has every rule's evidence.
DIAGNOSTICS = {"debug_hook": True}


@dataclass(frozen=True)
class Challenge:
    """The endpoint whose model the new one challenges, and how the winner is picked."""

    endpoint: str
    rule: promotion.Rule
    holdout: Path | None = None  # the labelled test split both are evaluated on; None: the new data's
    force: bool = False  # promote whatever the rule says


@dataclass(frozen=True)
class RunPlan:
    name: str
    training: TrainingSpec  # the job to train; its hyperparameters are the base the best trial's override
    tuning: TuningSpec | None  # None: no tuning section, train as given
    endpoint: EndpointSettings  # how the new model is served (behind <name>-ep, or the champion's endpoint)
    sample_image: Path
    evaluation: TransformSettings | None = None  # how a model is scored on the test split; None: no local test split
    evaluation_data: Path | None = None
    stop_endpoint: bool = False
    challenge: Challenge | None = None
    retrain_best: bool = False  # train the best trial's configuration once more, and take that model


def test_split(channels: dict[str, str]) -> Path | None:
    """The labelled folder to evaluate on: a `test` channel, or the `training` channel's test/ split (on this
    machine); None where there is none."""
    candidates = [Path(channels["test"])] if "test" in channels else []
    candidates += [Path(channels["training"]) / "test"] if "training" in channels else []
    return next((c for c in candidates if not str(c).startswith(S3_SCHEME) and c.is_dir()), None)


def sample_image(channels: dict[str, str], given: Path | None) -> Path:
    """The image to send the endpoint: the given one, else the first image of the local test split."""
    if given is not None:
        if not given.is_file():
            raise LauncherError(f"no sample image at {given}")
        return given
    split = test_split(channels)
    found = sorted(p for p in split.rglob("*") if p.suffix.lower() in CONTENT_TYPES and p.is_file()) if split else []
    if not found:
        raise LauncherError("no local test image to send the endpoint: give --sample-image FILE")
    return found[0]


class TerminalLoop:
    """Runs a plan's steps on one backend, saving the run record after each. The backend trains, hosts and transforms
    (`launcher.backends`' roles), and swaps models too where the plan has a challenge."""

    def __init__(self, plan: RunPlan, backend: Backend):
        self.plan, self.backend, self.records = plan, backend, backend.records
        self.record = (
            self.records.load(LoopRun, plan.name)
            if self.records.exists(LoopRun, plan.name)
            else LoopRun(name=plan.name, backend=backend.name)
        )

    def run(self) -> LoopRun:
        self._update(status="InProgress", failure_reason=None, ended=None)
        try:
            champion = self._champion()
            tuning = self._tune()
            job = self._best_trial(tuning) if tuning and not self.plan.retrain_best else self._train(tuning)
            contest = self._contest(job, champion) if champion else None
            endpoint = self.records.load(Endpoint, champion.name) if champion else self._deploy(job)
            try:
                answer = steps.predict(self.backend, endpoint, self.plan.sample_image)
                top = answer["predictions"][:3]
                self._step("prediction", str(self.plan.sample_image), top=top)
                say(f"prediction for {self.plan.sample_image}: {top}")
            finally:
                if self.plan.stop_endpoint:
                    steps.stop(self.backend, self.records.load(Endpoint, endpoint.name))
                    say(f"endpoint {endpoint.name} stopped")
            evaluation = None if contest else self._evaluate(job)
        except KeyboardInterrupt:  # Ctrl-C: the step under way has recorded itself as Stopped
            self._update(status="Stopped", failure_reason="interrupted by the user", ended=time.time())
            raise
        except BaseException as err:
            self._update(status="Failed", failure_reason=str(err) or type(err).__name__, ended=time.time())
            raise
        self._update(status="Completed", ended=time.time())
        self._summary(tuning, job, endpoint, evaluation, contest)
        return self.record

    def _champion(self) -> Endpoint | None:
        """The endpoint to challenge, checked before any training: in service, serving the data's classes."""
        challenge = self.plan.challenge
        if challenge is None:
            return None
        if (challenge.holdout or self.plan.evaluation_data) is None:
            raise LauncherError("no labelled test split on this machine to compare the models on: give --holdout DIR")
        classes = promotion.dataset_classes(Path(self.plan.training.channels.get("training", "")))
        folder = self.backend.workdir / "promotions" / self.plan.name
        return promotion.served_endpoint(self.backend, challenge.endpoint, classes, folder)

    def _contest(self, job: TrainingJob, champion: Endpoint) -> Promotion:
        challenge, name = self.plan.challenge, f"{self.plan.name}-promotion"
        earlier, name = self._earlier(
            Promotion, name, lambda p: p.status == "Completed" and p.challenger.get("model_data") == job.model_data
        )
        if earlier:
            say(f"{name} of {job.name}'s model already decided ({earlier.decision}); reusing it")
            return earlier
        data = challenge.holdout or self.plan.evaluation_data
        contest = promotion.contest(
            self.backend,
            champion,
            job,
            data,
            challenge.rule,
            self.plan.evaluation,
            self.plan.endpoint,
            name,
            force=challenge.force,
        )
        self._step("promotion", name, decision=contest.decision, reason=contest.reason)
        return contest

    def _tune(self) -> TuningRun | None:
        spec = self.plan.tuning
        if spec is None:
            return None
        if self.records.exists(TuningRun, spec.name):
            done = self.records.load(TuningRun, spec.name)
            if done.best and done.trials >= spec.max_jobs:
                say(f"tuning run {spec.name} already finished; reusing its best trial")
                return done
        run = steps.tune(self.backend, spec)
        self._step("tuning_run", spec.name, best=run.best["tuned_hyperparameters"])
        return run

    def _train(self, tuning: TuningRun | None) -> TrainingJob:
        spec = self.plan.training
        earlier, name = self._earlier(TrainingJob, spec.job_name, lambda job: job.status == "Completed")
        if earlier:
            say(f"training job {name} already completed; reusing its model")
            return earlier
        hyperparameters = {**spec.hyperparameters, **(load_best_hyperparameters(tuning) if tuning else {})}
        job = steps.train(
            self.backend, dataclasses.replace(spec, job_name=name, hyperparameters=hyperparameters), tuning
        )
        self._step("training_job", name, model_data=job.model_data)
        return job

    def _best_trial(self, tuning: TuningRun) -> TrainingJob:
        job = self.records.load(TrainingJob, tuning.best["job_name"])
        if job.lineage:
            say(f"best trial {job.name}'s model already taken; reusing it")
            return job
        job = steps.take_best_trial(self.backend, tuning)
        self._step("training_job", job.name, model_data=job.model_data, best_trial_of=tuning.name)
        return job

    def _deploy(self, job: TrainingJob) -> Endpoint:
        earlier, name = self._earlier(
            Endpoint, f"{self.plan.name}-ep", lambda ep: ep.status == "InService" and ep.job_name == job.name
        )
        if earlier:
            say(f"endpoint {name} already serves {job.name}; reusing it")
            return earlier
        endpoint = steps.deploy(self.backend, self.plan.endpoint.serve(name, job.model_data, job.name))
        self._step("endpoint", name, url=endpoint.url)
        return endpoint

    def _evaluate(self, job: TrainingJob) -> Evaluation | None:
        settings, data = self.plan.evaluation, self.plan.evaluation_data
        if settings is None or data is None:
            say("no test split on this machine to evaluate the model on; skipping the evaluation")
            return None
        earlier, name = self._earlier(
            Evaluation, f"{self.plan.name}-eval", lambda e: e.status == "Completed" and e.model_data == job.model_data
        )
        if earlier:
            say(f"evaluation {name} of {job.name}'s model already done; reusing it")
            return earlier
        output = self.backend.workdir / "evaluations" / name
        evaluation = steps.evaluate(self.backend, settings.classify(name, job.model_data, str(data), output, job.name))
        self._step("evaluation", name, accuracy=evaluation.metrics["accuracy"], loss=evaluation.metrics["loss"])
        return evaluation

    def _earlier(self, kind: type[R], base: str, reusable: Callable[[R], bool]) -> tuple[R | None, str]:
        """An earlier try's record that can be reused, and its name; else None and the first free name after
        those of tries that failed (`base`, `base-2`, ...), which are kept as they are, with their logs."""
        name, attempt = base, 1
        while self.records.exists(kind, name):
            earlier = self.records.load(kind, name)
            if reusable(earlier):
                return earlier, name
            attempt += 1
            name = f"{base}-{attempt}"
        return None, name

    def _step(self, step: str, name: str, **facts: Any) -> None:
        """A finished step: listed in order, and its name kept under the step's key (e.g. `training_job`)."""
        self.record.steps.append({"step": step, "name": name, "ended": time.time(), **facts})
        setattr(self.record, step, name)
        self.records.save(self.record)

    def _update(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self.record, key, value)
        self.records.save(self.record)

    def _summary(
        self,
        tuning: TuningRun | None,
        job: TrainingJob,
        endpoint: Endpoint,
        evaluation: Evaluation | None,
        contest: Promotion | None,
    ) -> None:
        """Where each artifact is, then the job's rule report (its table is in the job's log) and the lineage."""
        say(f"run {self.plan.name} completed; artifacts:")
        if tuning:
            say(f"  tuning results: {tuning.results} and {tuning.plot}")
        say(f"  model: {job.model_data}")
        say(f"  output (metrics, rule and profiler report): {job.output_data}")
        say(f"  endpoint: {endpoint.name} {endpoint.url or ''}" + (" (stopped)" if self.plan.stop_endpoint else ""))
        if evaluation:
            say(f"  evaluation on the test split: {evaluation.page}")
        if contest:
            say(
                f"  {contest.name}: {contest.decision} ({contest.reason}); the evaluations: "
                f"{contest.champion.get('evaluation')}, {contest.challenger.get('evaluation')}"
                + (f"; MLflow run {contest.mlflow_run}" if contest.mlflow_run else "")
            )
        tracker = self.backend.tracker
        if tracker.enabled:
            say(
                f"  tracked in MLflow: {tracker.uri}, experiment {tracker.experiment!r}"
                + (f", model {job.model_version}" if job.model_version else "")
                + "; see them with: launcher ui"
            )
        show_report(job, self.backend.workdir / "reports" / job.name, table=False)
        print(lineage.format_chain(lineage.chain(self.records, endpoint.name)), flush=True)
