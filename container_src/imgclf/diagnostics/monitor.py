"""A background sampler of the machine: CPU per core, memory, I/O wait, disk and network rates, and GPU
utilisation and memory through NVML when a GPU exists."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import psutil

log = logging.getLogger(__name__)

MIN_WINDOW = 0.1  # seconds: the shortest span a sample averages over (CPU percentages need one)


@dataclass
class SystemSample:
    time: float  # seconds since the epoch
    cpu: list[float]  # percent busy, per core
    memory: float  # percent used
    iowait: float  # percent of CPU time waiting for I/O
    disk_read: float  # bytes/s
    disk_write: float
    net_recv: float
    net_sent: float
    gpu: list[float] = field(default_factory=list)  # percent busy, per GPU
    gpu_memory: list[float] = field(default_factory=list)  # percent used, per GPU

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu) / max(len(self.cpu), 1)


class _Nvml:
    """GPU utilisation and memory per device, or nothing when NVML is missing."""

    def __init__(self) -> None:
        self.handles: list = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception as err:  # no driver, no GPU or no nvidia-ml-py: GPU metrics are simply absent
            log.debug("NVML unavailable: %r", err)

    def read(self) -> tuple[list[float], list[float]]:
        utilisation, memory = [], []
        for handle in self.handles:
            utilisation.append(float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            memory.append(100.0 * info.used / max(info.total, 1))
        return utilisation, memory


class SystemMonitor:
    """Samples every `interval` seconds in a daemon thread; keeps the samples and appends them to a JSONL file.

    Whatever the interval, a job gets a sample near its start and one at its end (`stop`), so even a job shorter
    than one interval has a line to draw. Each sample's rates cover the time since the previous one.
    """

    def __init__(self, path: Path, interval: float):
        self.path = path
        self.interval = interval
        self.samples: list[SystemSample] = []
        self.gpus = _Nvml()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-monitor", daemon=True)

    def start(self) -> SystemMonitor:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the last sample and end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        psutil.cpu_percent(percpu=True)  # the first calls only set the reference point
        psutil.cpu_times_percent()
        self._disk, self._net, self._last = psutil.disk_io_counters(), psutil.net_io_counters(), time.time()
        with self.path.open("w") as out:
            time.sleep(min(self.interval, MIN_WINDOW))  # the first sample, near the start
            self._record(out)
            while not self._stop.wait(self.interval):
                self._record(out)
            time.sleep(max(MIN_WINDOW - (time.time() - self._last), 0.0))  # the last, at the end
            self._record(out)

    def _record(self, out: IO[str]) -> None:
        now = time.time()
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        elapsed = max(now - self._last, 1e-6)
        gpu, gpu_memory = self.gpus.read()
        sample = SystemSample(
            time=now,
            cpu=psutil.cpu_percent(percpu=True),
            memory=psutil.virtual_memory().percent,
            iowait=getattr(psutil.cpu_times_percent(), "iowait", 0.0),
            disk_read=_rate(self._disk, disk, "read_bytes", elapsed),
            disk_write=_rate(self._disk, disk, "write_bytes", elapsed),
            net_recv=_rate(self._net, net, "bytes_recv", elapsed),
            net_sent=_rate(self._net, net, "bytes_sent", elapsed),
            gpu=gpu,
            gpu_memory=gpu_memory,
        )
        self.samples.append(sample)
        out.write(json.dumps(asdict(sample)) + "\n")
        out.flush()
        self._disk, self._net, self._last = disk, net, now


def _rate(before, after, name: str, seconds: float) -> float:
    if before is None or after is None:
        return 0.0
    return max(getattr(after, name) - getattr(before, name), 0) / seconds
