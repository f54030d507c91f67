"""Each rule on made-up evidence: it fires on what it is meant to catch and stays quiet otherwise.

The GPU rules are exercised here with synthetic NVML samples; the planted-fault runs (test_rules_planted.py)
cover the training rules and the CPU-side profiler rules end to end.
"""

from __future__ import annotations

import pytest

from imgclf.diagnostics import profiler_rules as pr
from imgclf.diagnostics import training_rules as tr
from imgclf.diagnostics.evidence import Evidence, JobSettings
from imgclf.diagnostics.monitor import SystemSample
from imgclf.diagnostics.rule import ISSUES, NO_ISSUES, NOT_APPLICABLE, RuleConfigError
from imgclf.diagnostics.rulebook import ALL_RULES, build_rules, parse_rule_config
from imgclf.diagnostics.steps import StepTiming
from imgclf.diagnostics.trace import TrainingTrace

SETTINGS = JobSettings(cpu_count=4, gpu_count=1, world_size=1, num_workers=4, batch_size=32, pin_memory=True)


def evidence(trace: TrainingTrace | None = None, samples=(), steps=(), settings=SETTINGS, **kwargs) -> Evidence:
    return Evidence(trace or TrainingTrace("test"), list(samples), list(steps), settings, kwargs.pop("init", 10.0),
                    **kwargs)  # fmt: skip


def epochs(train_losses: list[float], valid_losses: list[float], steps_per_epoch: int = 4) -> TrainingTrace:
    """A trace of epochs: `steps_per_epoch` training steps at each training loss, then 2 validation steps."""
    trace, step = TrainingTrace("test"), 0
    for train, valid in zip(train_losses, valid_losses, strict=True):
        for _ in range(steps_per_epoch):
            trace.train_loss.append((step, train))
            step += 1
        for _ in range(2):
            trace.valid_loss.append((step, valid))
            step += 1
    return trace


def gpu_samples(gpu: list[float], memory: list[float] | None = None, cpu: float = 20.0, iowait: float = 0.0):
    memory = memory or [30.0] * len(gpu)
    return [SystemSample(float(i), [cpu] * 4, 10.0, iowait, 0, 0, 0, 0, [g], [m])
            for i, (g, m) in enumerate(zip(gpu, memory, strict=True))]  # fmt: skip


def status(rule, ev: Evidence) -> str:
    return rule.evaluate(ev).status


def test_loss_not_decreasing_fires_on_a_plateau_not_on_a_falling_loss():
    falling = epochs([2.0, 1.5, 1.0, 0.7, 0.5], [2.0, 1.5, 1.0, 0.7, 0.5])
    flat = epochs([1.1] * 5, [1.1] * 5)
    rule = tr.LossNotDecreasing(num_steps=4)
    assert status(rule, evidence(falling)) == NO_ISSUES
    result = rule.evaluate(evidence(flat))
    assert result.status == ISSUES and result.steps


def test_overfit_compares_each_validation_pass_with_its_training():
    rule = tr.Overfit()
    assert status(rule, evidence(epochs([1.0, 0.5, 0.3], [1.05, 0.52, 0.31]))) == NO_ISSUES
    result = rule.evaluate(evidence(epochs([1.0, 0.5, 0.1], [1.05, 0.9, 1.2])))
    assert result.status == ISSUES and len(result.steps) == 2
    assert status(tr.Overfit(patience=3), evidence(epochs([1.0, 0.5, 0.1], [1.05, 0.9, 1.2]))) == NO_ISSUES


def test_overtraining_needs_improvement_first_then_a_stall():
    rule = tr.Overtraining(patience_train=5, patience_validation=3)
    improving_then_stuck = epochs([2.0, 1.5, 1.0, 0.99, 0.98, 0.98, 0.97], [2.0, 1.5, 1.2, 1.21, 1.22, 1.2, 1.25])
    assert status(rule, evidence(improving_then_stuck)) == ISSUES
    never_improved = epochs([1.1] * 7, [1.1] * 7)
    assert status(rule, evidence(never_improved)) == NO_ISSUES
    assert status(rule, evidence(epochs([2.0, 1.5, 1.0, 0.5], [2.0, 1.5, 1.0, 0.5]))) == NO_ISSUES


def test_vanishing_gradient_and_exploding_tensor():
    trace = TrainingTrace("test", gradient_mean_abs=[(0, 1e-3), (10, 1e-9)])
    assert tr.VanishingGradient().evaluate(evidence(trace)).steps == [10]
    assert status(tr.VanishingGradient(), evidence(TrainingTrace("t", gradient_mean_abs=[(0, 1e-3)]))) == NO_ISSUES
    assert status(tr.ExplodingTensor(), evidence(TrainingTrace("t", nonfinite=[(4, "loss")]))) == ISSUES
    assert status(tr.ExplodingTensor(), evidence()) == NO_ISSUES
    assert tr.ExplodingTensor().stop_on and not tr.Overfit().stop_on


def test_stalled_training_measures_the_longest_gap_including_now():
    rule = tr.StalledTraining(threshold=60)
    assert status(rule, evidence(activity=[0.0, 10.0, 20.0], now=30.0)) == NO_ISSUES
    assert status(rule, evidence(activity=[0.0, 100.0], now=110.0)) == ISSUES
    assert status(rule, evidence(activity=[0.0, 10.0], now=100.0)) == ISSUES  # stuck right now


@pytest.mark.parametrize(
    ("rule", "busy", "idle"),
    [
        (pr.LowGPUUtilization(patience=0, window=50), gpu_samples([90.0] * 100), gpu_samples([30.0] * 100)),
        (pr.CPUBottleneck(patience=0), gpu_samples([80.0] * 100, cpu=95), gpu_samples([5.0] * 100, cpu=95)),
        (pr.IOBottleneck(patience=0), gpu_samples([80.0] * 100, iowait=60), gpu_samples([5.0] * 100, iowait=60)),
        (pr.BatchSize(patience=0, window=50), gpu_samples([90.0] * 100), gpu_samples([30.0] * 100)),
        (
            pr.GPUMemoryIncrease(patience=0),
            gpu_samples([90.0] * 100, [40.0] * 100),
            gpu_samples([90.0] * 100, [40.0 + i * 0.2 for i in range(100)]),
        ),
    ],
)
def test_gpu_rules_fire_on_their_pattern_and_are_not_applicable_without_gpu(rule, busy, idle):
    assert status(rule, evidence(samples=busy)) == NO_ISSUES
    assert status(rule, evidence(samples=idle)) == ISSUES
    no_gpu = [SystemSample(s.time, s.cpu, s.memory, s.iowait, 0, 0, 0, 0) for s in busy]
    assert status(rule, evidence(samples=no_gpu)) == NOT_APPLICABLE


def test_low_gpu_utilization_also_catches_fluctuation():
    fluctuating = gpu_samples([95.0, 2.0] * 50)
    result = pr.LowGPUUtilization(patience=0, window=100).evaluate(evidence(samples=fluctuating))
    assert result.status == ISSUES and "fluctuating in 1" in result.explanation


def test_load_balancing_compares_gpus():
    def two_gpus(a: float, b: float):
        return [SystemSample(float(i), [10.0], 10, 0, 0, 0, 0, 0, [a, b], [10.0, 10.0]) for i in range(20)]

    assert status(pr.LoadBalancing(patience=0), evidence(samples=two_gpus(80, 75))) == NO_ISSUES
    assert status(pr.LoadBalancing(patience=0), evidence(samples=two_gpus(80, 5))) == ISSUES
    assert status(pr.LoadBalancing(patience=0), evidence(samples=gpu_samples([80.0] * 20))) == NOT_APPLICABLE


def timing(step: int, data: float, compute: float = 0.1) -> StepTiming:
    return StepTiming(step, 1, float(step), data, compute, compute, compute / 10)


def test_dataloader_recommends_workers_and_pin_memory():
    few = JobSettings(cpu_count=8, gpu_count=1, world_size=1, num_workers=2, batch_size=32, pin_memory=False)
    result = pr.Dataloader().evaluate(evidence(steps=[timing(i, 0.01) for i in range(10)], settings=few))
    assert result.status == ISSUES
    assert "raise num_workers from 2 to 8" in result.recommendation and "enable pin_memory" in result.recommendation
    starved = pr.Dataloader().evaluate(evidence(steps=[timing(i, 1.0) for i in range(10)]))
    assert starved.status == ISSUES and "waiting for data" in starved.explanation
    assert status(pr.Dataloader(), evidence(steps=[timing(i, 0.01) for i in range(10)])) == NO_ISSUES


def test_step_outlier_and_initialization_time():
    steady = [timing(i, 0.01 * (i % 3)) for i in range(1000)]
    spiky = steady + [timing(1000 + i, 5.0) for i in range(11)]
    assert status(pr.StepOutlier(), evidence(steps=steady)) == NO_ISSUES
    assert status(pr.StepOutlier(), evidence(steps=spiky)) == ISSUES
    assert status(pr.MaxInitializationTime(), evidence(init=60.0)) == NO_ISSUES
    assert status(pr.MaxInitializationTime(threshold=0.5), evidence(init=60.0)) == ISSUES


def test_rule_configuration_is_validated_and_applied():
    rules = {rule.name: rule for rule in build_rules({"Overfit": {"patience": 2, "stop_on": True}, "BatchSize": False})}
    assert len(rules) == len(ALL_RULES) - 1 and "BatchSize" not in rules
    assert rules["Overfit"].parameters["patience"] == 2 and rules["Overfit"].stop_on
    assert parse_rule_config('{"StepOutlier": {"stddev": "2.5"}}') == {"StepOutlier": {"stddev": "2.5"}}
    for bad, message in [
        ({"Nope": {}}, "unknown rules Nope"),
        ({"Overfit": {"patience": 1.5}}, "must be a int"),
        ({"Overfit": {"ratio": 1}}, "has no parameter ratio"),
        ({"Overfit": 3}, "must be configured with an object"),
        ("[1, 2]", "must be a JSON object"),
    ]:
        with pytest.raises(RuleConfigError, match=message):
            parse_rule_config(bad)


def test_loss_not_decreasing_treats_sparse_saved_values_as_windows_of_their_own():
    # The hook's default: a training loss every 100 steps, judged every 10 steps as in AWS's rule.
    trace = TrainingTrace("test", train_loss=[(0, 1.0), (100, 0.9), (200, 0.95), (300, 0.8), (400, 0.7)])
    result = tr.LossNotDecreasing().evaluate(evidence(trace))
    assert result.status == ISSUES and result.steps == [200]
    assert [w["step"] for w in result.details["windows"]] == [0, 100, 200, 300]  # the last is still open
