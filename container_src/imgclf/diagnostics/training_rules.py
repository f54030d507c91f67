"""Training rules, after SageMaker Debugger's built-in rules of the same names and defaults.

Where our semantics differ from AWS's description, the docstring says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from statistics import fmean, stdev
from typing import Any, ClassVar

from imgclf.diagnostics.evidence import Evidence
from imgclf.diagnostics.rule import Rule, RuleConfigError, RuleResult

# LossNotDecreasing counts a fall of the mean loss only beyond one standard error of the difference of the two
# means, and a rise only beyond two: a flat loss fires at most windows, and a falling or levelled one seldom does.
FALL_ERRORS, RISE_ERRORS = 1.0, 2.0


class LossNotDecreasing(Rule):
    """The loss must fall: each window of `num_steps` steps must be at least `diff_percent` % below the first
    window, and must not rise more than `increase_threshold_percent` % above the previous window.

    AWS compares single saved values `num_steps` apart. Every step's loss is recorded here, and single batch
    losses are noisy, so we compare the means of windows of `num_steps` steps of the mode, and count a fall or a
    rise only where it exceeds the noise of the two means (one standard error of their difference): a flat loss
    then fires at (almost) every window instead of at random half of them. Values saved further apart than
    `num_steps` are windows of their own, with no noise measured, as in AWS's rule. A plateau is judged against
    the first window, not the previous one: a loss that fell and then levelled off is Overtraining's to judge.
    `mode` defaults to TRAIN (AWS tries EVAL first): validation loss is judged by Overfit and Overtraining.
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
        p, trace = self.parameters, evidence.trace
        series = trace.train_loss if p["mode"] == "TRAIN" else trace.valid_loss
        mode = "training" if p["mode"] == "TRAIN" else "validation"
        windows = _windows(series, trace.steps_in_mode(series), p["num_steps"])
        if len(windows) < 2:
            return self.not_applicable(
                f"fewer than two windows of {p['num_steps']} {mode} steps to compare: {len(series)} {mode} losses "
                f"recorded, {len(windows)} complete window(s)"
            )
        first = windows[0]
        plateaus, increases = [], []
        for before, after in pairwise(windows):
            rise = after.mean - before.mean - RISE_ERRORS * before.noise(after)
            if not math.isfinite(after.mean) or rise > before.mean * p["increase_threshold_percent"] / 100:
                increases.append(after.step)
            if not first.mean - after.mean - FALL_ERRORS * first.noise(after) >= first.mean * p["diff_percent"] / 100:
                plateaus.append(after.step)
        table = [{"step": w.step, "mean_loss": w.mean, "standard_error": w.error} for w in windows]
        if not plateaus and not increases:
            return self.passed(
                f"the mean {mode} loss fell below the first window's and did not rise, in all {len(windows) - 1} "
                f"windows of {p['num_steps']} steps compared",
                windows=table,
            )
        return self.fired(
            f"of {len(windows) - 1} windows of {p['num_steps']} {mode} steps, {len(plateaus)} were not "
            f"{p['diff_percent']}% below the first (mean {first.mean:.4g}) and {len(increases)} rose by more than "
            f"{p['increase_threshold_percent']}%, beyond the noise of the means",
            sorted({*plateaus, *increases}),
            "check the learning rate (too low: a plateau; too high: increases) and that labels match the images",
            last_judged=windows[-1].step,
            windows=table,
            plateaus=plateaus,
            increases=increases,
        )


@dataclass
class _Window:
    step: int  # global step of its last value
    mean: float  # NaN if a value was not finite
    error: float  # standard error of the mean (0 for a single value)

    def noise(self, other: _Window) -> float:
        """The standard error of the difference of the two means."""
        return math.hypot(self.error, other.error)


def _windows(series: list[tuple[int, float]], in_mode: list[tuple[int, float]], num_steps: int) -> list[_Window]:
    """Consecutive windows of `num_steps` steps of the mode (`in_mode` numbers the points of `series` by step
    within their mode). Values saved further apart than `num_steps` are windows of their own, as in AWS's rule.
    A window counts once it spans `num_steps` steps or the next one has begun."""
    windows: list[_Window] = []
    values: list[float] = []
    start, last, last_in_mode = None, 0, 0

    def close() -> None:
        finite = all(math.isfinite(v) for v in values)
        error = stdev(values) / math.sqrt(len(values)) if finite and len(values) > 1 else 0.0
        windows.append(_Window(last, fmean(values) if finite else math.nan, error))

    for (step, value), (in_mode_step, _) in zip(series, in_mode, strict=True):
        if start is not None and in_mode_step - start >= num_steps:
            close()
            values, start = [], None
        start = in_mode_step if start is None else start
        values.append(value)
        last, last_in_mode = step, in_mode_step
    if start is not None and last_in_mode - start >= num_steps - 1:
        close()
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
            return self.not_applicable(f"no validation pass (from step {p['start_step']} on) to compare with training")
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
            last_judged=phases[-1].step,
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
        if len(phases) < 2:
            return self.not_applicable(f"{len(phases)} validation pass(es): improvement needs two or more to judge")
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
            last_judged=phases[-1].step,
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
            return self.not_applicable("no gradient has been checked yet")
        fired = [step for step, value in series if value < self.parameters["threshold"]]
        smallest = min(value for _, value in series)
        if not fired:
            return self.passed(f"the smallest mean |gradient| was {smallest:.3g}", smallest=smallest)
        return self.fired(
            f"the mean |gradient| fell below {self.parameters['threshold']:g} at {len(fired)} saved steps",
            fired,
            "raise the learning rate, check that the backbone is not frozen by mistake, or use a pretrained model",
            last_judged=series[-1][0],
            smallest=smallest,
        )


class ExplodingTensor(Rule):
    """A loss, weight or gradient held NaN or infinity. Stops the job by default: nothing can be learnt after."""

    name = "ExplodingTensor"
    kind = "training"
    defaults: ClassVar[dict[str, Any]] = {}
    stop_on_default = True

    def evaluate(self, evidence: Evidence) -> RuleResult:
        trace = evidence.trace
        bad = trace.nonfinite
        series = (trace.train_loss, trace.valid_loss, trace.gradient_mean_abs)
        judged = [step for points in series for step, _ in points]
        if not bad and not judged:
            return self.not_applicable("no loss, weight or gradient has been recorded yet")
        if not bad:
            return self.passed("every recorded loss, weight and gradient was finite")
        first_step, first_name = min(bad)
        return self.fired(
            f"{len({name for _, name in bad})} tensors held NaN or infinity, first {first_name} at step {first_step}",
            [step for step, _ in bad],
            "lower the learning rate (try 10x lower), or clip gradients",
            last_judged=max(judged, default=None),
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
            return self.not_applicable("no step has been taken yet")
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
            last_judged=len(times),
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
