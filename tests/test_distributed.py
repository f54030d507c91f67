"""Several training processes on one host (torch.distributed.run, gloo on the CPU) through the real `train`: two
train as well as one with the same global batch, rank 0's weights are what is saved, the tuner's lines come once,
and a process that dies ends the whole job with the reason in output/failure instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import torch
from conftest import BIN, HOST_RUN_ENV, make_job, run_entry_point

from imgclf.distributed import fingerprint
from launcher.sample_data import write_digits

pytestmark = pytest.mark.slow  # training in several processes

# AdamW converges from scratch in a few epochs, so the two runs' accuracies are not at the mercy of noise.
HYPERPARAMETERS = {"epochs": "4", "image_size": "32", "pretrained": "false", "optimizer": "adamw",
                   "learning_rate": "0.002", "debug_hook": "false"}  # fmt: skip
GLOBAL_BATCH = 32


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_digits(root, size=32)  # 1,258 train, 269 valid, 270 test images
    return root


def job(base: Path, digits: Path, processes: int, **hyperparameters: str) -> Path:
    batch_size = str(GLOBAL_BATCH // processes)  # per process, as in torchvision's references
    hps = {**HYPERPARAMETERS, "processes_per_host": str(processes), "batch_size": batch_size, **hyperparameters}
    return make_job(base, {"training": digits}, hps)


def test_two_processes_train_as_well_as_one_and_save_rank_0s_weights(digits: Path, tmp_path: Path):
    runs = {}
    for processes in (1, 2):
        base = job(tmp_path / f"{processes}-processes", digits, processes)
        result = run_entry_point("train", base, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs[processes] = (base, result.stdout)

    accuracy = {p: json.loads((base / "output/data/metrics.json").read_text())["test"]["accuracy"]
                for p, (base, _) in runs.items()}  # fmt: skip
    assert accuracy[2] >= accuracy[1] - 0.02, accuracy
    base, log = runs[2]
    assert log.count("test accuracy:") == 1 and log.count("epoch: 4 train loss") == 1  # rank 0 speaks for the job
    reports = sorted((json.loads(p.read_text()) for p in (base / "output/data/hosts").glob("*.json")),
                     key=lambda report: report["rank"])  # fmt: skip
    assert [(r["rank"], r["local_rank"], r["world_size"]) for r in reports] == [(0, 0, 2), (1, 1, 2)]
    # Each process trained on its own half of the 1,258 images (the sampler pads the odd one), every epoch.
    assert [r["trained_images"] for r in reports] == [629 * 4, 629 * 4]
    assert reports[0]["parameters_sha256"] == reports[1]["parameters_sha256"]  # DDP kept the replicas in step
    saved = torch.load(base / "model/model.pth", weights_only=True)
    assert fingerprint(saved) == reports[0]["state_sha256"]
    assert "Median step time per rank: rank 0" in (base / "output/data/report/report.html").read_text()


def test_a_training_process_that_dies_ends_the_job_with_the_reason(digits: Path, tmp_path: Path):
    base = job(tmp_path / "job", digits, 2, epochs="50")
    env = {**os.environ, **HOST_RUN_ENV, "SAGEMAKER_BASE_DIR": str(base)}
    train = subprocess.Popen([str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)  # fmt: skip
    lines = []
    for line in train.stdout:
        lines.append(line)
        if "epoch 1 step" in line:  # both processes are in the training steps
            break
    workers = [p for p in psutil.Process(train.pid).children() if "imgclf.worker" in p.cmdline()]
    rank_1 = [p for p in workers if p.environ().get("RANK") == "1"]
    assert len(workers) == 2 and len(rank_1) == 1, "".join(lines)
    rank_1[0].send_signal(signal.SIGKILL)  # as the kernel's OOM killer would

    lines.extend(train.stdout)
    status = train.wait(timeout=120)  # the other process is stopped, not left waiting for its peer

    log = "".join(lines)
    assert status == 2, log[-3000:]
    reason = (base / "output/failure").read_text()
    assert reason.startswith("AlgorithmError: training processes ended:") and "rank 1 by signal SIGKILL" in reason
    assert not (base / "output/success").exists() and not (base / "model/model.pth").exists()
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
