"""Checkpoints, so that an interrupted job (a spot interruption, a stop) goes on where it stopped.

SageMaker sends SIGTERM, then SIGKILL; with `checkpoint_s3_uri` it syncs `/opt/ml/checkpoints` with S3 and
restores it when the job starts again. A checkpoint holds the model, optimizer, scheduler and fp16 gradient
scaler states, the RNG states, the position (epoch, steps done, the epoch's running sums) and the history so
far. It is written atomically at each epoch's end, every `checkpoint_interval` steps if set, and at the next
step boundary after SIGTERM, and removed once the job has saved its model. With several training processes,
all of them agree at every step boundary whether any got SIGTERM (one all-reduced flag), so they all stop
after the same step; rank 0 writes the checkpoint and every process resumes from it. A job that finds one resumes from
it, on exactly the batches it would have seen (see `data.EpochSampler`). Files are read with
`weights_only=True`: nothing is unpickled but tensors and plain containers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgclf.distributed import Cluster
from imgclf.errors import Preempted, UserError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1


@dataclass
class EpochProgress:
    """Where an epoch of training stands: steps done and running sums (what a checkpoint keeps mid-epoch)."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    dropped: int = 0


@dataclass
class TrainingState:
    """Where the job stands: the epoch under way and its progress, the finished epochs' metrics."""

    epoch: int = 1
    progress: EpochProgress = field(default_factory=EpochProgress)
    history: list[dict] = field(default_factory=list)
    trained_images: int = 0

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainingState:
        return cls(**{**saved, "progress": EpochProgress(**saved["progress"])})


class Checkpointer:
    """Saves and restores the job's state in `folder`; turns SIGTERM into a checkpoint and `Preempted`.

    `identity` is what must match for a checkpoint to be this job's (hyperparameters that shape training, the
    classes); a checkpoint of another job is refused rather than silently resumed.
    """

    def __init__(
        self,
        folder: Path,
        identity: dict[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        interval: int = 0,
        cluster: Cluster | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.path = folder / CHECKPOINT_FILE
        self.identity, self.model, self.optimizer, self.scheduler = identity, model, optimizer, scheduler
        self.interval, self.scaler = interval, scaler
        self.cluster = cluster or Cluster()
        self.writer = self.cluster.is_primary
        self.stop_requested = threading.Event()
        self._previous_handler: Any = signal.SIG_DFL

    # -- SIGTERM ----------------------------------------------------------------------------------------------
    def handle_sigterm(self) -> None:
        """From now on SIGTERM asks for a checkpoint at the next step boundary instead of ending the process."""
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, _signum: int, _frame: object) -> None:
        log.warning("SIGTERM: saving a checkpoint at the end of this step, then stopping")
        self.stop_requested.set()

    def _stopping(self) -> bool:
        """Whether any process got SIGTERM; all processes call this at the same step boundaries."""
        return self.cluster.any(self.stop_requested.is_set())

    def training_ended(self) -> None:
        """All epochs are done: stop now if SIGTERM came after the last check; from here on (testing, saving
        the model) SIGTERM ends `train` at once again, as it would without checkpoints."""
        if self._stopping():
            raise Preempted("stopped by SIGTERM after the last epoch, before testing")
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_handler)

    # -- saving -----------------------------------------------------------------------------------------------
    def after_step(self, state: TrainingState, settle: Callable[[], None] | None = None) -> None:
        """Save every `interval` steps, and on SIGTERM (then raise Preempted). `settle` brings `state` up to
        date first (the loop keeps its running sums on the device and reads them only when needed)."""
        stopping = self._stopping()
        if stopping or (self.interval and state.progress.step % self.interval == 0):
            if settle:
                settle()
            self.save(state)
        if stopping:
            raise Preempted(f"stopped by SIGTERM in epoch {state.epoch} after step {state.progress.step}")

    def after_epoch(self, state: TrainingState) -> None:
        """Save at the end of every epoch (`state` already points at the next one); raise Preempted on SIGTERM."""
        self.save(state)
        if self._stopping():
            raise Preempted(f"stopped by SIGTERM after epoch {state.epoch - 1}")

    def save(self, state: TrainingState) -> None:
        """Rank 0 writes; the other processes wait until it has (so none ends before the checkpoint exists)."""
        if self.writer:
            self._write(state)
        self.cluster.barrier()

    def _write(self, state: TrainingState) -> None:
        checkpoint = {
            "format": FORMAT,
            "identity": self.identity,
            "state": dataclasses.asdict(state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": _rng_states(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(checkpoint, partial)
        os.replace(partial, self.path)  # a reader sees the old checkpoint or the new one, never half of one
        log.info("checkpoint saved: epoch %d, step %d -> %s", state.epoch, state.progress.step, self.path)

    def discard(self) -> None:
        """The job completed and its model is saved: a checkpoint has nothing left to resume."""
        if self.writer:
            self.path.unlink(missing_ok=True)

    # -- resuming ---------------------------------------------------------------------------------------------
    def resume(self) -> TrainingState:
        """Load the checkpoint into the model, optimizer and scheduler if there is one; return where to go on."""
        if not self.path.is_file():
            return TrainingState()
        try:
            checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: unpickling errors of many kinds
            raise UserError(
                f"checkpoint {self.path} cannot be read ({type(err).__name__}: {err}); remove it to start over"
            ) from err
        if checkpoint.get("format") != FORMAT or checkpoint.get("identity") != self.identity:
            raise UserError(
                f"checkpoint {self.path} belongs to another job (saved with {checkpoint.get('identity')}, this job "
                f"is {self.identity}); remove it, or give this job its own checkpoint folder"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler and checkpoint["scaler"]:
            self.scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_states(checkpoint["rng"])
        state = TrainingState.from_dict(checkpoint["state"])
        log.info("resuming from %s: epoch %d after step %d", self.path, state.epoch, state.progress.step)
        return state


def _rng_states() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
