"""Per-step timings of the training loop: waiting for data, forward, backward, optimizer.

On a GPU the compute phases are timed with CUDA events; a step's events are read only when its timings are
settled, in blocks, after the diagnostics have waited for the device anyway (to read the losses), so timing
adds no synchronisation of its own. On a CPU the phases are read from the clock as they end.
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
    """Call `batch_ready()` when a batch arrives, `mark()` after each compute phase, `end(epoch)` last, and
    `settle()` to record the steps ended so far."""

    def __init__(self, path: Path, device: torch.device):
        self.cuda = device.type == "cuda"
        self.timings: list[StepTiming] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")
        self._waiting_since = time.perf_counter()
        self._marks: list = []
        self._pending: list[tuple[int, float, float, list]] = []  # (epoch, end, data wait, marks or phases)

    def wait(self) -> None:
        """The loop starts waiting for a batch (e.g. a new epoch's first)."""
        self._waiting_since = time.perf_counter()

    def batch_ready(self) -> None:
        self._data = time.perf_counter() - self._waiting_since
        self._marks = [self._now()]

    def mark(self) -> None:
        self._marks.append(self._now())

    def end(self, epoch: int) -> None:
        """The step's optimizer phase has been queued; its timing is recorded when `settle` is called."""
        marks = self._marks if self.cuda else [b - a for a, b in pairwise(self._marks)]
        self._pending.append((epoch, time.time(), self._data, marks))
        self._waiting_since = time.perf_counter()

    def settle(self) -> list[StepTiming]:
        """Record the steps ended since the last call (on a GPU this waits for their last event) and return them."""
        if not self._pending:
            return []
        if self.cuda:
            self._pending[-1][3][-1].synchronize()
        settled = []
        for epoch, end, data, marks in self._pending:
            phases = [a.elapsed_time(b) / 1000 for a, b in pairwise(marks)] if self.cuda else marks
            settled.append(StepTiming(len(self.timings) + len(settled), epoch, end, data, *phases))
        self._pending = []
        self.timings.extend(settled)
        self._file.write("".join(json.dumps(asdict(t)) + "\n" for t in settled))
        return settled

    def median_step_seconds(self) -> float:
        """The median of the training steps' total times so far; 0 before the first."""
        self.settle()
        return statistics.median(t.total for t in self.timings) if self.timings else 0.0

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def close(self) -> None:
        self.settle()
        self._file.close()
