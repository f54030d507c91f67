"""The retrain loop — tune, train, challenge the served model, promote or keep — made of `launcher.steps` and
judged by `launcher.promotion`'s rule. `terminal` runs it from one terminal (`launcher run`)."""

from launcher.loop.terminal import DIAGNOSTICS, Challenge, RunPlan, TerminalLoop, sample_image, test_split

__all__ = ["DIAGNOSTICS", "Challenge", "RunPlan", "TerminalLoop", "sample_image", "test_split"]
