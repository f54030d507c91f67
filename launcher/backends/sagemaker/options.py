"""What only the sagemaker backend understands, as one object the neutral specs carry (`spec.options`), and the AWS
settings it resolves to. Each field of `SageMakerOptions` is also the command line's flag of that name (`--max-run`,
`--rollback-alarms`, ...); other backends refuse them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from launcher.errors import LauncherError
from launcher.specs import BackendOptions

NAME = "sagemaker"
ROLE_ENV = "IMGCLF_SAGEMAKER_ROLE"
BUCKET_ENV = "IMGCLF_S3_BUCKET"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
MAX_RUN_SECONDS = 86400  # SageMaker's default limit on a training job's run time


@dataclass(frozen=True)
class SageMakerOptions(BackendOptions):
    role: str | None = None  # IAM role ARN the job or endpoint runs as; None: $IMGCLF_SAGEMAKER_ROLE
    bucket: str | None = None  # S3 bucket for artifacts and uploaded inputs; None: $IMGCLF_S3_BUCKET
    region: str | None = None  # None: that of the model's training job or endpoint, else $AWS_REGION
    # training
    spot: bool = False  # managed spot training
    max_run: int = MAX_RUN_SECONDS  # seconds a job may run
    max_wait: int | None = None  # spot: seconds to wait for capacity and run, >= max_run; None: 2 * max_run
    sagemaker_debugger: bool = False  # SageMaker Debugger's hook, rules and profiler
    # hosting
    inference_ami_version: str = "auto"  # the endpoint hosts' AMI (NVIDIA driver): auto, none or a version
    rollback_alarms: tuple[str, ...] = ()  # CloudWatch alarms that roll a model swap back
    transform_ami_version: str | None = None  # TransformAmiVersion (the batch hosts' NVIDIA driver)

    def __post_init__(self) -> None:
        """Refuse run limits SageMaker would refuse, when the options are made: before any upload or record."""
        if self.max_wait is not None and not self.spot:
            raise LauncherError("--max-wait applies to spot training only: add --spot, or leave --max-wait out")
        if self.max_run < 1:
            raise LauncherError(f"--max-run must be at least 1 second, not {self.max_run}")
        if self.spot and self.max_wait is not None and self.max_wait < self.max_run:
            raise LauncherError(
                f"--max-wait ({self.max_wait} s) must be at least --max-run ({self.max_run} s): it is the time to "
                "wait for spot capacity plus the time to run"
            )

    @classmethod
    def of(cls, options: BackendOptions) -> SageMakerOptions:
        """A spec's options as this backend's (the defaults where the spec carries none)."""
        return options if isinstance(options, cls) else cls()


@dataclass(frozen=True)
class AwsSettings:
    role: str
    bucket: str  # "" where nothing is uploaded (deploying a model already in S3)
    region: str

    @classmethod
    def resolve(
        cls,
        options: SageMakerOptions,
        environ: Mapping[str, str] = os.environ,
        *,
        region: str | None = None,
        needs_bucket: bool = True,
        needs_role: bool = True,
    ) -> AwsSettings:
        """The command line's values, else `region` (where the model is), else the environment's; a LauncherError
        names whatever is missing."""
        role = options.role or environ.get(ROLE_ENV)
        bucket = options.bucket or environ.get(BUCKET_ENV)
        region = options.region or region or next((environ[name] for name in REGION_ENVS if environ.get(name)), None)
        needs = (
            (role or not needs_role, f"an IAM role for the job (--role ARN or ${ROLE_ENV})"),
            (
                bucket or not needs_bucket,
                f"an S3 bucket for artifacts and uploaded data (--bucket NAME or ${BUCKET_ENV})",
            ),
            (region, f"an AWS region (--region NAME or ${' or $'.join(REGION_ENVS)})"),
        )
        missing = [need for value, need in needs if not value]
        if missing:
            raise LauncherError("the sagemaker backend needs " + "; ".join(missing))
        return cls(role=role or "", bucket=bucket or "", region=region)
