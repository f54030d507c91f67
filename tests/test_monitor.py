"""The system monitor: a job of any length gets a sample near its start and one at its end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from imgclf.diagnostics.monitor import SystemMonitor


def test_a_job_shorter_than_one_interval_gets_a_first_and_a_last_sample(tmp_path: Path):
    monitor = SystemMonitor(tmp_path / "system.jsonl", interval=3600).start()
    sum(range(10**6))  # a little work while it watches
    monitor.stop()

    assert len(monitor.samples) == 2
    first, last = monitor.samples
    assert first.time < last.time
    assert len(first.cpu) == len(last.cpu) == psutil.cpu_count()
    lines = (tmp_path / "system.jsonl").read_text().splitlines()
    assert [json.loads(line)["time"] for line in lines] == [first.time, last.time]


def test_samples_keep_coming_at_the_interval_and_end_with_the_job(tmp_path: Path):
    monitor = SystemMonitor(tmp_path / "system.jsonl", interval=0.05).start()
    for _ in range(500):  # the first near the start, then one an interval (bounded: 10 s at most)
        if len(monitor.samples) >= 4:
            break
        time.sleep(0.02)
    monitor.stop()
    count = len(monitor.samples)
    assert count >= 5  # and one more at the end
    time.sleep(0.2)
    assert len(monitor.samples) == count  # nothing after the end
    assert all(a.time < b.time for a, b in zip(monitor.samples, monitor.samples[1:], strict=False))
