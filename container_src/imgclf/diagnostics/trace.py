"""What the training rules read: losses by mode, gradient magnitudes and non-finite tensors over global steps,
from the smdebug trace when the hook is on, else from our own metric log."""

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


@dataclass
class Phase:
    """One validation pass and the training since the previous one."""

    step: int  # global step of the pass's first validation point
    train_loss: float
    valid_loss: float


@dataclass
class TrainingTrace:
    source: str  # "smdebug trace" or "metric log"
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (global step, loss)
    valid_loss: list[tuple[int, float]] = field(default_factory=list)
    gradient_mean_abs: list[tuple[int, float]] = field(default_factory=list)  # mean over tensors of mean |g|
    nonfinite: list[tuple[int, str]] = field(default_factory=list)  # (global step, tensor) holding NaN or Inf

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


class MetricLog:
    """Our own record of training: every loss, and gradient/weight checks every `train_interval` training steps.

    Global steps count training and validation batches together, as smdebug does. Lines go to a JSONL file.
    """

    def __init__(self, path: Path, train_interval: int):
        self.path = path
        self.train_interval = train_interval
        self.trace = TrainingTrace("metric log")
        self.step = -1
        self.train_steps = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("w")

    def _write(self, record: dict) -> None:
        if self._file:
            self._file.write(json.dumps(record) + "\n")

    def train_step(self, loss: float, model: nn.Module) -> None:
        self.step += 1
        self.trace.train_loss.append((self.step, loss))
        record: dict = {"step": self.step, "mode": "TRAIN", "loss": loss}
        if not math.isfinite(loss):
            self.trace.nonfinite.append((self.step, "loss"))
        if self.train_steps % self.train_interval == 0:
            record.update(self._check_tensors(model))
        self.train_steps += 1
        self._write(record)

    def valid_step(self, loss: float) -> None:
        self.step += 1
        self.trace.valid_loss.append((self.step, loss))
        if not math.isfinite(loss):
            self.trace.nonfinite.append((self.step, "validation loss"))
        self._write({"step": self.step, "mode": "EVAL", "loss": loss})

    @torch.no_grad()
    def _check_tensors(self, model: nn.Module) -> dict:
        named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
        if not named:
            return {}
        grads = [p.grad for _, p in named]
        mean_abs = torch.stack([g.abs().mean() for g in grads]).float()
        weights_finite = torch.stack([p.isfinite().all() for _, p in named])
        grads_finite = torch.stack([g.isfinite().all() for g in grads])
        bad = [f"weight/{name}" for (name, _), ok in zip(named, weights_finite.tolist(), strict=True) if not ok]
        bad += [f"gradient/{name}" for (name, _), ok in zip(named, grads_finite.tolist(), strict=True) if not ok]
        finite_means = mean_abs[mean_abs.isfinite()]
        if len(finite_means):
            self.trace.gradient_mean_abs.append((self.step, finite_means.mean().item()))
        self.trace.nonfinite.extend((self.step, name) for name in bad)
        return {"gradient_mean_abs": finite_means.mean().item() if len(finite_means) else None, "nonfinite": bad}

    def flush(self) -> None:
        if self._file:
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


class SmdebugReader:
    """Reads an smdebug trace (ours or one SageMaker configured) with `smdebug.trials`, each step once."""

    def __init__(self, path: Path):
        self.path = path
        self._trial = None
        self._seen: set[tuple[str, int]] = set()
        self.trace = TrainingTrace("smdebug trace")

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
                mode = trial.mode(step)
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
