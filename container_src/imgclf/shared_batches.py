"""Batches handed from loader workers to the training process in shared-memory buffers that are used again.

A DataLoader worker stacks each batch into a new shared-memory segment, which the kernel hands out page by page
(zeroed) and the training process maps, unmaps and frees again: on 2 cores about a twentieth of the pipeline's
time. Here each worker keeps `SLOTS` buffers and stacks a batch into one the training process has let go of: the
training process watches each such batch's memory (a weak reference to its storage) and marks its slot free once
nothing refers to it. A batch that is kept (in a list, by a test) keeps its slot busy; a worker that finds no free
slot stacks into a new segment as before, so no batch is overwritten while anything can still read it. So does a
worker where shared memory is short (`room_for`).
"""

from __future__ import annotations

import math
import shutil
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader, default_collate, get_worker_info

SHARED_MEMORY = "/dev/shm"
SLOTS = 4  # per worker: its batches in the loader's queue (prefetch_factor 2), the one in use, the one before it


class Batch(tuple):
    """(images, labels, dropped), as the collate functions give them; `slot`: the shared buffer `images` is in.
    Rebuilt field by field, as a named tuple is, where DataLoader pins a batch (`_fields`)."""

    _fields = ("images", "labels", "dropped")
    slot: int | None

    def __new__(cls, images: Any, labels: torch.Tensor, dropped: int, slot: int | None = None) -> Batch:
        batch = super().__new__(cls, (images, labels, dropped))
        batch.slot = slot
        return batch

    def __reduce__(self) -> tuple[type[Batch], tuple[Any, ...]]:
        return Batch, (*self, self.slot)


class SharedBatches:
    """Each loader worker's `slots` reusable buffers, and which of them the training process still holds."""

    def __init__(self, workers: int, slots: int = SLOTS):
        self.slots = slots
        self.busy = torch.zeros(workers * slots, dtype=torch.bool).share_memory_()
        self.buffers: dict[int, torch.Tensor] = {}  # in a worker: its slots' buffers, made on first use
        self.watched: list[tuple[StorageWeakRef, int]] = []  # in the training process

    def __getstate__(self) -> dict[str, Any]:  # a worker gets the flags, not the training process's references
        return {**self.__dict__, "buffers": {}, "watched": []}

    def stack(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, int | None]:
        """In a loader worker: `images` stacked into one of its free buffers, and that slot; where none is free (or
        outside a worker), stacked as `default_collate` does, and None."""
        worker = get_worker_info()
        mine = range(worker.id * self.slots, (worker.id + 1) * self.slots) if worker else range(0)
        slot = next((slot for slot in mine if not self.busy[slot]), None)
        if slot is None:
            return default_collate(images), None
        shape = (len(images), *images[0].shape)
        buffer = self.buffers.get(slot)
        if buffer is None or buffer.shape != shape or buffer.dtype != images[0].dtype:
            if not room_for(shape, images[0].dtype, worker.num_workers):
                return default_collate(images), None
            buffer = self.buffers[slot] = torch.empty(shape, dtype=images[0].dtype).share_memory_()
        self.busy[slot] = True
        return torch.stack(images, out=buffer), slot

    def watch(self, batch: Batch) -> None:
        """In the training process, as `batch` arrives: free the slots of the batches nothing refers to any more, and
        watch this one's."""
        held = []
        for storage, slot in self.watched:
            if storage.expired():
                self.busy[slot] = False
            else:
                held.append((storage, slot))
        if batch.slot is not None:
            held.append((StorageWeakRef(batch[0].untyped_storage()), batch.slot))
        self.watched = held


def room_for(shape: tuple[int, ...], dtype: torch.dtype, workers: int) -> bool:
    """Whether shared memory (/dev/shm: 64 MB in a Docker container by default) keeps room, with one more buffer,
    for the batches the loader's workers have on their way anyway (two each); where it does not, workers hand
    over as DataLoader does by itself."""
    size = math.prod(shape) * dtype.itemsize
    try:
        free = shutil.disk_usage(SHARED_MEMORY).free
    except OSError:  # no /dev/shm to ask (not Linux)
        return True
    return free >= size * (1 + 2 * workers)


class SharedBatchLoader(DataLoader):
    """A DataLoader whose collate function stacks into `shared`'s buffers, which it frees as batches are let go."""

    def __init__(self, *args: Any, shared: SharedBatches, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shared = shared

    def __iter__(self) -> Any:
        for batch in super().__iter__():
            self.shared.watch(batch)
            yield batch
