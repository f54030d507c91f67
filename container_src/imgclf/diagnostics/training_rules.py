"""Training rules, after SageMaker Debugger's built-in rules of the same names and defaults.

Where our semantics differ from AWS's description, the docstring says so.
"""

from __future__ import annotations

import math
from itertools import pairwise
from statistics import fmean
from typing import Any, ClassVar

from imgclf.diagnostics.evidence import Evidence
from imgclf.diagnostics.rule import Rule, RuleConfigError, RuleResult


class LossNotDecreasing(Rule):
    """The loss must fall from one window of `num_steps` steps to the next by at least `diff_percent` %.

    AWS compares single saved values; we compare the means of windows of `num_steps` steps, which is less
    noisy when every step is saved (values saved less often are their own windows, as in AWS's rule). `mode`
    defaults to TRAIN (AWS tries EVAL first): validation loss is judged by Overfit and Overtraining. A window
    whose mean rises by more than `increase_threshold_percent` % is reported as an increase, any other failure
    as a plateau.
    """

    name = "LossNotDecreasing"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {
        "num_steps": 10,
        "diff_percent": 0.1,
        "increase_threshold_percent": 5.0,
        "mode": "TRAIN",
    }

    def __init__(self, stop_on: bool | None = None, **parameters):
        super().__init__(stop_on, **parameters)
        if self.parameters["mode"] not in ("TRAIN", "EVAL"):
            raise RuleConfigError(f"rule {self.name} parameter mode must be TRAIN or EVAL")

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        series = evidence.trace.train_loss if p["mode"] == "TRAIN" else evidence.trace.valid_loss
        windows = _windows(series, p["num_steps"])
        if len(windows) < 2:
            return self.passed(f"fewer than two windows of {p['num_steps']} steps to compare yet")
        fired, increases = [], []
        for (_, before), (step, after) in pairwise(windows):
            if not math.isfinite(after) or after > before * (1 - p["diff_percent"] / 100):
                fired.append(step)
                if not math.isfinite(after) or after > before * (1 + p["increase_threshold_percent"] / 100):
                    increases.append(step)
        if not fired:
            return self.passed(f"the {p['mode'].lower()} loss fell in all {len(windows) - 1} windows compared")
        return self.fired(
            f"the mean {p['mode'].lower()} loss did not fall by {p['diff_percent']}% in {len(fired)} of "
            f"{len(windows) - 1} windows of {p['num_steps']} steps ({len(increases)} rose by more than "
            f"{p['increase_threshold_percent']}%)",
            fired,
            "check the learning rate (too low: a plateau; too high: increases) and that labels match the images",
            windows=[{"step": s, "mean_loss": v} for s, v in windows],
            increases=increases,
        )


def _windows(series: list[tuple[int, float]], num_steps: int) -> list[tuple[int, float]]:
    """(last step, mean) of consecutive windows, each holding the values saved within `num_steps` steps of its
    first; values saved further apart than that are windows of their own, as in AWS's rule. A window counts
    once the next one has begun."""
    windows, values, start, last = [], [], None, 0
    for step, value in series:
        if start is not None and step - start >= num_steps:
            windows.append((last, fmean(values) if all(math.isfinite(v) for v in values) else math.nan))
            values, start = [], None
        start = step if start is None else start
        values.append(value)
        last = step
    return windows


class Overfit(Rule):
    """Validation loss above training loss by more than `ratio_threshold` (relative), `patience` times in a row.

    We compare the mean losses of each validation pass and of the training since the previous one (AWS compares
    the losses at saved steps); passes whose first validation step is before `start_step` are not judged.
    """

    name = "Overfit"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {"start_step": 0, "patience": 1, "ratio_threshold": 0.1}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        phases = [phase for phase in evidence.trace.phases() if phase.step >= p["start_step"]]
        if not phases:
            return self.passed("no validation pass to compare yet")
        fired, run = [], 0
        ratios = []
        for phase in phases:
            ratio = (phase.valid_loss - phase.train_loss) / max(phase.train_loss, 1e-12)
            ratios.append({"step": phase.step, "train_loss": phase.train_loss, "valid_loss": phase.valid_loss,
                           "ratio": ratio})  # fmt: skip
            run = run + 1 if ratio > p["ratio_threshold"] else 0
            if run >= p["patience"]:
                fired.append(phase.step)
        if not fired:
            return self.passed(f"validation loss stayed within {p['ratio_threshold']:.0%} of training loss",
                               ratios=ratios)  # fmt: skip
        worst = max(ratios, key=lambda r: r["ratio"])
        return self.fired(
            f"validation loss exceeded training loss by more than {p['ratio_threshold']:.0%} in {len(fired)} of "
            f"{len(phases)} validation passes (worst {worst['ratio']:.0%} at step {worst['step']})",
            fired,
            "add data or augmentation, raise weight_decay, freeze the backbone, or train fewer epochs",
            ratios=ratios,
        )


class Overtraining(Rule):
    """Training went well (both losses reached a new optimum), then stopped improving.

    Fires when, after both losses have improved once, the training loss has not improved by `delta` (absolute)
    for `patience_train` validation passes, or the validation loss for `patience_validation` passes. AWS counts
    saved steps; we count validation passes (epochs), since per-batch losses are too noisy to judge step by step.
    """

    name = "Overtraining"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {"patience_train": 5, "patience_validation": 10, "delta": 0.1}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        phases = evidence.trace.phases()
        if not phases:
            return self.passed("no validation pass to judge yet")
        best_train, best_valid = phases[0].train_loss, phases[0].valid_loss
        improved_train = improved_valid = False
        since_train = since_valid = 0
        fired = []
        for phase in phases[1:]:
            since_train, since_valid = since_train + 1, since_valid + 1
            if phase.train_loss < best_train - p["delta"]:
                best_train, since_train, improved_train = phase.train_loss, 0, True
            if phase.valid_loss < best_valid - p["delta"]:
                best_valid, since_valid, improved_valid = phase.valid_loss, 0, True
            if (
                improved_train
                and improved_valid
                and (since_train >= p["patience_train"] or since_valid >= p["patience_validation"])
            ):
                fired.append(phase.step)
        if not fired:
            if not (improved_train and improved_valid):
                return self.passed("the losses have not both improved yet, so overtraining cannot have begun")
            return self.passed("training and validation loss kept improving")
        return self.fired(
            f"after improving, the losses stopped improving by {p['delta']} for {since_train} (training) and "
            f"{since_valid} (validation) validation passes",
            fired,
            "stop earlier: lower epochs to where validation loss was best, or use a decaying learning rate",
            best_train_loss=best_train,
            best_valid_loss=best_valid,
        )


class VanishingGradient(Rule):
    """The mean absolute gradient (averaged over all gradient tensors) fell below `threshold` at a saved step."""

    name = "VanishingGradient"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 1e-7}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        series = evidence.trace.gradient_mean_abs
        if not series:
            return self.passed("no gradients saved yet")
        fired = [step for step, value in series if value < self.parameters["threshold"]]
        smallest = min(value for _, value in series)
        if not fired:
            return self.passed(f"the smallest mean |gradient| was {smallest:.3g}", smallest=smallest)
        return self.fired(
            f"the mean |gradient| fell below {self.parameters['threshold']:g} at {len(fired)} saved steps",
            fired,
            "raise the learning rate, check that the backbone is not frozen by mistake, or use a pretrained model",
            smallest=smallest,
        )


class ExplodingTensor(Rule):
    """A loss, weight or gradient held NaN or infinity. Stops the job by default: nothing can be learnt after."""

    name = "ExplodingTensor"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {}
    stop_on_default = True

    def evaluate(self, evidence: Evidence) -> RuleResult:
        bad = evidence.trace.nonfinite
        if not bad:
            return self.passed("every saved loss, weight and gradient was finite")
        first_step, first_name = min(bad)
        return self.fired(
            f"{len({name for _, name in bad})} tensors held NaN or infinity, first {first_name} at step {first_step}",
            [step for step, _ in bad],
            "lower the learning rate (try 10x lower), or clip gradients",
            tensors=sorted({name for _, name in bad})[:20],
        )


class StalledTraining(Rule):
    """No training or validation step for `threshold` seconds (AWS: StalledTrainingRule, default 1800 s)."""

    name = "StalledTraining"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 1800.0}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        times = evidence.activity
        if not times:
            return self.passed("no step has been taken yet")
        gaps = [(later - earlier, index) for index, (earlier, later) in enumerate(pairwise(times), start=1)]
        gaps.append((max(evidence.now - times[-1], 0.0), len(times)))
        longest = max(gap for gap, _ in gaps)
        fired = [index for gap, index in gaps if gap > self.parameters["threshold"]]
        if not fired:
            return self.passed(f"the longest time between steps was {longest:.1f} s", longest_gap_seconds=longest)
        return self.fired(
            f"no step for {longest:.0f} s (threshold {self.parameters['threshold']:.0f} s)",
            fired,
            "look for a hung data loader or a deadlocked collective in the log",
            longest_gap_seconds=longest,
        )


TRAINING_RULES: tuple[type[Rule], ...] = (
    LossNotDecreasing,
    Overfit,
    Overtraining,
    VanishingGradient,
    ExplodingTensor,
    StalledTraining,
)
