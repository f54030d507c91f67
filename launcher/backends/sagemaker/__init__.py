"""The sagemaker backend: `backend` (jobs, endpoints and transforms on Amazon SageMaker), `api` (every SageMaker, S3
and CloudWatch Logs request as boto3 sends it, and the AWS settings and errors), `datasets` (local data stored in
S3 once per content, a dataset version as a manifest). Its tuning jobs: `launcher.tuning.sagemaker_tuner`."""
