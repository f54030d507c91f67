"""The retrain loop — tune, train, challenge the served model, promote or keep — made of `launcher.steps` and
judged by `launcher.promotion`'s rule. `terminal` runs it from one terminal (`launcher run`); `sagemaker_pipeline`
has SageMaker run it (`launcher pipeline`), as the definition `pipeline_definition` builds."""

from launcher.loop import sagemaker_pipeline
from launcher.loop.pipeline_definition import PipelinePlan
from launcher.loop.terminal import DIAGNOSTICS, Challenge, RunPlan, TerminalLoop, sample_image, test_split

__all__ = [
    "DIAGNOSTICS",
    "Challenge",
    "PipelinePlan",
    "RunPlan",
    "TerminalLoop",
    "sagemaker_pipeline",
    "sample_image",
    "test_split",
]
