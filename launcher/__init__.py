"""Run training, deployment and prediction with the imgclf image on the process, local or SageMaker backend."""
