"""What the training rules read: losses by mode, gradient magnitudes and non-finite tensors over global steps.

Our own metric log records every step's loss (and checks gradients and weights every `train_interval` steps);
the smdebug trace, when the hook is on, holds the steps smdebug saved. The rules read the densest of the two,
series by series (`densest`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import IO

import torch
from torch import nn

log = logging.getLogger(__name__)

METRIC_LOG, SMDEBUG_TRACE = "metric log", "smdebug trace"
SERIES = ("train_loss", "valid_loss", "gradient_mean_abs", "nonfinite")


@dataclass
class Phase:
    """One validation pass and the training since the previous one."""

    step: int  # global step of the pass's first validation point
    train_loss: float
    valid_loss: float


@dataclass
class TrainingTrace:
    source: str  # where the series come from: "metric log", "smdebug trace", or a mix (see `densest`)
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (global step, loss)
    valid_loss: list[tuple[int, float]] = field(default_factory=list)
    gradient_mean_abs: list[tuple[int, float]] = field(default_factory=list)  # mean over tensors of mean |g|
    nonfinite: list[tuple[int, str]] = field(default_factory=list)  # (global step, tensor) holding NaN or Inf
    mode_step: dict[int, int] = field(default_factory=dict)  # global step -> step within its mode, where known

    def steps_in_mode(self, series: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """`series` by step within its mode (training steps for training losses), where the trace knows it."""
        return [(self.mode_step.get(step, step), value) for step, value in series]

    def phases(self) -> list[Phase]:
        """Mean training and validation loss per validation pass, in order; non-finite values left out."""
        points = sorted([(s, "train", v) for s, v in self.train_loss] + [(s, "valid", v) for s, v in self.valid_loss])
        phases: list[Phase] = []
        train: list[float] = []
        valid: list[float] = []
        first_valid_step = 0

        def close() -> None:
            finite_train, finite_valid = [v for v in train if math.isfinite(v)], [v for v in valid if math.isfinite(v)]
            if finite_train and finite_valid:
                phases.append(Phase(first_valid_step, fmean(finite_train), fmean(finite_valid)))

        for step, mode, value in points:
            if mode == "train":
                if valid:
                    close()
                    train, valid = [], []
                train.append(value)
            else:
                if not valid:
                    first_valid_step = step
                valid.append(value)
        if valid:
            close()
        return phases

    @classmethod
    def densest(cls, *traces: TrainingTrace) -> TrainingTrace:
        """Each series from the trace that holds the most points of it (the first on a tie); non-finite
        tensors from all of them. `source` names where each series came from when they differ."""
        if len(traces) == 1:
            return traces[0]
        merged, sources = cls(""), {}
        for name in SERIES[:3]:
            best = max(traces, key=lambda t: len(getattr(t, name)))
            setattr(merged, name, list(getattr(best, name)))
            sources[name] = best.source
            if name != "gradient_mean_abs":
                merged.mode_step.update({s: best.mode_step[s] for s, _ in getattr(best, name) if s in best.mode_step})
        merged.nonfinite = sorted({item for trace in traces for item in trace.nonfinite})
        if len(set(sources.values())) == 1:
            merged.source = next(iter(sources.values()))
        else:
            merged.source = "; ".join(f"{name.replace('_', ' ')}: {source}" for name, source in sources.items())
        return merged


class MetricLog:
    """Our own record of training: every loss, and gradient/weight checks every `train_interval` training steps.

    Nothing here waits for the device: a step's loss (a tensor) and its checks (tensors too) are kept until
    `settle`, which reads all of them at once, writes their lines to the JSONL file and adds them to the trace.
    Global steps count training and validation batches together, as smdebug does.
    """

    def __init__(self, path: Path, train_interval: int):
        self.path = path
        self.train_interval = train_interval
        self.trace = TrainingTrace(METRIC_LOG)
        self.step = -1
        self.train_steps = 0
        self.valid_steps = 0
        self._pending: list[tuple[int, str, torch.Tensor]] = []  # (global step, mode, loss)
        self._checks: dict[int, tuple[list[str], torch.Tensor]] = {}  # global step -> (names, check values)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("w")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def train_step(self, loss: torch.Tensor, model: nn.Module) -> None:
        self.step += 1
        self.trace.mode_step[self.step] = self.train_steps
        self._pending.append((self.step, "TRAIN", loss.detach()))
        if self.train_steps % self.train_interval == 0:
            self._check_tensors(model)
        self.train_steps += 1

    def valid_step(self, loss: torch.Tensor) -> None:
        self.step += 1
        self.trace.mode_step[self.step] = self.valid_steps
        self.valid_steps += 1
        self._pending.append((self.step, "EVAL", loss.detach()))

    @torch.no_grad()
    def _check_tensors(self, model: nn.Module) -> None:
        """Queue, per gradient and weight, its L1 norm: NaN or infinite when the tensor holds NaN or infinity,
        and over the number of elements the mean |value|."""
        named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
        if not named:
            return
        names = [f"gradient/{name}" for name, _ in named] + [f"weight/{name}" for name, _ in named]
        norms = [torch.linalg.vector_norm(p.grad, 1) / p.grad.numel() for _, p in named]
        norms += [torch.linalg.vector_norm(p, 1) for _, p in named]
        self._checks[self.step] = (names, torch.stack(norms).float())

    def settle(self) -> None:
        """Read what is pending (one wait for the device), write its lines and add it to the trace."""
        if not self._pending and not self._checks:
            return
        losses = torch.stack([loss.float() for _, _, loss in self._pending]).tolist() if self._pending else []
        checks = {step: (names, values.tolist()) for step, (names, values) in self._checks.items()}
        lines = []
        for (step, mode, _), loss in zip(self._pending, losses, strict=True):
            record: dict = {"step": step, "mode": mode, "loss": loss}
            if mode == "TRAIN":
                self.trace.train_loss.append((step, loss))
                if not math.isfinite(loss):
                    self.trace.nonfinite.append((step, "loss"))
            else:
                self.trace.valid_loss.append((step, loss))
                if not math.isfinite(loss):
                    self.trace.nonfinite.append((step, "validation loss"))
            if step in checks:
                record.update(self._record_check(step, *checks.pop(step)))
            lines.append(json.dumps(record) + "\n")
        for step, check in checks.items():  # checks of steps whose loss was settled earlier (not expected)
            lines.append(json.dumps({"step": step, "mode": "TRAIN", **self._record_check(step, *check)}) + "\n")
        self._pending, self._checks = [], {}
        if self._file:
            self._file.write("".join(lines))

    def _record_check(self, step: int, names: list[str], values: list[float]) -> dict:
        bad = [name for name, value in zip(names, values, strict=True) if not math.isfinite(value)]
        self.trace.nonfinite.extend((step, name) for name in bad)
        checked = zip(names, values, strict=True)
        gradients = [v for name, v in checked if name.startswith("gradient/") and math.isfinite(v)]
        mean_abs = fmean(gradients) if gradients else None
        if mean_abs is not None:
            self.trace.gradient_mean_abs.append((step, mean_abs))
        return {"gradient_mean_abs": mean_abs, "nonfinite": bad}

    def flush(self) -> None:
        self.settle()
        if self._file:
            self._file.flush()

    def close(self) -> None:
        self.settle()
        if self._file:
            self._file.close()
            self._file = None


class SmdebugReader:
    """Reads an smdebug trace (ours or one SageMaker configured) with `smdebug.trials`, each step once."""

    def __init__(self, path: Path):
        self.path = path
        self._trial = None
        self._seen: set[tuple[str, int]] = set()
        self.trace = TrainingTrace(SMDEBUG_TRACE)

    def read(self) -> TrainingTrace:
        """The trace so far; steps still being written are picked up by a later call."""
        from smdebug.core.modes import ModeKeys
        from smdebug.trials import create_trial

        if self._trial is None:
            if not any(self.path.glob("collections/*/*.json")):
                return self.trace  # smdebug writes its collections after the first saved step; a trial waits for them
            self._trial = create_trial(str(self.path))
        trial = self._trial
        for name in trial.tensor_names(collection="losses"):
            for step, value in self._new_values(name, reduction=None):
                mode, self.trace.mode_step[step] = trial.mode_modestep(step)
                if mode == ModeKeys.TRAIN:
                    self.trace.train_loss.append((step, value))
                elif mode == ModeKeys.EVAL:
                    self.trace.valid_loss.append((step, value))
                if not math.isfinite(value):
                    self.trace.nonfinite.append((step, name))
        by_step: dict[int, list[float]] = {}
        for collection in ("gradients", "weights"):
            for name in trial.tensor_names(collection=collection):
                for step, value in self._new_values(name, reduction="mean"):
                    if not math.isfinite(value):
                        self.trace.nonfinite.append((step, name))
                    elif collection == "gradients":
                        by_step.setdefault(step, []).append(value)
        self.trace.gradient_mean_abs.extend((step, fmean(values)) for step, values in sorted(by_step.items()))
        for series in (self.trace.train_loss, self.trace.valid_loss, self.trace.gradient_mean_abs):
            series.sort()
        return self.trace

    def _new_values(self, name: str, reduction: str | None) -> list[tuple[int, float]]:
        from smdebug.exceptions import SMDebugError, StepNotYetAvailable, StepUnavailable, TensorUnavailableForStep

        tensor = self._trial.tensor(name)
        values = []
        for step in tensor.steps():
            if (name, step) in self._seen:
                continue
            try:
                raw = tensor.value(step) if reduction is None else tensor.reduction_value(step, reduction, abs=True)
            except (StepNotYetAvailable, StepUnavailable, TensorUnavailableForStep, SMDebugError):
                continue  # not complete yet
            self._seen.add((name, step))
            values.append((step, float(raw)))
        return values
