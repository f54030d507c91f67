"""Hyperparameter tuning: what a tuning run is (`spec`), Optuna on this machine with each trial a job of the
backend (`optuna_tuner`), SageMaker's own tuning jobs (`sagemaker_tuner`), and the results both write (`results`)."""
