"""The sagemaker backend: `backend` (jobs, endpoints and transforms on Amazon SageMaker), `options` (what only it
understands, and the AWS settings they resolve to), `training` (a training job's checks, inputs and request),
`tuning` (SageMaker's tuning jobs), `api` (every SageMaker, S3 and CloudWatch Logs request as boto3 sends it),
`datasets` (local data stored in S3 once per content, a dataset version as a manifest). SageMaker local mode (the
`local` backend) sends the same requests: they are part of this package's face."""

from launcher.backends.sagemaker.api import (
    Hosting,
    download,
    endpoint_config_request,
    model_request,
    training_request,
    transform_request,
)
from launcher.backends.sagemaker.backend import DEFAULT_ENDPOINT_INSTANCE_TYPE, SageMakerBackend
from launcher.backends.sagemaker.options import BUCKET_ENV, MAX_RUN_SECONDS, REGION_ENVS, ROLE_ENV, SageMakerOptions

__all__ = [
    "BUCKET_ENV",
    "DEFAULT_ENDPOINT_INSTANCE_TYPE",
    "MAX_RUN_SECONDS",
    "REGION_ENVS",
    "ROLE_ENV",
    "Hosting",
    "SageMakerBackend",
    "SageMakerOptions",
    "download",
    "endpoint_config_request",
    "model_request",
    "training_request",
    "transform_request",
]
