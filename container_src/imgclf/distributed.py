"""Data-parallel training: one process per accelerator on every host, started by PyTorch's elastic launcher
(`torch.distributed.run`) and joined with torch DDP (NCCL on GPU, gloo on CPU).

World = hosts x processes per host; global rank = host rank x processes per host + local rank, where the host
rank is the host's place in sorted order. Global rank 0 prints the tuner's lines and writes the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from imgclf.environment import TrainingEnv
from imgclf.errors import EXIT_INTERNAL_ERROR, EXIT_STOPPED, EXIT_USER_ERROR, Preempted, UserError, WorkersFailed

log = logging.getLogger(__name__)

MASTER_PORT = 29500
# How long a collective may wait for the other processes (the first one includes the slowest data scan).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
STRAGGLER_RATIO = 1.2  # a rank whose median step takes this much longer than the fastest rank's


@dataclass(frozen=True)
class Cluster:
    """This process's place among the job's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set in any process; every process must call it at the same point of its loop."""
        if not self.is_distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, value: float) -> list[float]:
        """Every process's `value`, in rank order (a collective, like `any`)."""
        if not self.is_distributed:
            return [value]
        values: list[float] = [0.0] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def processes_per_host(requested: int, gpu_count: int) -> int:
    """`requested`, or with 0 ("auto") one per GPU, and one on a host without GPUs."""
    return requested or max(gpu_count, 1)


def local_rank() -> int:
    """This process's rank on its host: 0 unless started by `torch.distributed.run`."""
    return int(os.environ.get("LOCAL_RANK", 0))


def launched() -> bool:
    """Whether this process is one of the processes `torch.distributed.run` started."""
    return "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def launch(env: TrainingEnv, processes: int, module: str) -> None:
    """Run `python -m <module>` `processes` times on this host with `torch.distributed.run`, in one process group
    with the job's other hosts; return once all of them succeeded.

    Raises `WorkersFailed` when a process fails, and `Preempted` when this process gets SIGTERM. Either way the
    launcher sends SIGTERM to the processes still running (which checkpoint at their next step and exit 143)
    and SIGKILL to those left after 30 seconds.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    hosts = sorted(env.hosts)
    if env.network_interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", env.network_interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", env.network_interface)
    # torch.distributed.run would set 1 thread per process; share the host's cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    if len(hosts) == 1:
        where = ["--standalone"]  # a rendezvous on a free local port: jobs on one machine do not collide
    else:
        where = ["--node-rank", str(hosts.index(env.current_host)), "--master-addr", hosts[0], "--master-port",
                 str(MASTER_PORT)]  # fmt: skip
    options = ["--nnodes", str(len(hosts)), "--nproc-per-node", str(processes), *where, "--max-restarts", "0",
               "--monitor-interval", "0.5", "--module", module]  # fmt: skip
    args = get_args_parser().parse_args(options)
    log.info("starting %d training processes on host %s (%d of %d hosts)", processes, env.current_host,
             hosts.index(env.current_host) + 1, len(hosts))  # fmt: skip
    try:
        run(args)
    except SignalException as stop:
        raise Preempted(f"stopped by {signal.Signals(stop.sigval).name}; the training processes were told") from None
    except ChildFailedError as failed:
        ended = sorted(failed.failures.items())
        codes = {failure.exitcode for _, failure in ended}
        # A user error in one process makes the others fail in their next collective: it is the cause.
        exit_code = (EXIT_USER_ERROR if EXIT_USER_ERROR in codes else EXIT_STOPPED if codes == {EXIT_STOPPED}
                     else EXIT_INTERNAL_ERROR)  # fmt: skip
        how = ", ".join(f"rank {rank} " + _how_it_ended(failure.exitcode) for rank, failure in ended)
        raise WorkersFailed(f"training processes ended: {how}", exit_code) from None


def _how_it_ended(exit_code: int) -> str:
    return f"by signal {signal.Signals(-exit_code).name}" if exit_code < 0 else f"with status {exit_code}"


def join(device: torch.device) -> Cluster:
    """Join the process group `torch.distributed.run` set up for this process; a lone process needs none."""
    if not launched():
        return Cluster(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    log.info("joining the %s process group as rank %d of %d", backend, rank, world_size)
    try:
        dist.init_process_group(backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT,
                                device_id=device if device.type == "cuda" else None)  # fmt: skip
    except (RuntimeError, ValueError) as err:
        raise UserError(f"could not join the other training processes: {err}") from err
    return Cluster(rank=rank, world_size=world_size, local_rank=local_rank(), device=device)


def step_spread(step_seconds: list[float]) -> str:
    """A line for the report: each process's median step time and, where one lags, which one."""
    if len(step_seconds) < 2 or min(step_seconds) <= 0:
        return ""
    slowest = max(range(len(step_seconds)), key=step_seconds.__getitem__)
    ratio = step_seconds[slowest] / min(step_seconds)
    times = ", ".join(f"rank {rank} {seconds * 1000:.0f} ms" for rank, seconds in enumerate(step_seconds))
    verdict = (f"rank {slowest} is a straggler ({ratio:.2f}x the fastest): every rank waits for it at each step"
               if ratio > STRAGGLER_RATIO else f"no straggler (slowest/fastest {ratio:.2f})")  # fmt: skip
    return f"Median step time per rank: {times}; {verdict}."


def wrap(model: nn.Module, cluster: Cluster, device: torch.device) -> nn.Module:
    """DDP averages gradients across processes, so every replica takes the same steps."""
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
