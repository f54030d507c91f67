"""Data-parallel training across the job's hosts: one process per host, torch DDP (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from imgclf.environment import TrainingEnv

log = logging.getLogger(__name__)

MASTER_PORT = 29500
CONNECT_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Cluster:
    """This host's place among the job's hosts; rank 0 (the first host in sorted order) writes the model."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def join(env: TrainingEnv, device: torch.device) -> Cluster:
    """Start the process group over the hosts in resourceconfig.json; a single host needs none."""
    hosts = sorted(env.hosts)
    if len(hosts) == 1:
        return Cluster()
    if env.network_interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", env.network_interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", env.network_interface)
    cluster = Cluster(rank=hosts.index(env.current_host), world_size=len(hosts))
    backend = "nccl" if device.type == "cuda" else "gloo"
    log.info("joining %s process group as rank %d of %d (master %s)", backend, cluster.rank, len(hosts), hosts[0])
    dist.init_process_group(
        backend,
        init_method=f"tcp://{hosts[0]}:{MASTER_PORT}",
        rank=cluster.rank,
        world_size=cluster.world_size,
        timeout=CONNECT_TIMEOUT,
    )
    return cluster


def wrap(model: nn.Module, cluster: Cluster, device: torch.device) -> nn.Module:
    """DDP averages gradients across hosts, so every replica takes the same steps."""
    if not cluster.is_distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def leave(cluster: Cluster) -> None:
    if cluster.is_distributed:
        dist.barrier()
        dist.destroy_process_group()


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of tensors' values in key order: equal fingerprints mean equal weights."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
