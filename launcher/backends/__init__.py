"""Where jobs and endpoints run: the interface and specs (`base`), this machine without Docker (`process`),
SageMaker local mode (`local`), SageMaker (`sagemaker`), and the backends by name (`registry`)."""
