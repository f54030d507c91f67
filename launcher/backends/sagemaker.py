"""The `sagemaker` backend: training jobs on Amazon SageMaker with the image pushed to ECR (`make push`).

Inputs are S3 prefixes (local folders are uploaded first); artifacts land where SageMaker puts them,
`<output>/<job>/output/{model,output}.tar.gz` in S3. Serving on SageMaker is not supported yet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import contract, sdk
from launcher.backends.base import S3_SCHEME, AwsOptions, Backend, DeploySpec, TrainingSpec
from launcher.errors import LauncherError
from launcher.progress import say

ROLE_ENV = "IMGCLF_SAGEMAKER_ROLE"
BUCKET_ENV = "IMGCLF_S3_BUCKET"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
S3_PREFIX = "imgclf"  # default artifacts: s3://<bucket>/imgclf/<job>/output/; uploads: .../<job>/input/<channel>
# The metric definitions' names of the final test metrics -> the keys of a record's test_metrics.
TEST_METRICS = {"test accuracy": "accuracy", "average test loss": "loss"}


@dataclass(frozen=True)
class AwsSettings:
    role: str
    bucket: str
    region: str

    @classmethod
    def resolve(cls, options: AwsOptions, environ: Mapping[str, str] = os.environ) -> AwsSettings:
        """The command line's values, else the environment's; a LauncherError names whatever is missing."""
        role = options.role or environ.get(ROLE_ENV)
        bucket = options.bucket or environ.get(BUCKET_ENV)
        region = options.region or next((environ[name] for name in REGION_ENVS if environ.get(name)), None)
        needs = (
            (role, f"an IAM role for the job (--role ARN or ${ROLE_ENV})"),
            (bucket, f"an S3 bucket for artifacts and uploaded data (--bucket NAME or ${BUCKET_ENV})"),
            (region, f"an AWS region (--region NAME or ${' or $'.join(REGION_ENVS)})"),
        )
        missing = [need for value, need in needs if not value]
        if missing:
            raise LauncherError("the sagemaker backend needs " + "; ".join(missing))
        return cls(role=role, bucket=bucket, region=region)


def check_training_spec(spec: TrainingSpec) -> None:
    """SageMaker runs ml.* instances with an image from ECR; say so before anything is uploaded."""
    if not spec.instance_type.startswith("ml."):
        raise LauncherError(
            f"the sagemaker backend needs a SageMaker instance type such as ml.g4dn.xlarge (GPU) or ml.m5.xlarge "
            f"(CPU), not {spec.instance_type!r}: pass --instance-type"
        )
    if ".dkr.ecr." not in spec.image:
        raise LauncherError(
            f"SageMaker pulls training images from ECR, not {spec.image!r}: push the image with `make push` and "
            "pass --image <account>.dkr.ecr.<region>.amazonaws.com/imgclf:<tag>"
        )
    if spec.output_path is not None and not spec.output_path.startswith(S3_SCHEME):
        raise LauncherError(
            f"the sagemaker backend writes artifacts to S3: give --output an s3:// URI, not {spec.output_path}"
        )


def upload_local_channels(session: Any, bucket: str, job_name: str, channels: dict[str, str]) -> dict[str, str]:
    """Every channel as an S3 URI: s3:// ones as they are, local folders or files uploaded to
    s3://<bucket>/imgclf/<job>/input/<channel> (all checked before anything is uploaded)."""
    local = {name: Path(source).resolve() for name, source in channels.items() if not source.startswith(S3_SCHEME)}
    for name, path in local.items():
        if not path.exists():
            raise LauncherError(f"channel {name!r}: {path} does not exist (give a local path or an s3:// URI)")
    uploaded = {}
    for name, path in local.items():
        key_prefix = f"{S3_PREFIX}/{job_name}/input/{name}"
        say(f"channel {name!r}: uploading {path} to {S3_SCHEME}{bucket}/{key_prefix}")
        uploaded[name] = sdk.upload(session, path, bucket, key_prefix)
    return {name: uploaded.get(name, source) for name, source in channels.items()}


class SageMakerBackend(Backend):
    name = "sagemaker"

    def train(self, spec: TrainingSpec) -> dict[str, Any]:
        check_training_spec(spec)
        aws = AwsSettings.resolve(spec.aws)
        output_path = (spec.output_path or f"{S3_SCHEME}{aws.bucket}/{S3_PREFIX}").rstrip("/")
        session = sdk.aws_session(aws.region)
        channels = upload_local_channels(session, aws.bucket, spec.job_name, spec.channels)
        artifacts = f"{output_path}/{spec.job_name}/output"
        estimator = sdk.estimator(
            session,
            image=spec.image,
            role=aws.role,
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            output_path=output_path,
            hyperparameters=spec.hyperparameters,
            **sdk.debugger_options(spec.sagemaker_debugger),
        )
        sdk.start_training_job(estimator, channels, spec.job_name)
        record = {
            "name": spec.job_name,
            "backend": self.name,
            "status": "InProgress",
            "created": time.time(),
            "region": aws.region,
            "role": aws.role,
            "image": spec.image,
            "instance_type": spec.instance_type,
            "instance_count": spec.instance_count,
            "hyperparameters": spec.hyperparameters,
            "channels": channels,
            "sagemaker_debugger": spec.sagemaker_debugger,
            "model_data": f"{artifacts}/{contract.MODEL_ARTIFACT}",
            "output_data": f"{artifacts}/{contract.OUTPUT_ARTIFACT}",
        }
        self.records.save("jobs", record)
        say(
            f"training job {spec.job_name} started on SageMaker in {aws.region}; following its log "
            "(Ctrl-C stops following, not the job)"
        )
        try:
            description = sdk.follow_training_job(session, spec.job_name)
        except KeyboardInterrupt:
            say(
                f"training job {spec.job_name} keeps running on SageMaker; stop it with: "
                f"aws sagemaker stop-training-job --training-job-name {spec.job_name} --region {aws.region}"
            )
            raise
        record.update(status=description["TrainingJobStatus"], ended=time.time())
        if "FailureReason" in description:
            record["failure_reason"] = description["FailureReason"]
        final = {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", [])}
        record["test_metrics"] = {key: final[name] for name, key in TEST_METRICS.items() if name in final} or None
        self.records.save("jobs", record)
        return record

    def deploy(self, spec: DeploySpec) -> dict[str, Any]:
        raise LauncherError("deploying is not yet supported on the sagemaker backend")

    def predict(self, endpoint: dict[str, Any], body: bytes, content_type: str) -> Any:
        raise LauncherError("predicting is not yet supported on the sagemaker backend")

    def stop(self, endpoint: dict[str, Any]) -> None:
        raise LauncherError("stopping endpoints is not yet supported on the sagemaker backend")
