"""Names fixed by the SageMaker container contracts (files, folders, environment variables), kept in one place."""

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"

# Files and folders relative to the base dir (training).
HYPERPARAMETERS_FILE = "input/config/hyperparameters.json"
RESOURCE_CONFIG_FILE = "input/config/resourceconfig.json"
INPUT_DATA_CONFIG_FILE = "input/config/inputdataconfig.json"
INPUT_DATA_DIR = "input/data"
MODEL_DIR = "model"
OUTPUT_DATA_DIR = "output/data"
FAILURE_FILE = "output/failure"
SUCCESS_FILE = "output/success"
CHECKPOINT_DIR = "checkpoints"  # synced with checkpoint_s3_uri by SageMaker (spot training)
TRAINING_JOB_NAME_ENV = "TRAINING_JOB_NAME"  # set by SageMaker (and local mode) in every training container

# Environment variables the sagemaker-training toolkit exposes; they win over the files.
MODEL_DIR_ENV = "SM_MODEL_DIR"
OUTPUT_DATA_DIR_ENV = "SM_OUTPUT_DATA_DIR"
CHANNEL_ENV_PREFIX = "SM_CHANNEL_"
HOSTS_ENV = "SM_HOSTS"
CURRENT_HOST_ENV = "SM_CURRENT_HOST"
NUM_GPUS_ENV = "SM_NUM_GPUS"
NETWORK_INTERFACE_ENV = "SM_NETWORK_INTERFACE_NAME"

# Script mode: the SDK names the user's entry point here; the training toolkit then runs it.
USER_PROGRAM_ENV = "SAGEMAKER_PROGRAM"
USER_PROGRAM_HYPERPARAMETER = "sagemaker_program"

# SageMaker shows the first 1024 characters of the failure file as FailureReason.
FAILURE_REASON_LIMIT = 1024

# Hyperparameter keys that SageMaker and its tuner add on their own.
PLATFORM_HYPERPARAMETER_PREFIXES = ("sagemaker_", "_tuning_objective_metric")

# Serving.
MODEL_SERVER_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
DEFAULT_MODEL_SERVER_PORT = 8080
MODEL_SERVER_WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MAX_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
