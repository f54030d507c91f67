"""Profiler rules, after SageMaker Debugger's (smdebug_rulesconfig 1.0.1 names and defaults).

System samples come from our monitor, step timings from our step timer. GPU rules report NotApplicable on a
machine without a GPU (or without NVML). `patience` skips that many samples at the start, as AWS does.
"""

from __future__ import annotations

from statistics import fmean, pstdev
from typing import Any, ClassVar

import numpy as np

from imgclf.diagnostics.evidence import Evidence
from imgclf.diagnostics.monitor import SystemSample
from imgclf.diagnostics.rule import Rule, RuleResult

NO_GPU = "no GPU utilisation was measured on this machine (no GPU, or NVML is unavailable)"


def _gpu_samples(evidence: Evidence, patience: int) -> list[SystemSample]:
    return [s for s in evidence.samples[patience:] if s.gpu]


def _no_gpu_samples(evidence: Evidence, patience: int) -> str:
    """Why `_gpu_samples` is empty: no GPU measured, or only within the `patience` samples skipped."""
    measured = sum(1 for s in evidence.samples if s.gpu)
    if not measured:
        return NO_GPU
    return (f"all {measured} samples with GPU utilisation are within the first {patience} samples, which are "
            f"skipped (patience)")  # fmt: skip


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def _windows(samples: list[SystemSample], window: int) -> list[list[SystemSample]]:
    return [samples[i : i + window] for i in range(0, len(samples), window)] if samples else []


class LowGPUUtilization(Rule):
    """Per GPU and window of samples: p95 utilisation below `threshold_p95` (underused), or p95 above it while p5
    is below `threshold_p5` (fluctuating)."""

    name = "LowGPUUtilization"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {"threshold_p95": 70.0, "threshold_p5": 10.0, "window": 500, "patience": 1000}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        samples = _gpu_samples(evidence, p["patience"])
        if not samples:
            return self.not_applicable(_no_gpu_samples(evidence, p["patience"]))
        low, fluctuating, details = [], [], []
        for index, window in enumerate(_windows(samples, p["window"])):
            for gpu in range(len(window[0].gpu)):
                values = [s.gpu[gpu] for s in window if gpu < len(s.gpu)]
                p95, p5 = _p(values, 95), _p(values, 5)
                details.append({"window": index, "gpu": gpu, "p95": p95, "p5": p5})
                if p95 < p["threshold_p95"]:
                    low.append(index)
                elif p5 < p["threshold_p5"]:
                    fluctuating.append(index)
        if not low and not fluctuating:
            return self.passed("GPU utilisation stayed high", percentiles=details)
        return self.fired(
            f"GPU utilisation was low in {len(low)} and fluctuating in {len(fluctuating)} windows of "
            f"{p['window']} samples",
            [],
            "feed the GPU faster: raise batch_size or num_workers, enable pin_memory; or use a smaller instance",
            percentiles=details,
        )


class _IdleGPUBottleneck(Rule):
    """More than `threshold` % of samples have GPU utilisation under `gpu_threshold` while `busy(sample)` holds."""

    kind = "profiler"
    cause: ClassVar[str]  # what keeps the GPU waiting, for the explanation
    advice: ClassVar[str]

    def busy(self, sample: SystemSample) -> bool:
        raise NotImplementedError

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        samples = _gpu_samples(evidence, p["patience"])
        if not samples:
            return self.not_applicable(_no_gpu_samples(evidence, p["patience"]))
        stalled = [s for s in samples if max(s.gpu) < p["gpu_threshold"] and self.busy(s)]
        share = 100 * len(stalled) / len(samples)
        if share <= p["threshold"]:
            return self.passed(f"{share:.0f}% of samples had {self.cause} and an idle GPU", share=share)
        return self.fired(f"{share:.0f}% of samples had {self.cause} and the GPU under {p['gpu_threshold']:.0f}%",
                          [], self.advice, share=share)  # fmt: skip


class CPUBottleneck(_IdleGPUBottleneck):
    """More than `threshold` % of samples have the GPU under `gpu_threshold` while CPU is over `cpu_threshold`."""

    name = "CPUBottleneck"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 50.0, "gpu_threshold": 10.0, "cpu_threshold": 90.0,
                                          "patience": 1000}  # fmt: skip
    cause = "the CPU over its threshold"
    advice = "move preprocessing off the CPU (smaller images on disk, GPU decoding) or choose more CPU cores"

    def busy(self, sample: SystemSample) -> bool:
        return sample.cpu_total > self.parameters["cpu_threshold"]


class IOBottleneck(_IdleGPUBottleneck):
    """More than `threshold` % of samples have the GPU under `gpu_threshold` while I/O wait is over
    `io_threshold` %."""

    name = "IOBottleneck"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 50.0, "gpu_threshold": 10.0, "io_threshold": 50.0,
                                          "patience": 1000}  # fmt: skip
    cause = "I/O wait over its threshold"
    advice = "copy the data to local disk first (File input mode), or use fewer, larger files"

    def busy(self, sample: SystemSample) -> bool:
        return sample.iowait > self.parameters["io_threshold"]


class BatchSize(Rule):
    """In a window, p95 of CPU, GPU and GPU memory all below their thresholds: the batch could be larger."""

    name = "BatchSize"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {
        "cpu_threshold_p95": 70.0,
        "gpu_threshold_p95": 70.0,
        "gpu_memory_threshold_p95": 70.0,
        "patience": 1000,
        "window": 500,
    }

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        samples = _gpu_samples(evidence, p["patience"])
        if not samples:
            return self.not_applicable(_no_gpu_samples(evidence, p["patience"]))
        small = []
        for index, window in enumerate(_windows(samples, p["window"])):
            cpu = _p([s.cpu_total for s in window], 95)
            gpu = _p([max(s.gpu) for s in window], 95)
            memory = _p([max(s.gpu_memory) for s in window], 95)
            if cpu < p["cpu_threshold_p95"] and gpu < p["gpu_threshold_p95"] and memory < p["gpu_memory_threshold_p95"]:
                small.append(index)
        if not small:
            return self.passed("the machine was busy enough for this batch size")
        size = evidence.settings.batch_size
        return self.fired(
            f"CPU, GPU and GPU memory all stayed under their p95 thresholds in {len(small)} windows",
            [],
            f"raise batch_size from {size} to {size * 2} (and the learning rate with it), or use a smaller instance",
        )


class Dataloader(Rule):
    """Data-loading workers of each training process between `min_threshold` and `max_threshold` % of the cores it
    has (the host's, shared among its training processes) (AWS), and — our addition — the training loop waiting
    for data less than `data_wait_threshold` % of its step time. Recommendations name the hyperparameter to set."""

    name = "Dataloader"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {"min_threshold": 70.0, "max_threshold": 200.0, "data_wait_threshold": 50.0}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p, s = self.parameters, evidence.settings
        cores = s.cores_per_process
        workers = f"{s.num_workers} data workers for {cores} cores" + (
            f" per training process ({s.cpu_count} cores, {s.processes_per_host} processes)"
            if s.processes_per_host > 1
            else ""
        )
        workers_share = 100 * s.num_workers / cores
        steps = evidence.steps[1:] or evidence.steps  # the first step also waits for the workers to start
        wait_share = 100 * sum(t.data for t in steps) / max(sum(t.total for t in steps), 1e-9)
        issues, advice, fired = [], [], []
        if not p["min_threshold"] <= workers_share <= p["max_threshold"]:
            issues.append(f"{workers} ({workers_share:.0f}%)")
            advice.append(f"set the hyperparameter num_workers to {cores} (now {s.num_workers})")
        if wait_share > p["data_wait_threshold"]:
            issues.append(f"training steps spent {wait_share:.0f}% of their time waiting for data")
            fired = [t.step for t in steps if t.total > 0 and 100 * t.data / t.total > p["data_wait_threshold"]]
            if s.gpu_count and s.decode_device == "cpu":
                advice.append("decode JPEGs on the GPU: set the hyperparameter decode_device to gpu")
            if s.num_workers < 2 * cores:
                more = max(s.num_workers * 2, cores)
                advice.append(f"set the hyperparameter num_workers to {more} (now {s.num_workers})")
            advice.append("make each image cheaper to load (store images closer to image_size)")
        if s.gpu_count and not s.pin_memory:
            advice.append("enable pin_memory")
        if not issues:
            return self.passed(f"{workers}; steps waited for data {wait_share:.0f}% of the time",
                               data_wait_percent=wait_share)  # fmt: skip
        return self.fired("; ".join(issues), fired, "; ".join(dict.fromkeys(advice)),
                          data_wait_percent=wait_share)  # fmt: skip


class StepOutlier(Rule):
    """More than `n_outliers` training steps longer than mean + `stddev` standard deviations (first step left
    out: it includes start-up)."""

    name = "StepOutlier"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {"stddev": 3.0, "n_outliers": 10}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        durations = [(t.step, t.total) for t in evidence.steps[1:]]
        if len(durations) < 3:
            return self.not_applicable(f"{len(durations)} timed steps after the first: outliers need 3 or more")
        values = [d for _, d in durations]
        limit = fmean(values) + p["stddev"] * pstdev(values)
        outliers = [step for step, d in durations if d > limit] if pstdev(values) > 0 else []
        if len(outliers) <= p["n_outliers"]:
            return self.passed(f"{len(outliers)} steps took longer than {limit:.3f} s", limit_seconds=limit)
        return self.fired(
            f"{len(outliers)} steps took longer than mean + {p['stddev']:g} sd ({limit:.3f} s)",
            outliers,
            "look at what those steps share: evaluation, checkpointing, garbage collection or a slow file",
            limit_seconds=limit,
        )


class GPUMemoryIncrease(Rule):
    """The moving average (over `window` samples) of GPU memory rose by more than `increase` percentage points."""

    name = "GPUMemoryIncrease"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {"increase": 5.0, "patience": 1000, "window": 10}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        p = self.parameters
        samples = _gpu_samples(evidence, p["patience"])
        if not samples:
            return self.not_applicable(_no_gpu_samples(evidence, p["patience"]))
        memory = np.array([max(s.gpu_memory) for s in samples])
        if len(memory) < p["window"] + 1:
            return self.not_applicable(f"{len(memory)} samples with GPU memory: a rise needs more than {p['window']}")
        averages = np.convolve(memory, np.ones(p["window"]) / p["window"], mode="valid")
        rise = float(averages.max() - averages[0])
        if rise <= p["increase"]:
            return self.passed(f"GPU memory rose by {rise:.1f} points at most", rise=rise)
        return self.fired(
            f"GPU memory rose by {rise:.1f} percentage points",
            [],
            "look for tensors kept across steps (e.g. summing losses without .item())",
            rise=rise,
        )


class MaxInitializationTime(Rule):
    """The first training step began more than `threshold` minutes after the process started."""

    name = "MaxInitializationTime"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 20.0}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        seconds = evidence.initialization_seconds
        if seconds is None:
            return self.not_applicable("no training step has been timed yet")
        if seconds <= 60 * self.parameters["threshold"]:
            return self.passed(f"initialisation took {seconds:.1f} s", seconds=seconds)
        return self.fired(
            f"initialisation took {seconds / 60:.1f} min",
            [0],
            "check the time spent scanning and checking the data: use fewer, larger files or FastFile mode",
            seconds=seconds,
        )


class LoadBalancing(Rule):
    """With several GPUs: mean utilisation of the least and most used GPU differs by more than `threshold`
    (relative to the most used)."""

    name = "LoadBalancing"
    kind = "profiler"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 0.5, "patience": 1000}

    def evaluate(self, evidence: Evidence) -> RuleResult:
        samples = _gpu_samples(evidence, self.parameters["patience"])
        if not samples or len(samples[0].gpu) < 2:
            return self.not_applicable("fewer than two GPUs were measured")
        means = [fmean(s.gpu[i] for s in samples) for i in range(len(samples[0].gpu))]
        spread = (max(means) - min(means)) / max(max(means), 1e-9)
        if spread <= self.parameters["threshold"]:
            return self.passed(f"GPU loads within {spread:.0%} of each other", means=means)
        return self.fired(
            f"GPU mean utilisation ranged from {min(means):.0f}% to {max(means):.0f}%",
            [],
            "use one training process per GPU (instance_count or torchrun) so that each GPU gets work",
            means=means,
        )


PROFILER_RULES: tuple[type[Rule], ...] = (
    LowGPUUtilization,
    CPUBottleneck,
    IOBottleneck,
    BatchSize,
    Dataloader,
    StepOutlier,
    GPUMemoryIncrease,
    MaxInitializationTime,
    LoadBalancing,
)
