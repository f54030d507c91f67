"""Train and serve a torchvision ResNet image classifier under the SageMaker container contract."""
