"""A SageMaker training job: the checks before anything is sent, its inputs stored in S3, its CreateTrainingJob
request (the training job's and every trial's of a tuning job), and its outcome read back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.backends.sagemaker import api, datasets
from launcher.backends.sagemaker.options import AwsSettings, SageMakerOptions
from launcher.contract import S3_SCHEME
from launcher.errors import LauncherError
from launcher.records import TrainingJob
from launcher.specs import TrainingSpec

S3_PREFIX = "imgclf"  # default artifacts: s3://<bucket>/imgclf/<job>/output/; uploads: .../<job>/input/<channel>
# GPUs without kernels in the image's torch build (sm_75 and newer): K80 (ml.p2) and V100 (ml.p3).
UNSUPPORTED_GPU_FAMILIES = ("ml.p2.", "ml.p3.", "ml.p3dn.")


def check_image_and_instance(image: str, instance_type: str) -> None:
    """SageMaker runs ml.* instances with an image from ECR; say so before anything is sent."""
    if not instance_type.startswith("ml."):
        raise LauncherError(
            f"the sagemaker backend needs a SageMaker instance type such as ml.g4dn.xlarge (GPU) or ml.m5.xlarge "
            f"(CPU), not {instance_type!r}: pass --instance-type"
        )
    if ".dkr.ecr." not in image:
        raise LauncherError(
            f"SageMaker pulls images from ECR, not {image!r}: push the image with `make push` and "
            "pass --image <account>.dkr.ecr.<region>.amazonaws.com/imgclf:<tag>"
        )


def check_gpu_generation(instance_type: str) -> None:
    if instance_type.startswith(UNSUPPORTED_GPU_FAMILIES):
        raise LauncherError(
            f"{instance_type} has K80 or V100 GPUs, which the image's torch (CUDA 13: T4 and newer) cannot run; "
            "use ml.g4dn, ml.g5, ml.g6, ml.p4d or ml.p5 instances, or a CPU type"
        )


def check_training_spec(spec: TrainingSpec) -> None:
    """Refuse what SageMaker would refuse, or the image could not use, before anything is uploaded."""
    check_image_and_instance(spec.image, spec.instance_type)
    check_gpu_generation(spec.instance_type)
    if spec.output_path is not None and not spec.output_path.startswith(S3_SCHEME):
        raise LauncherError(
            f"the sagemaker backend writes artifacts to S3: give --output an s3:// URI, not {spec.output_path}"
        )


def upload_host_channels(session: api.Aws, bucket: str, job_name: str, channels: dict[str, str]) -> dict[str, str]:
    """Every channel as an S3 URI: s3:// ones as they are, folders or files of this machine as the ManifestFile of
    their dataset version, uploading only what S3 does not hold yet (`datasets`; all checked first)."""
    local = {name: Path(source).resolve() for name, source in channels.items() if not source.startswith(S3_SCHEME)}
    for name, path in local.items():
        if not path.exists():
            raise LauncherError(f"channel {name!r}: {path} does not exist (give a local path or an s3:// URI)")
    uploaded = {name: datasets.store_channel(session, bucket, name, path) for name, path in local.items()}
    return {name: uploaded.get(name, source) for name, source in channels.items()}


@dataclass(frozen=True)
class PreparedTraining:
    """A training job's CreateTrainingJob request, ready to send, and where its inputs and outputs are."""

    aws: AwsSettings
    session: api.Aws
    request: dict[str, Any]
    channels: dict[str, str]  # every channel as an S3 URI
    output_path: str
    spot: dict[str, Any] | None  # spot training's max_wait and checkpoint_s3_uri; None: on-demand


def prepare_training(spec: TrainingSpec, name: str) -> PreparedTraining:
    """Check `spec`, upload its local channels to s3://<bucket>/imgclf/<name>/input/ and build its request.

    `name` is the training job's, or the tuning job's whose trials all run this job.
    """
    options = SageMakerOptions.of(spec.options)
    check_training_spec(spec)
    aws = AwsSettings.resolve(options)
    output_path = (spec.output_path or f"{S3_SCHEME}{aws.bucket}/{S3_PREFIX}").rstrip("/")
    session = api.Aws(aws.region)
    channels = upload_host_channels(session, aws.bucket, name, spec.channels)
    spot = None
    if options.spot:
        spot = {
            "max_wait": options.max_wait or 2 * options.max_run,
            "checkpoint_s3_uri": f"{S3_SCHEME}{aws.bucket}/{S3_PREFIX}/{name}/checkpoints",
        }
    request = api.training_request(spec, name, aws.role, output_path, channels, options.max_run, spot)
    request.update(api.debugger_request(options.sagemaker_debugger, aws.region, output_path))
    return PreparedTraining(aws, session, request, channels, output_path, spot)


def record_outcome(job: TrainingJob, description: dict[str, Any]) -> dict[str, float]:
    """A finished job's status and failure reason into its record, from DescribeTrainingJob; returns its final
    metric values (SageMaker read them from its log by the metric definitions)."""
    job.status = description["TrainingJobStatus"]
    job.failure_reason = description.get("FailureReason")
    ended = description.get("TrainingEndTime")
    job.ended = ended.timestamp() if ended else None
    return {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", [])}
