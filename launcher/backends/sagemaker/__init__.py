"""The sagemaker backend: `backend` (jobs, endpoints and transforms on Amazon SageMaker), `options` (what only it
understands, and the AWS settings they resolve to), `training` (a training job's checks, inputs and request),
`tuning` (SageMaker's tuning jobs), `api` (every SageMaker, S3 and CloudWatch Logs request as boto3 sends it),
`datasets` (local data stored in S3 once per content, a dataset version as a manifest), `pipelines` (a SageMaker
Pipeline's requests, for `launcher.loop`'s pipeline). SageMaker local mode (the
`local` backend) sends the same requests: they are part of this package's face."""

from launcher.backends.sagemaker import pipelines
from launcher.backends.sagemaker.api import (
    VOLUME_SIZE_GB,
    Aws,
    Hosting,
    download,
    endpoint_config_request,
    model_request,
    training_request,
    transform_request,
)
from launcher.backends.sagemaker.backend import (
    DEFAULT_ENDPOINT_INSTANCE_TYPE,
    SageMakerBackend,
    endpoint_ami_version,
    split_s3_uri,
)
from launcher.backends.sagemaker.datasets import MANIFEST_PREFIX, store_channel
from launcher.backends.sagemaker.options import (
    BUCKET_ENV,
    MAX_RUN_SECONDS,
    NAME,
    REGION_ENVS,
    ROLE_ENV,
    AwsSettings,
    SageMakerOptions,
)
from launcher.backends.sagemaker.training import check_training_spec
from launcher.backends.sagemaker.tuning import check_tuning_spec, tuning_request

__all__ = [
    "BUCKET_ENV",
    "DEFAULT_ENDPOINT_INSTANCE_TYPE",
    "MANIFEST_PREFIX",
    "MAX_RUN_SECONDS",
    "NAME",
    "REGION_ENVS",
    "ROLE_ENV",
    "VOLUME_SIZE_GB",
    "Aws",
    "AwsSettings",
    "Hosting",
    "SageMakerBackend",
    "SageMakerOptions",
    "check_training_spec",
    "check_tuning_spec",
    "download",
    "endpoint_ami_version",
    "endpoint_config_request",
    "model_request",
    "pipelines",
    "split_s3_uri",
    "store_channel",
    "training_request",
    "transform_request",
    "tuning_request",
]
