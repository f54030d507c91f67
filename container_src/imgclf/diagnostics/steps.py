"""Per-step timings of the training loop: waiting for data, forward, backward, optimizer.

On a GPU the compute phases are timed with CUDA events, read after the step's own synchronisation (the loss
`.item()`), so timing adds no synchronisation of its own.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import torch

PHASES = ("data", "forward", "backward", "optimizer")


@dataclass
class StepTiming:
    step: int  # training step, from 0
    epoch: int
    end: float  # seconds since the epoch
    data: float  # seconds waiting for the batch
    forward: float
    backward: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.data + self.forward + self.backward + self.optimizer


class StepTimer:
    """Call `batch_ready()` when a batch arrives, `mark(phase)` after each compute phase, `end(epoch)` last."""

    def __init__(self, path: Path, device: torch.device):
        self.cuda = device.type == "cuda"
        self.timings: list[StepTiming] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")
        self._waiting_since = time.perf_counter()
        self._marks: list = []

    def wait(self) -> None:
        """The loop starts waiting for a batch (e.g. a new epoch's first)."""
        self._waiting_since = time.perf_counter()

    def batch_ready(self) -> None:
        self._data = time.perf_counter() - self._waiting_since
        self._marks = [self._now()]

    def mark(self) -> None:
        self._marks.append(self._now())

    def end(self, epoch: int) -> StepTiming:
        if self.cuda:
            self._marks[-1].synchronize()
            phases = [start.elapsed_time(stop) / 1000 for start, stop in pairwise(self._marks)]
        else:
            phases = [stop - start for start, stop in pairwise(self._marks)]
        timing = StepTiming(len(self.timings), epoch, time.time(), self._data, *phases)
        self.timings.append(timing)
        self._file.write(json.dumps(asdict(timing)) + "\n")
        self._waiting_since = time.perf_counter()
        return timing

    def median_step_seconds(self) -> float:
        """The median of the training steps' total times so far; 0 before the first."""
        return statistics.median(t.total for t in self.timings) if self.timings else 0.0

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def close(self) -> None:
        self._file.close()
