"""The `sagemaker` backend: training jobs and endpoints on Amazon SageMaker with the image pushed to ECR (`make push`).

Inputs are S3 prefixes (local folders are uploaded first); artifacts land where SageMaker puts them,
`<output>/<job>/output/{model,output}.tar.gz` in S3. An endpoint's model, endpoint config and endpoint all take
the endpoint's name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from launcher import contract, lineage, transform
from launcher.backends import (
    BackendOptions,
    DeploySpec,
    SwapsModels,
    TrainingSpec,
    Transforms,
    TransformSpec,
    TunesAsService,
)
from launcher.backends.sagemaker import api, datasets, tuning
from launcher.backends.sagemaker.options import NAME, AwsSettings, SageMakerOptions
from launcher.backends.sagemaker.training import (
    S3_PREFIX,
    check_gpu_generation,
    check_image_and_instance,
    prepare_training,
    record_outcome,
)
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.progress import say
from launcher.records import Endpoint, TrainingJob, TransformJob, TuningRun
from launcher.tuning import TuningSpec

DEFAULT_ENDPOINT_INSTANCE_TYPE = "ml.m5.large"
ENDPOINT_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")  # DescribeEndpoint's busy statuses
BLUE_GREEN_BAKING_SECONDS = 300  # a promotion keeps the old fleet this long, for alarms to act
# The image's torch needs CUDA 13, so NVIDIA driver 580: SageMaker's inference hosts run 470-550 unless the endpoint
# config asks for this AMI. "auto" asks for it on GPU instance types only; "none" leaves SageMaker's default.
GPU_INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"
GPU_FAMILIES = ("ml.g", "ml.p")


def endpoint_ami_version(instance_type: str, requested: str) -> str | None:
    """The InferenceAmiVersion of an endpoint's variant: `auto` gives GPU instance types the AMI with driver 580
    and CPU types none; `none` gives none; anything else must be a version botocore knows."""
    check_gpu_generation(instance_type)
    if requested == "auto":
        return GPU_INFERENCE_AMI if instance_type.startswith(GPU_FAMILIES) else None
    if requested == "none":
        return None
    known = api.inference_ami_versions()
    if requested not in known:
        raise LauncherError(
            f"unknown inference AMI version {requested!r}; SageMaker knows auto, none, {', '.join(known)}"
        )
    return requested


def model_data_in_s3(session: api.Aws, model_data: str, bucket: str, key_prefix: str) -> str:
    """The model's S3 URI: as given, or a local model.tar.gz uploaded to s3://<bucket>/<key_prefix>/."""
    if model_data.startswith(S3_SCHEME):
        return model_data
    path = Path(model_data).resolve()
    if not path.is_file():
        raise LauncherError(f"no model.tar.gz at {path} (give a training job's name, a file or an s3:// URI)")
    say(f"uploading {path} to {S3_SCHEME}{bucket}/{key_prefix}")
    return api.upload_file(session, path, bucket, f"{key_prefix}/{path.name}")


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    return bucket, key


def transform_ami_version(instance_type: str, requested: str | None) -> str | None:
    """TransformAmiVersion for a transform's hosts. SageMaker's batch hosts run NVIDIA driver 470 or 535, too old
    for the image's CUDA 13, so a GPU type needs a version the user names; a CPU type needs none."""
    check_gpu_generation(instance_type)
    if requested or not instance_type.startswith(GPU_FAMILIES):
        return requested
    raise LauncherError(
        f"{instance_type} is a GPU type, and SageMaker's batch transform hosts run NVIDIA driver 470 or 535 "
        "(TransformAmiVersion al2-ami-sagemaker-batch-gpu-470 or -535), while the image's torch needs CUDA 13 "
        "(driver 580): use a CPU type such as ml.m5.xlarge, or --transform-ami-version with a version that has "
        "driver 580 or newer"
    )


def transform_manifest(
    session: api.Aws, spec: TransformSpec, files: list[str], bucket: str
) -> tuple[bytes, dict[str, str]]:
    """The transform's ManifestFile, and each file's place under its prefix (where its `.out` lands under the
    output): images of this machine stored once per content (`datasets`), or those under an s3:// input."""
    if spec.input.startswith(S3_SCHEME):
        entries = {file: file for file in files}
        return json.dumps([{"prefix": spec.input.rstrip("/") + "/"}, *files]).encode(), entries
    root = Path(spec.input)
    listing = [{"path": f, "bytes": (root / f).stat().st_size, "sha256": lineage.file_sha256(root / f)} for f in files]
    entries = datasets.store_files(session, bucket, f"transform {spec.name}", root, listing)
    return datasets.manifest(bucket, [entries[file] for file in files]), entries


def collect_outputs(
    session: api.Aws,
    output: str,
    entries: dict[str, str],
    keep_logits: bool,
    predictions: transform.Predictions,
    progress: transform.Progress,
) -> None:
    """Each file's answer from the `.out` object of its manifest entry under `output`."""
    bucket, prefix = split_s3_uri(output + "/")
    keys = {key[len(prefix) :]: key for key in api.s3_keys(session, bucket, prefix)}

    def read(file: str) -> bytes | None:
        key = keys.get(f"{entries[file]}.out")
        return None if key is None else api.get_object(session, bucket, key)

    progress.begin()
    missing = "the transform job wrote no answer for it"
    transform.add_out_files(list(entries), read, keep_logits, predictions, progress, missing)


class SageMakerBackend(SwapsModels, Transforms, TunesAsService):
    name = NAME
    Options = SageMakerOptions

    def settings(
        self, options: BackendOptions, job_name: str | None = None, near: str | None = None, **needs: bool
    ) -> AwsSettings:
        """The AWS settings for a spec: its options, else the region of the model's training job (or `near`), else
        the environment's."""
        job = (
            self.records.load(TrainingJob, job_name)
            if job_name and self.records.exists(TrainingJob, job_name)
            else None
        )
        return AwsSettings.resolve(SageMakerOptions.of(options), region=near or (job.region if job else None), **needs)

    def default_endpoint_instance_type(self, training_instance_type: str | None) -> str:
        return DEFAULT_ENDPOINT_INSTANCE_TYPE  # a training GPU is rarely what an endpoint needs

    def launch(self, spec: TrainingSpec) -> TrainingJob:
        """Upload the local channels and start the job on SageMaker."""
        prepared = prepare_training(spec, spec.job_name)
        api.start_training_job(prepared.session, prepared.request)
        artifacts = f"{prepared.output_path}/{spec.job_name}/output"
        say(f"training job {spec.job_name} started on SageMaker in {prepared.aws.region}")
        return spec.record(
            self.name,
            region=prepared.aws.region,
            role=prepared.aws.role,
            channels=prepared.channels,
            sagemaker_debugger=SageMakerOptions.of(spec.options).sagemaker_debugger,
            max_run=SageMakerOptions.of(spec.options).max_run,
            spot=prepared.spot,
            model_data=f"{artifacts}/{contract.MODEL_ARTIFACT}",
            output_data=f"{artifacts}/{contract.OUTPUT_ARTIFACT}",
        )

    def run_to_end(self, job: TrainingJob, spec: TrainingSpec) -> dict[str, float]:
        say(f"following the log of training job {job.name} (Ctrl-C stops following, not the job)")
        return record_outcome(job, api.follow_training_job(api.Aws(job.region), job.name))

    def interrupted(self, job: TrainingJob) -> None:
        """The job goes on on SageMaker; its record stays InProgress."""
        say(
            f"training job {job.name} keeps running on SageMaker; stop it with: "
            f"aws sagemaker stop-training-job --training-job-name {job.name} --region {job.region}"
        )

    def deploy(self, spec: DeploySpec) -> Endpoint:
        check_image_and_instance(spec.image, spec.instance_type)
        options = SageMakerOptions.of(spec.options)
        ami_version = endpoint_ami_version(spec.instance_type, options.inference_ami_version)
        aws = self.settings(options, spec.job_name, needs_bucket=not spec.model_data.startswith(S3_SCHEME))
        session = api.Aws(aws.region)
        model_data = model_data_in_s3(session, spec.model_data, aws.bucket, f"{S3_PREFIX}/{spec.endpoint_name}")
        record = spec.record(
            self.name,
            region=aws.region,
            endpoint_name=spec.endpoint_name,
            model_name=spec.endpoint_name,
            endpoint_config_name=spec.endpoint_name,
            inference_ami_version=ami_version,
        )
        record.model_data = model_data
        self.records.save(record)
        hosting = api.Hosting(
            spec.image, model_data, aws.role, spec.serving_environment(), spec.instance_type, ami_version
        )
        try:
            api.create_endpoint(session, spec.endpoint_name, hosting)
        except LauncherError as err:
            record.status, record.failure_reason = "Failed", str(err)
            self.records.save(record)
            raise LauncherError(f"{err}\n`launcher stop {spec.endpoint_name}` deletes what was created") from err
        say(
            f"endpoint {spec.endpoint_name} is being created on SageMaker in {aws.region} (several minutes; Ctrl-C "
            f"stops waiting, not the endpoint; `launcher stop {spec.endpoint_name}` deletes it)"
        )
        description = self._wait_for_endpoint(session, record)
        if description["EndpointStatus"] != "InService":
            reason = description.get("FailureReason", "no reason given")
            record.failure_reason = reason
            self.records.save(record)
            raise LauncherError(
                f"endpoint {spec.endpoint_name} is {description['EndpointStatus']}: {reason}; its model, endpoint "
                f"config and endpoint remain until `launcher stop {spec.endpoint_name}`"
            )
        say(f"endpoint {spec.endpoint_name} is in service")
        record.generation, record.environment = 1, spec.serving_environment()
        record.now_serving("deployed", model_name=record.model_name, endpoint_config_name=record.endpoint_config_name)
        self.records.save(record)
        return record

    def swap_model(self, endpoint: Endpoint, spec: DeploySpec, reason: str) -> Endpoint:
        """UpdateEndpoint to a new endpoint config as a blue/green deployment (`api.update_endpoint`), with the
        options' `rollback_alarms` feeding its auto-rollback. SageMaker keeps the old fleet serving until the new one
        passes its health checks, so no request fails; a rollback or failure leaves the old model serving, and says
        so."""
        model_data, job_name = spec.model_data, spec.job_name
        alarms = list(SageMakerOptions.of(spec.options).rollback_alarms)
        aws = self.settings(spec.options, near=endpoint.region, needs_bucket=not model_data.startswith(S3_SCHEME))
        session = api.Aws(aws.region)
        generation = (endpoint.generation or 1) + 1
        name = f"{endpoint.endpoint_name}-{generation}"[-63:]
        model_data = model_data_in_s3(session, model_data, aws.bucket, f"{S3_PREFIX}/{name}")
        hosting = api.Hosting(
            endpoint.image,
            model_data,
            aws.role,
            endpoint.environment,
            endpoint.instance_type,
            endpoint.inference_ami_version,
        )
        api.update_endpoint(session, endpoint.endpoint_name, name, hosting, alarms, BLUE_GREEN_BAKING_SECONDS)
        say(
            f"endpoint {endpoint.name} is being updated to {name} (blue/green: the current model serves until the "
            f"new one passes its health checks, then {BLUE_GREEN_BAKING_SECONDS} s of baking"
            + (f" watched by alarms {', '.join(alarms)}" if alarms else "")
            + ")"
        )
        description = self._wait_for_endpoint(session, endpoint)
        if description["EndpointConfigName"] != name or description["EndpointStatus"] != "InService":
            self.records.save(endpoint)
            raise LauncherError(
                f"endpoint {endpoint.name} was not updated to {name} ({description['EndpointStatus']}: "
                f"{description.get('FailureReason', 'rolled back')}); it serves {endpoint.model_data} as before"
            )
        endpoint.generation, endpoint.model_data, endpoint.job_name = generation, model_data, job_name
        endpoint.model_name, endpoint.endpoint_config_name = name, name
        endpoint.lineage = {**(endpoint.lineage or {}), "job_name": job_name, "model_sha256": None}
        endpoint.now_serving(reason, model_name=name, endpoint_config_name=name)
        self.records.save(endpoint)
        say(f"endpoint {endpoint.name} serves {model_data}")
        return endpoint

    def _wait_for_endpoint(self, session: api.Aws, record: Endpoint) -> dict[str, Any]:
        """Poll DescribeEndpoint until the endpoint is no longer being created or updated; the record follows each
        change of its status and config."""

        def changed(description: dict[str, Any]) -> None:
            record.status, record.endpoint_config_name = (
                description["EndpointStatus"],
                description["EndpointConfigName"],
            )
            self.records.save(record)

        return api.poll(
            lambda: api.describe_endpoint(session, record.endpoint_name),
            lambda description: description["EndpointStatus"] in ENDPOINT_BUSY,
            lambda description: f"{description['EndpointStatus']} {description['EndpointConfigName']}",
            changed,
        )

    # -- batch transform ------------------------------------------------------------------------------------
    def check_model_data(self, model_data: str) -> None:
        """A model here or in S3: both are served."""

    def model_archive(
        self, model_data: str, folder: Path, options: BackendOptions, job_name: str | None = None
    ) -> Path:
        if not model_data.startswith(S3_SCHEME):
            return Path(model_data)
        folder.mkdir(parents=True, exist_ok=True)
        region = self.settings(options, job_name, needs_bucket=False, needs_role=False).region
        return api.download(model_data, folder / contract.MODEL_ARTIFACT, region)

    def transform_inputs(self, spec: TransformSpec) -> list[str]:
        """A local folder's images, or those under an s3:// prefix (by extension, any depth)."""
        if not spec.input.startswith(S3_SCHEME):
            return super().transform_inputs(spec)
        aws = self.settings(spec.options, spec.job_name, needs_bucket=False)
        bucket, prefix = split_s3_uri(spec.input.rstrip("/") + "/")
        keys = api.s3_keys(api.Aws(aws.region), bucket, prefix)
        images = (key for key in keys if os.path.splitext(key)[1].lower() in transform.CONTENT_TYPES)
        files = sorted(key[len(prefix) :] for key in images)
        if not files:
            raise LauncherError(f"no JPEG or PNG objects (.jpg, .jpeg, .png) under {spec.input}")
        return files

    def classify(
        self,
        spec: TransformSpec,
        job: TransformJob,
        files: list[str],
        predictions: transform.Predictions,
        progress: transform.Progress,
    ) -> None:
        """A SageMaker batch transform job over a manifest of `files`, one image per request; then each file's
        `.out` object read back into `predictions`."""
        check_image_and_instance(spec.image, spec.instance_type)
        ami_version = transform_ami_version(spec.instance_type, SageMakerOptions.of(spec.options).transform_ami_version)
        input_on_host = not spec.input.startswith(S3_SCHEME)
        needs_bucket = input_on_host or not spec.model_data.startswith(S3_SCHEME)
        aws = self.settings(spec.options, spec.job_name, needs_bucket=needs_bucket)
        session = api.Aws(aws.region)
        name = f"{spec.name[:56]}-{time.strftime('%H%M%S')}"  # a new SageMaker job (and model) for each run
        model_data = model_data_in_s3(session, spec.model_data, aws.bucket, f"{S3_PREFIX}/{spec.name}")
        bucket = aws.bucket or split_s3_uri(spec.input)[0]
        manifest, entries = transform_manifest(session, spec, files, bucket)
        manifest_uri = api.put_object(session, bucket, f"{S3_PREFIX}/{spec.name}/{name}.manifest", manifest)
        output = f"{S3_SCHEME}{bucket}/{S3_PREFIX}/{spec.name}/output/{name}"
        job.transform_job_name, job.s3_output, job.region = name, output, aws.region
        self.records.save(job)
        hosting = api.Hosting(
            spec.image, model_data, aws.role, spec.serving_environment(), spec.instance_type, ami_version
        )
        api.create_model(session, name, hosting)
        try:
            source = {"S3DataType": "ManifestFile", "S3Uri": manifest_uri}
            api.create_transform_job(
                session, api.transform_request(name, hosting, source, transform.job_content_type(files), output)
            )
            say(
                f"transform job {name} started on SageMaker in {aws.region} ({len(files)} images on "
                f"{spec.instance_type}; Ctrl-C stops waiting, not the job)"
            )
            description = self._wait_for_transform(session, name)
            collect_outputs(session, output, entries, spec.logits, predictions, progress)
        finally:
            api.delete_model(session, name)
        if description["TransformJobStatus"] != "Completed":
            reason = description.get("FailureReason", "no reason given")
            say(f"transform job {name} {description['TransformJobStatus'].lower()}: {reason}")

    def _wait_for_transform(self, session: api.Aws, name: str) -> dict[str, Any]:
        return api.poll(
            lambda: api.describe_transform_job(session, name),
            lambda description: description["TransformJobStatus"] in ("InProgress", "Stopping"),
            lambda description: description["TransformJobStatus"],
            lambda description: say(f"transform job {name}: {description['TransformJobStatus']}"),
        )

    # -- tuning ---------------------------------------------------------------------------------------------------
    def tune(self, spec: TuningSpec, folder: Path, parent_run: str | None) -> TuningRun:
        """A SageMaker tuning job (`tuning`), followed to its end."""
        return tuning.tune_on_sagemaker(spec, self.records, folder, tracker=self.tracker, parent_run=parent_run)

    def predict(self, endpoint: Endpoint, body: bytes, content_type: str) -> Any:
        session = api.Aws(endpoint.region)
        return api.invoke_endpoint(session, endpoint.endpoint_name, body, content_type)

    def stop(self, endpoint: Endpoint) -> None:
        session = api.Aws(endpoint.region)
        served = endpoint.history or [
            {"endpoint_config_name": endpoint.endpoint_config_name, "model_name": endpoint.model_name}
        ]
        gone = api.delete_endpoint(
            session,
            endpoint_name=endpoint.endpoint_name,
            config_names=[entry["endpoint_config_name"] for entry in served],
            model_names=[entry["model_name"] for entry in served],
        )
        if gone:
            say(f"already deleted: {', '.join(gone)}")
        endpoint.status, endpoint.deleted = "Deleted", time.time()
        self.records.save(endpoint)
