"""Tuning on this machine: real trials through the process backend on tiny real JPEGs, the median rule
stopping a planted bad trial, the objective read from each job's log, and the results saved."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, default_sigint, write_split

from launcher.backends import TrainingSpec
from launcher.backends.process import ProcessBackend
from launcher.cli import main
from launcher.records import RecordStore
from launcher.tuning import OptunaTuner, TuningSpec

pytestmark = pytest.mark.slow  # real tuning trials

# Fine-tuning the head of a "pretrained" backbone (conftest's `backbone`): quick, and validation loss at
# epoch 1 already tells a learning rate of 0 from a useful one.
FIXED = {"epochs": 3, "batch_size": 6, "image_size": 32, "num_workers": 1, "freeze_backbone": True,
         "profiler_interval_ms": 0}  # fmt: skip


def dataset(root: Path) -> Path:
    write_split(root / "train", per_class=12)
    write_split(root / "valid", per_class=2)
    write_split(root / "test", per_class=2)
    return root


def tuning(tmp_path: Path, backbone: Path, **options) -> TuningSpec:
    channels = {"training": str(dataset(tmp_path / "data")), "pretrained": str(backbone)}
    training = TrainingSpec(job_name="unused", channels=channels, hyperparameters=FIXED)
    return TuningSpec(name="tune-1", training=training, **options)


def test_tuning_with_early_stopping_stops_the_bad_trials(tmp_path: Path, backbone: Path, capsys):
    # Six grid points, two of them useless (learning rate 0). The median rule starts judging at the third trial
    # and must stop every useless trial from there (others may be stopped too: slower learners are below median).
    ranges = {
        "learning_rate": "CategoricalParameter([0.0, 0.002, 0.004])",
        "batch_size": "CategoricalParameter([4, 6])",
    }
    spec = tuning(tmp_path, backbone, ranges=ranges, strategy="Grid", max_jobs=6, early_stopping="Auto")
    workdir = tmp_path / "work"
    backend = ProcessBackend(workdir, RecordStore(workdir / "records"))

    record = OptunaTuner(spec, backend, workdir / "tuning" / "tune-1").run().to_json()

    rows = json.loads((workdir / "tuning" / "tune-1" / "results.json").read_text())
    assert len(rows) == 6 and record["trials"] == 6
    useless = [r for r in rows if r["hyperparameters"]["learning_rate"] == 0.0 and r["trial"] > 2]
    assert useless and all(r["stopped_early"] and r["stopped_at_epoch"] < 3 for r in useless), rows
    assert record["stopped_early"] == sum(r["stopped_early"] for r in rows)
    for row in rows:  # the objective is what the job's log says, by SageMaker's regex
        log = (workdir / "jobs" / row["job_name"] / "train.log").read_text()
        if row["status"] == "Completed":
            assert row["objective"] == float(re.findall(r"valid loss: ([0-9.eE+-]+)", log)[-1])  # the last epoch's
        else:  # the median rule's verdict; a job quicker than the log's polling may have ended before the stop
            assert row["status"] == "Stopped" and row["stopped_early"]
            assert not (workdir / "jobs" / row["job_name"] / "checkpoints").exists()  # never resumed: freed
    best = json.loads((workdir / "tuning" / "tune-1" / "best.json").read_text())
    completed = [r for r in rows if r["status"] == "Completed"]
    assert best["objective"] == min(r["objective"] for r in completed)
    assert best["hyperparameters"]["epochs"] == 3 and best["hyperparameters"]["learning_rate"] > 0
    with (workdir / "tuning" / "tune-1" / "results.csv").open() as table:
        assert len(list(csv.DictReader(table))) == 6
    printed = capsys.readouterr().out
    assert "stopped early" in printed and "yes (epoch" in printed
    assert "<svg" in (workdir / "tuning" / "tune-1" / "results.html").read_text()


def test_an_interrupted_tuning_run_resumes_without_repeating_finished_trials(tmp_path: Path, backbone: Path):
    data = dataset(tmp_path / "data")
    config = tmp_path / "job.yaml"
    config.write_text(
        f"channels: {{training: {data}, pretrained: {backbone}}}\n"
        f"hyperparameters: {json.dumps({**FIXED, 'epochs': 2})}\n"
        "tuning:\n"
        "  ranges:\n"
        "    learning_rate: ContinuousParameter(0.001, 0.01)\n"
        "  strategy: Random\n"
        "  max_jobs: 3\n"
    )
    work = tmp_path / "work"
    command = [str(BIN / "launcher"), "--workdir", str(work), "tune", "--config", str(config), "--name", "t1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=default_sigint)  # fmt: skip
    deadline = time.time() + 300
    while not (work / "jobs" / "t1-002").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # Ctrl-C during the second trial
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, output

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 3 trials done, running 2" in second.stderr
    rows = json.loads((work / "tuning" / "t1" / "results.json").read_text())
    assert [r["job_name"] for r in rows] == ["t1-001", "t1-003", "t1-004"]  # trial 1 kept, trial 2 run again
    assert all(r["status"] == "Completed" for r in rows)
    interrupted = json.loads((work / "records" / "jobs" / "t1-002.json").read_text())
    assert interrupted["status"] == "Stopped"
    tuning = json.loads((work / "records" / "tuning" / "t1.json").read_text())
    assert tuning["best"]["job_name"] in {"t1-001", "t1-003", "t1-004"}
    assert main(["--workdir", str(work), "train", "--from-tuning", "t1", "--data", str(data),
                 "--channel", f"pretrained={backbone}", "--job-name", "best-1"]) == 0  # fmt: skip
    best_job = json.loads((work / "records" / "jobs" / "best-1.json").read_text())
    assert best_job["hyperparameters"]["learning_rate"] == tuning["best"]["hyperparameters"]["learning_rate"]
