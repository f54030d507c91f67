"""What each `launcher` command does with its parsed arguments: the specs it builds from the flags and the job
config (flags win; the defaults live with the specs in `launcher.backends.base`), and the step it runs."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import promotion, steps, tracking, tracking_ui
from launcher.backends import (
    DEFAULT_IMAGE,
    Backend,
    BackendOptions,
    EndpointSettings,
    Hosts,
    SwapsModels,
    TrainingSpec,
    Trains,
    Transforms,
    TransformSettings,
    TransformSpec,
    backend_options,
    get_backend,
    option_names,
    require,
)
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.job_config import JobConfig, job_options, setting_paths
from launcher.lineage import chain as lineage_chain
from launcher.lineage import format_chain
from launcher.loop import DIAGNOSTICS, Challenge, RunPlan, TerminalLoop, sample_image, test_split
from launcher.progress import say
from launcher.records import Endpoint, Promotion, RecordStore, TrainingJob, TuningRun, unique_name
from launcher.report import show_report
from launcher.tracking import Tracker
from launcher.tuning import TuningSpec, load_best_hyperparameters

JOB_PREFIX = "imgclf"
IMAGE_ENV = "IMGCLF_IMAGE"

Args = argparse.Namespace


def absolute_path(text: str) -> Path:
    """Jobs run in their own folders, so every local path is made absolute first."""
    return Path(text).expanduser().resolve()


def default_image(given: str | None = None) -> str:
    return given or os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)


def tracker_of(args: Args) -> Tracker:
    """Where this command tracks: --no-tracking, else --tracking-uri, $MLFLOW_TRACKING_URI or the work folder's
    store; the experiment: --experiment, the job config's, its file's name, or imgclf."""
    if getattr(args, "no_tracking", False):
        return Tracker.off()
    config = job_options(args.config) if getattr(args, "config", None) else JobConfig()
    uri = tracking_uri(args)
    experiment = (
        getattr(args, "tracking.experiment", None)
        or config.tracking.get("experiment")
        or (args.config.stem if getattr(args, "config", None) else tracking.DEFAULT_EXPERIMENT)
    )
    embedded = uri.startswith(("sqlite:", "file:"))
    return Tracker(
        uri,
        experiment,
        config.tracking.get("registered_model"),
        args.workdir / tracking.ARTIFACTS_FOLDER if embedded else None,
    )


def tracking_uri(args: Args) -> str:
    return (
        getattr(args, "tracking_uri", None)
        or os.environ.get(tracking.TRACKING_ENV)
        or tracking.default_uri(args.workdir)
    )


def backend_of(args: Args, records: RecordStore, *roles: type[Backend], name: str | None = None) -> Any:
    """The named backend (default: the one the flags chose), tracking as the flags say; refused unless it has the
    `roles` the command needs."""
    name = name or args.backend
    for role in roles:
        require(name, role, f"launcher {args.command}")
    return get_backend(name, args.workdir, records, tracker_of(args))


def options_of(args: Args, backend: str, **defaults: Any) -> BackendOptions:
    """The backend's own options: the flags of their names, else `defaults` (a job config's) where it has them.
    A flag of another backend's options is refused."""
    given = {name: getattr(args, name, None) for name in option_names()}
    return backend_options(backend, given, defaults)


def setting_flags(args: Args, under: str = "") -> dict[str, Any]:
    """The flags that set a key of the job config (their destination is its path: `tuning.max_jobs`), as given;
    `under`: those under one key only. Repeated NAME=VALUE flags are mappings."""
    paths = setting_paths()
    return {
        dest: dict(value) if isinstance(value, list) else value
        for dest, value in vars(args).items()
        if dest in paths and dest.startswith(under) and value not in (None, [])
    }


def job_config(args: Args, beneath: dict[str, Any] | None = None) -> JobConfig:
    """The job's options: the --config file, `beneath` over it, the flags over both (`job_config.job_options`)."""
    return job_options(args.config, setting_flags(args), beneath)


def job_spec(
    args: Args, config: JobConfig, job_name: str, hyperparameters: dict[str, Any] | None = None
) -> TrainingSpec:
    """The training job the job's options describe, on the chosen backend; `hyperparameters` over the config's."""
    if not config.channels:
        raise LauncherError(
            "no data: give --data DIR (with train/, valid/, test/), --channel train=DIR ..., or a --config with data"
        )
    return TrainingSpec(
        job_name=job_name,
        channels=config.channels,
        hyperparameters={**config.hyperparameters, **(hyperparameters or {})},
        output_path=config.output,
        image=default_image(config.image),
        instance_type=config.instance_type or "local",
        instance_count=config.instance_count or 1,
        options=options_of(args, args.backend),
    )


def endpoint_settings(args: Args, *, image: str, instance_type: str, deploy: dict) -> EndpointSettings:
    """How the job options' deploy section (its flags over its file, then the settings' defaults) says to serve a
    model."""
    chosen = {"workers": deploy.get("workers"), "startup_timeout": deploy.get("timeout")}
    own = {key: value for key, value in deploy.items() if key not in ("instance_type", "workers", "timeout")}
    return EndpointSettings(
        image=image,
        instance_type=deploy.get("instance_type") or instance_type,
        port=args.port,
        listen=args.listen,
        options=options_of(args, args.backend, **own),
        **{key: value for key, value in chosen.items() if value is not None},
    )


def new_name(records: RecordStore, kind: type, given: str | None, prefix: str) -> str:
    """The given name, or a fresh one; refused if a record of that kind already has it."""
    name = given or unique_name(prefix)
    if records.exists(kind, name):
        raise LauncherError(f"a {kind.noun} named {name!r} already exists; names must be unique")
    return name


def endpoint_of(records: RecordStore, name: str | None) -> Endpoint:
    """The named endpoint, or the only one in service."""
    if name:
        return records.load(Endpoint, name)
    serving = records.find(Endpoint, status="InService")
    if len(serving) != 1:
        names = ", ".join(r.name for r in serving) or "none"
        raise LauncherError(f"name the endpoint: {len(serving)} are in service ({names})")
    return serving[0]


# -- the commands ---------------------------------------------------------------------------------------------
def sample_data(args: Args, _records: RecordStore) -> None:
    from launcher.sample_data import write_digits

    if not 0 < args.fraction <= 1:
        raise LauncherError(f"--fraction must be in (0, 1], not {args.fraction}")
    counts = write_digits(args.directory, size=args.size, seed=args.seed, fraction=args.fraction)
    say(f"wrote {sum(counts.values())} images to {args.directory}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def train(args: Args, records: RecordStore) -> None:
    job_name = new_name(records, TrainingJob, args.job_name, JOB_PREFIX)
    tuning = records.load(TuningRun, args.from_tuning) if args.from_tuning else None
    best = load_best_hyperparameters(tuning) if tuning else None
    if best:
        say(f"starting from tuning run {args.from_tuning}'s best hyperparameters: {best}")
    spec = job_spec(args, job_config(args, {"hyperparameters": best or {}}), job_name)
    steps.train(backend_of(args, records, Trains), spec, tuning)


def tune(args: Args, records: RecordStore) -> None:
    config = job_config(args)
    if config.tuning is None:
        raise LauncherError("nothing to tune: give a --config whose `tuning` section has ranges (see docs/tuning.md)")
    name = args.name or unique_name(f"{JOB_PREFIX}-tune")
    spec = TuningSpec.of(config.tuning, name, job_spec(args, config, name))
    steps.tune(backend_of(args, records, Trains), spec)
    say(f"train with them: launcher train --from-tuning {name} ...")


@dataclass(frozen=True)
class ModelSource:
    """A model.tar.gz and what is known of where it came from."""

    model_data: str  # a path here or an s3:// URI
    job: TrainingJob | None = None  # the training job that produced it
    image: str | None = None  # the image it trained in, or was served with (an ECR URI for sagemaker)

    @classmethod
    def of(cls, records: RecordStore, model: str) -> ModelSource:
        """MODEL as the commands take it: a training job's name, an endpoint's name (its model), or a file."""
        if model.startswith(S3_SCHEME) or Path(model).is_file():
            return cls(model)
        if records.exists(Endpoint, model) and not records.exists(TrainingJob, model):
            endpoint = records.load(Endpoint, model)
            job = (
                records.load(TrainingJob, endpoint.job_name)
                if endpoint.job_name and records.exists(TrainingJob, endpoint.job_name)
                else None
            )
            return cls(endpoint.model_data, job, endpoint.image)
        try:
            job = records.load(TrainingJob, model)
        except LauncherError as err:
            raise LauncherError(f"{err}; nor an endpoint of that name, nor a model.tar.gz at {model}") from None
        if job.status != "Completed":
            raise LauncherError(f"job {model} is {job.status}, so it has no model")
        return cls(job.model_data, job, job.image)

    def instance_type(self, given: str | None, backend: Backend) -> str:
        return given or backend.default_endpoint_instance_type(self.job.instance_type if self.job else None)


def deploy(args: Args, records: RecordStore) -> None:
    backend = backend_of(args, records, Hosts)
    source = ModelSource.of(records, args.model)
    backend.check_model_data(source.model_data)
    name = new_name(records, Endpoint, args.endpoint_name, f"{JOB_PREFIX}-ep")
    settings = endpoint_settings(
        args,
        image=default_image(args.image or source.image),
        instance_type=source.instance_type(args.instance_type, backend),
        deploy=job_options(None, setting_flags(args, "deploy.")).deploy,
    )
    endpoint = steps.deploy(backend, settings.serve(name, source.model_data, source.job.name if source.job else None))
    say(f"predict with: launcher predict --endpoint {endpoint.name} IMAGE")


def transform_spec(
    args: Args, records: RecordStore, name: str, input: str, output: Path, logits: bool = False
) -> tuple[Transforms, TransformSpec]:
    """The backend, and the transform of the images under `input` into `output` that the flags describe."""
    backend = backend_of(args, records, Transforms)
    source = ModelSource.of(records, args.model)
    backend.check_model_data(source.model_data)
    settings = TransformSettings(
        image=default_image(args.image or source.image),
        instance_type=source.instance_type(args.instance_type, backend),
        top_k=args.top_k,
        concurrency=args.concurrency,
        startup_timeout=args.timeout or TransformSettings.startup_timeout,
        options=options_of(args, args.backend),
    )
    job_name = source.job.name if source.job else None
    return backend, settings.classify(name, source.model_data, input, output, job_name, logits)


def transform(args: Args, records: RecordStore) -> None:
    name = args.name or unique_name(f"{JOB_PREFIX}-transform")
    source = args.input if args.input.startswith(S3_SCHEME) else str(absolute_path(args.input))
    output = args.output or args.workdir / "transforms" / name / "output"
    steps.transform(*transform_spec(args, records, name, source, output, args.logits))


def evaluate(args: Args, records: RecordStore) -> None:
    name = args.name or unique_name(f"{JOB_PREFIX}-eval")
    steps.evaluate(
        *transform_spec(args, records, name, str(args.data), args.output or args.workdir / "evaluations" / name)
    )


def predict(args: Args, records: RecordStore) -> None:
    steps.content_type_of(args.image, args.content_type)  # a clear error before looking for the endpoint
    endpoint = endpoint_of(records, args.endpoint)
    backend = backend_of(args, records, Hosts, name=endpoint.backend)
    print(json.dumps(steps.predict(backend, endpoint, args.image, args.content_type), indent=2))


def stop(args: Args, records: RecordStore) -> None:
    endpoint = endpoint_of(records, args.endpoint)
    steps.stop(backend_of(args, records, Hosts, name=endpoint.backend), endpoint)
    say(f"endpoint {endpoint.name} stopped")


def report(args: Args, records: RecordStore) -> None:
    job = records.load(TrainingJob, args.job)
    show_report(job, args.workdir / "reports" / job.name)


def run(args: Args, records: RecordStore) -> None:
    if not args.endpoint and (args.holdout or args.force or args.min_improvement):
        raise LauncherError("--holdout, --min-improvement and --force decide a promotion: give --endpoint NAME too")
    name = args.name or unique_name(f"{JOB_PREFIX}-run")
    config = job_config(args)
    training = job_spec(args, config, f"{name}-train", DIAGNOSTICS)  # the trials' too: one may be the model
    backend = backend_of(args, records, Trains, Hosts, Transforms, *([SwapsModels] if args.endpoint else []))
    instance_type = backend.default_endpoint_instance_type(training.instance_type)
    plan = RunPlan(
        name=name,
        training=training,
        tuning=TuningSpec.of(config.tuning, f"{name}-tune", training) if config.tuning else None,
        retrain_best=args.retrain_best,
        endpoint=endpoint_settings(args, image=training.image, instance_type=instance_type, deploy=config.deploy),
        sample_image=sample_image(training.channels, args.sample_image),
        evaluation=TransformSettings(image=training.image, instance_type=instance_type, options=training.options),
        evaluation_data=test_split(training.channels),
        stop_endpoint=args.stop_endpoint,
        challenge=Challenge(args.endpoint, promotion.Rule(args.min_improvement), args.holdout, args.force)
        if args.endpoint
        else None,
    )
    endpoint = TerminalLoop(plan, backend).run().endpoint
    if not args.stop_endpoint:
        say(f"the endpoint stays in service: launcher predict --endpoint {endpoint} IMAGE; launcher stop {endpoint}")


def swap_settings(args: Args, backend: Backend, endpoint: Endpoint) -> EndpointSettings:
    """How to serve a model behind an existing endpoint: its own settings, with the flags' backend options and
    timeout."""
    return EndpointSettings(
        image=endpoint.image or DEFAULT_IMAGE,
        instance_type=endpoint.instance_type or "local",
        options=options_of(args, backend.name),
        **({"startup_timeout": args.timeout} if args.timeout else {}),
    )


def promote(args: Args, records: RecordStore) -> None:
    job = records.load(TrainingJob, args.job)
    if job.status != "Completed" or not job.model_data:
        raise LauncherError(f"training job {job.name} is {job.status}: only a completed job's model can be promoted")
    endpoint = records.load(Endpoint, args.endpoint) if records.exists(Endpoint, args.endpoint) else None
    backend = backend_of(args, records, Transforms, SwapsModels, name=endpoint.backend if endpoint else job.backend)
    data = args.holdout or test_split(job.channels)
    if data is None:
        raise LauncherError(f"job {job.name} read no test split on this machine: give --holdout DIR")
    name = new_name(records, Promotion, None, f"{JOB_PREFIX}-promotion")
    folder = args.workdir / "promotions" / name
    champion = promotion.served_endpoint(backend, args.endpoint, promotion.dataset_classes(data), folder)
    evaluation = TransformSettings(
        image=champion.image or DEFAULT_IMAGE,
        instance_type=champion.instance_type or "local",
        options=options_of(args, backend.name),
    )
    promotion.contest(
        backend,
        champion,
        job,
        data,
        promotion.Rule(args.min_improvement),
        evaluation,
        swap_settings(args, backend, champion),
        name,
        force=args.force,
    )


def rollback(args: Args, records: RecordStore) -> None:
    if args.region and not records.exists(Endpoint, args.endpoint):  # the shared record: SageMaker's registry
        from launcher.backends.sagemaker import Aws
        from launcher.loop import sagemaker_pipeline

        sagemaker_pipeline.rollback(Aws(args.region), args.endpoint, list(args.rollback_alarms or ()))
        return
    endpoint = records.load(Endpoint, args.endpoint)
    backend = backend_of(args, records, SwapsModels, name=endpoint.backend)
    name = new_name(records, Promotion, None, f"{JOB_PREFIX}-rollback")
    promotion.rollback(backend, endpoint, swap_settings(args, backend, endpoint), name)


def ui(args: Args, _records: RecordStore) -> None:
    tracker = tracker_of(args)
    experiment = tracker.find_experiment(getattr(args, "tracking.experiment"))
    tracking_ui.serve(tracker.uri, args.port, tracker.artifact_root, args.workdir / "mlflow-ui.log", experiment)


def lineage(args: Args, records: RecordStore) -> None:
    try:
        chain = lineage_chain(records, args.name)
    except LauncherError:
        if not args.region:
            raise
        from launcher.backends.sagemaker import Aws
        from launcher.loop import sagemaker_pipeline

        chain = sagemaker_pipeline.registry_chain(Aws(args.region), args.name)
    if args.json:
        print(json.dumps([{"step": step, **facts} for step, facts in chain], indent=2, default=str))
    else:
        print(format_chain(chain))


def pipeline(args: Args, _records: RecordStore) -> None:
    """`launcher pipeline ACTION`: the retrain loop as a SageMaker Pipeline (launcher.loop.sagemaker_pipeline)."""
    from launcher.backends.sagemaker import MANIFEST_PREFIX, NAME, Aws, AwsSettings, SageMakerOptions
    from launcher.lineage import code_revision
    from launcher.loop import PipelinePlan, sagemaker_pipeline

    options = SageMakerOptions.of(options_of(args, NAME))
    putting = args.pipeline_command == "put"
    aws_settings = AwsSettings.resolve(options, needs_bucket=putting, needs_role=putting)
    aws = Aws(aws_settings.region)
    if args.pipeline_command == "start":
        arn = sagemaker_pipeline.start(aws, args.name, args.data, args.min_improvement)
        if args.wait:
            sagemaker_pipeline.wait(aws, arn)
            sagemaker_pipeline.status(aws, args.name, arn)
        else:
            say(f"follow it: launcher pipeline status {args.name} --region {aws.region}")
    elif args.pipeline_command == "status":
        sagemaker_pipeline.status(aws, args.name, args.execution)
    elif args.pipeline_command == "stop":
        sagemaker_pipeline.stop(aws, args.name)
    else:
        config = job_config(args)
        if config.tuning is None:
            raise LauncherError("a pipeline tunes: give a --config whose `tuning` section has ranges (docs/tuning.md)")
        if "training" in config.channels:
            say(f"the config's data ({config.channels['training']}) is not part of a pipeline: give each execution its "
                f"own with `launcher pipeline start {args.name} --data ...`")  # fmt: skip
        output = (config.output or f"{S3_SCHEME}{aws_settings.bucket}/{JOB_PREFIX}").rstrip("/")
        training = TrainingSpec(
            job_name=args.name,
            channels=config.channels,
            hyperparameters={**config.hyperparameters, **DIAGNOSTICS},
            output_path=output,
            image=default_image(config.image),
            instance_type=config.instance_type or "ml.m5.xlarge",
            instance_count=config.instance_count or 1,
            options=options,
        )
        plan = PipelinePlan(
            name=args.name,
            endpoint=args.endpoint,
            tuning=TuningSpec.of(config.tuning, args.name, training),
            role=aws_settings.role,
            output_path=output,
            datasets=args.on_new_data or f"{S3_SCHEME}{aws_settings.bucket}/{MANIFEST_PREFIX}/",
            evaluation_instance_type=args.evaluation_instance_type,
            endpoint_instance_type=args.endpoint_instance_type or config.deploy.get("instance_type") or "ml.m5.xlarge",
            min_improvement=args.min_improvement,
            code_revision=code_revision(),
            inference_ami_version=options.inference_ami_version,
            serving_environment=EndpointSettings(workers=config.deploy.get("workers")).serving_environment(),
        )
        triggers = None
        if args.on_new_data or args.schedule:
            role = args.trigger_role or aws_settings.role
            triggers = sagemaker_pipeline.Triggers(role, on_new_data=bool(args.on_new_data), schedule=args.schedule)
        sagemaker_pipeline.put(aws, plan, args.workdir, triggers)
