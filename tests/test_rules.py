"""Each rule on made-up evidence: it fires on what it is meant to catch and stays quiet otherwise.

The GPU rules are exercised here with synthetic NVML samples; the planted-fault runs (test_rules_planted.py)
cover the training rules and the CPU-side profiler rules end to end.
"""

from __future__ import annotations

import random

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
    assert status(tr.ExplodingTensor(), evidence(TrainingTrace("t", train_loss=[(0, 1.0)]))) == NO_ISSUES
    assert tr.ExplodingTensor().stop_on and not tr.Overfit().stop_on


def test_stalled_training_measures_the_longest_gap_including_now():
    rule = tr.StalledTraining(threshold=60)
    assert status(rule, evidence(activity=[0.0, 10.0, 20.0], now=30.0)) == NO_ISSUES
    past = rule.evaluate(evidence(activity=[0.0, 100.0], now=110.0))
    assert past.status == ISSUES and past.transient  # it stalled, and is moving again
    now = rule.evaluate(evidence(activity=[0.0, 10.0], now=100.0))
    assert now.status == ISSUES and not now.transient  # stuck right now


def test_rules_without_evidence_say_not_applicable_and_why():
    none = evidence(init=None)
    for rule in (*tr.TRAINING_RULES, pr.StepOutlier, pr.MaxInitializationTime, pr.GPUMemoryIncrease):
        result = rule().evaluate(none)
        assert result.status == NOT_APPLICABLE and result.explanation, rule.name
    # Too few steps for LossNotDecreasing's windows: 12 training steps make one complete window of 10.
    short = TrainingTrace("t", train_loss=[(s, 1.0) for s in range(12)])
    result = tr.LossNotDecreasing().evaluate(evidence(short))
    assert result.status == NOT_APPLICABLE
    assert result.explanation == (
        "fewer than two windows of 10 training steps to compare: 12 training losses recorded, 1 complete window(s)"
    )
    one_pass = tr.Overtraining().evaluate(evidence(epochs([1.0], [1.0])))
    assert one_pass.status == NOT_APPLICABLE and "1 validation pass" in one_pass.explanation
    gpu_early = pr.LowGPUUtilization().evaluate(evidence(samples=gpu_samples([90.0] * 20)))  # within patience=1000
    assert gpu_early.status == NOT_APPLICABLE and "patience" in gpu_early.explanation


def noisy(means: list[float], sd: float = 0.1, seed: int = 0, steps_per_epoch: int = 12) -> TrainingTrace:
    """Epochs of training steps whose losses scatter (by `sd`, about what batches of 32 images give) around each
    epoch's mean, each epoch followed by 3 validation steps; steps in mode recorded as the metric log does."""
    rng = random.Random(seed)
    trace, step = TrainingTrace("test"), 0
    for epoch, mean in enumerate(means):
        for i in range(steps_per_epoch):
            trace.train_loss.append((step, rng.gauss(mean, sd)))
            trace.mode_step[step] = epoch * steps_per_epoch + i
            step += 1
        for i in range(3):
            trace.valid_loss.append((step, mean))
            trace.mode_step[step] = epoch * 3 + i
            step += 1
    return trace


def test_loss_not_decreasing_judges_every_steps_noisy_losses():
    # 4 epochs of 12 steps, 100 draws of the noise each: windows of 10 training steps, across validation passes.
    rule = tr.LossNotDecreasing()
    runs = {name: [rule.evaluate(evidence(noisy(means, seed=seed))) for seed in range(100)]
            for name, means in {"flat": [1.1] * 4, "falling": [1.1, 0.8, 0.5, 0.3],
                                "levelled": [1.1, 0.6, 0.6, 0.6]}.items()}  # fmt: skip
    assert [w["step"] for w in runs["flat"][0].details["windows"]] == [9, 22, 35, 48]  # 4 windows, 3 compared
    found = {name: sum(r.status == ISSUES for r in results) for name, results in runs.items()}
    lasting = {name: sum(r.status == ISSUES and not r.transient for r in results) for name, results in runs.items()}
    assert found["flat"] >= 90 and lasting["flat"] >= 80  # a flat loss is caught, and not as a passing episode
    assert found["falling"] <= 2
    assert found["levelled"] <= 5  # fell, then levelled off: Overtraining's to judge, not this rule's


def test_loss_not_decreasing_reports_a_rise_that_passed_as_transient():
    result = tr.LossNotDecreasing().evaluate(evidence(noisy([1.1, 2.5, 0.6, 0.4, 0.3])))
    assert result.status == ISSUES and result.transient and result.details["increases"]
    assert result.explanation.endswith(f"transient: fired last at step {result.steps[-1]}, not at the end (71)")


def test_an_overfit_alarm_in_the_first_epoch_only_is_transient():
    # Validation 40% above training after the first epoch, then below it: the demo's pattern.
    result = tr.Overfit().evaluate(evidence(epochs([1.0, 0.5, 0.3, 0.25], [1.4, 0.5, 0.28, 0.25])))
    assert result.status == ISSUES and result.steps == [4] and result.transient and result.last_judged == 22
    assert "transient" in result.explanation
    assert result.to_json()["transient"] is True
    lasting = tr.Overfit().evaluate(evidence(epochs([1.0, 0.5, 0.3], [1.4, 0.9, 1.0])))
    assert lasting.status == ISSUES and not lasting.transient and lasting.to_json()["transient"] is False


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
    assert "set the hyperparameter num_workers to 8 (now 2)" in result.recommendation
    assert "enable pin_memory" in result.recommendation
    starved = pr.Dataloader().evaluate(evidence(steps=[timing(i, 1.0) for i in range(10)]))
    assert starved.status == ISSUES and "waiting for data" in starved.explanation
    assert status(pr.Dataloader(), evidence(steps=[timing(i, 0.01) for i in range(10)])) == NO_ISSUES
    assert "decode_device to gpu" in starved.recommendation  # SETTINGS: a GPU job decoding on the CPU


def test_dataloader_counts_the_cores_of_each_training_process():
    """8 workers on a 16-core host are 50 % of its cores, but 100 % of what each of its 2 processes has."""
    shared = JobSettings(cpu_count=16, gpu_count=2, world_size=2, num_workers=8, batch_size=32, pin_memory=True,
                         processes_per_host=2)  # fmt: skip
    assert status(pr.Dataloader(), evidence(steps=[timing(i, 0.01) for i in range(10)], settings=shared)) == NO_ISSUES
    crowded = JobSettings(cpu_count=16, gpu_count=8, world_size=8, num_workers=8, batch_size=32, pin_memory=True,
                          processes_per_host=8)  # fmt: skip
    result = pr.Dataloader().evaluate(evidence(steps=[timing(i, 0.01) for i in range(10)], settings=crowded))
    assert result.status == ISSUES
    assert "8 data workers for 2 cores per training process (16 cores, 8 processes)" in result.explanation
    assert "set the hyperparameter num_workers to 2 (now 8)" in result.recommendation


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
    assert result.status == ISSUES and result.steps == [200] and result.details["increases"] == [200]
    assert [w["step"] for w in result.details["windows"]] == [0, 100, 200, 300]  # the last is still open
    assert result.transient  # it fell again after step 200


def test_the_densest_trace_is_chosen_series_by_series():
    log = TrainingTrace("metric log", train_loss=[(s, 1.0) for s in range(10)], gradient_mean_abs=[(0, 0.1)],
                        nonfinite=[(3, "loss")], mode_step={s: s for s in range(10)})  # fmt: skip
    hook = TrainingTrace("smdebug trace", train_loss=[(0, 1.0)], gradient_mean_abs=[(s, 0.1) for s in range(10)],
                         nonfinite=[(5, "gradients/x")])  # fmt: skip
    merged = TrainingTrace.densest(log, hook)
    assert merged.train_loss == log.train_loss and merged.gradient_mean_abs == hook.gradient_mean_abs
    assert merged.nonfinite == [(3, "loss"), (5, "gradients/x")] and merged.mode_step == log.mode_step
    assert merged.source == "train loss: metric log; valid loss: metric log; gradient mean abs: smdebug trace"
    assert TrainingTrace.densest(log, TrainingTrace("smdebug trace")).source == "metric log"
