"""Everything the rules judge, gathered in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from imgclf.diagnostics.monitor import SystemSample
from imgclf.diagnostics.steps import StepTiming
from imgclf.diagnostics.trace import TrainingTrace


@dataclass
class JobSettings:
    """The settings that profiler rules turn into recommendations."""

    cpu_count: int
    gpu_count: int
    world_size: int
    num_workers: int
    batch_size: int
    pin_memory: bool
    processes_per_host: int = 1  # training processes sharing the host's cores
    decode_device: str = "cpu"  # where training JPEGs are decoded ("cpu" or "gpu")

    @property
    def cores_per_process(self) -> int:
        return max(self.cpu_count // max(self.processes_per_host, 1), 1)


@dataclass
class Evidence:
    trace: TrainingTrace  # what the training rules judge: every step's loss, gradient checks at saved steps
    samples: list[SystemSample]
    steps: list[StepTiming]
    settings: JobSettings
    initialization_seconds: float | None  # process start to the first training step
    activity: list[float] = field(default_factory=list)  # times of training and validation steps
    now: float = 0.0
