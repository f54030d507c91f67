"""Spot interruption and resume through the real `train` entry point: SIGTERM at a random step writes a
checkpoint and ends the job (status 143); the job started again finishes with weights bit-identical to an
uninterrupted run with the same seed, with one training process and with two (which must agree on the step to
stop at). A checkpoint of another job, or a damaged one, is refused clearly."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import BIN, HOST_RUN_ENV, make_job, run_entry_point, write_split

pytestmark = pytest.mark.slow  # training interrupted and resumed

TRAIN_BATCHES = 12  # 3 classes x 8 images, batches of 2, shared out among the training processes
HYPERPARAMETERS = {"epochs": "2", "batch_size": "2", "image_size": "48", "num_workers": "1", "learning_rate": "0.01",
                   "pretrained": "false", "debug_hook": "false", "profiler_interval_ms": "0"}  # fmt: skip
PROGRESS = re.compile(r"epoch (\d+) step (\d+)/")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_split(root / "train", per_class=8)
    write_split(root / "valid", per_class=2)
    write_split(root / "test", per_class=2)
    return root


@pytest.fixture(scope="module", params=[1, 2], ids=["1-process", "2-processes"])
def processes(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture(scope="module")
def uninterrupted(dataset: Path, processes: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    hyperparameters = {**HYPERPARAMETERS, "processes_per_host": str(processes)}
    base = make_job(tmp_path_factory.mktemp("reference"), {"training": dataset}, hyperparameters)
    result = run_entry_point("train", base)
    assert result.returncode == 0, result.stdout + result.stderr
    return base


def weights(base: Path) -> dict[str, torch.Tensor]:
    return torch.load(base / "model" / "model.pth", map_location="cpu", weights_only=True)


def train_until_sigterm(base: Path, epoch: int, step: int, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start `train`, SIGTERM it once its log reports (epoch, step); return its exit status and log."""
    env = {**os.environ, **HOST_RUN_ENV, "SAGEMAKER_BASE_DIR": str(base), **(env or {})}
    process = subprocess.Popen([str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    lines = []
    for line in process.stdout:
        lines.append(line)
        reached = PROGRESS.search(line)
        if reached and (int(reached[1]), int(reached[2])) >= (epoch, step):
            process.send_signal(signal.SIGTERM)
            break
    lines.extend(process.stdout)
    return process.wait(timeout=120), "".join(lines)


# One draw per run, the same in every xdist worker (they must collect the same tests); a new one each run.
SEEDS = random.Random(os.environ.get("PYTEST_XDIST_TESTRUNUID")).sample(range(10**6), 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_sigterm_at_a_random_step_then_resume_is_bit_identical(dataset: Path, processes: int, uninterrupted: Path,
                                                                tmp_path: Path, seed: int):  # fmt: skip
    chooser = random.Random(seed)
    epoch, step = chooser.randint(1, 2), chooser.randint(1, TRAIN_BATCHES // processes - 1)
    hyperparameters = {**HYPERPARAMETERS, "processes_per_host": str(processes)}
    base = make_job(tmp_path / "job", {"training": dataset}, hyperparameters)

    status, log = train_until_sigterm(base, epoch, step)  # to `train` alone, as `docker stop` sends it to PID 1

    assert status == 128 + signal.SIGTERM, f"seed {seed}:\n{log}"
    assert "stopped by SIGTERM" in log and (base / "checkpoints" / "checkpoint.pt").is_file()
    assert not (base / "model" / "model.pth").exists() and not (base / "output" / "failure").exists()

    resumed = run_entry_point("train", base)  # the job started again, with the checkpoint folder restored

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout
    reference, result = weights(uninterrupted), weights(base)
    assert reference.keys() == result.keys()
    different = [name for name in reference if not torch.equal(reference[name], result[name])]
    assert different == [], f"seed {seed} (SIGTERM at epoch {epoch} step {step}): {different[:5]}"
    metrics = [json.loads((b / "output" / "data" / "metrics.json").read_text()) for b in (uninterrupted, base)]
    assert metrics[0]["epochs"] == metrics[1]["epochs"] and metrics[0]["test"] == metrics[1]["test"]


def test_a_completed_job_leaves_no_checkpoint(uninterrupted: Path):
    assert (uninterrupted / "model" / "model.pth").is_file()
    assert not (uninterrupted / "checkpoints" / "checkpoint.pt").exists()


def test_a_checkpoint_of_another_job_or_a_damaged_one_is_refused(dataset: Path, tmp_path: Path):
    first = make_job(tmp_path / "first", {"training": dataset}, HYPERPARAMETERS)
    assert train_until_sigterm(first, 1, 2)[0] == 128 + signal.SIGTERM
    base = make_job(tmp_path / "job", {"training": dataset}, {**HYPERPARAMETERS, "learning_rate": "0.02"})
    (base / "checkpoints").mkdir()
    checkpoint = base / "checkpoints" / "checkpoint.pt"
    checkpoint.write_bytes((first / "checkpoints" / "checkpoint.pt").read_bytes())

    other = run_entry_point("train", base)
    assert other.returncode == 1
    assert "belongs to another job" in (base / "output" / "failure").read_text()

    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # cut short
    damaged = run_entry_point("train", base)
    assert damaged.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: checkpoint") and "cannot be read" in failure


def test_trials_sharing_one_checkpoint_folder_keep_to_their_own(dataset: Path, tmp_path: Path):
    # Every trial of a SageMaker tuning job gets the same checkpoint S3 URI, restored whole into each: here both
    # jobs' checkpoint folders are one folder. Each keeps its checkpoint under its TRAINING_JOB_NAME.
    shared = tmp_path / "restored"
    shared.mkdir()
    trials = {}
    for name, learning_rate in (("tune-001", "0.01"), ("tune-002", "0.02")):
        base = make_job(tmp_path / name, {"training": dataset}, {**HYPERPARAMETERS, "learning_rate": learning_rate})
        (base / "checkpoints").symlink_to(shared)
        trials[name] = base
    first = {"TRAINING_JOB_NAME": "tune-001"}
    assert train_until_sigterm(trials["tune-001"], 1, 3, first)[0] == 128 + signal.SIGTERM
    assert (shared / "tune-001" / "checkpoint.pt").is_file()

    second = run_entry_point("train", trials["tune-002"], env={"TRAINING_JOB_NAME": "tune-002"})
    assert second.returncode == 0, second.stdout + second.stderr  # another trial's checkpoint: neither read nor refused
    assert "resuming from" not in second.stdout

    resumed = run_entry_point("train", trials["tune-001"], env=first)  # the interrupted trial, started again
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {shared / 'tune-001' / 'checkpoint.pt'}" in resumed.stdout.replace(
        str(trials["tune-001"] / "checkpoints"), str(shared)
    )
    assert not any(shared.rglob("checkpoint.pt"))  # both completed: nothing left to resume


def start_train(base: Path) -> subprocess.Popen:
    env = {**os.environ, **HOST_RUN_ENV, "SAGEMAKER_BASE_DIR": str(base)}
    return subprocess.Popen([str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def sigterm_when(process: subprocess.Popen, marker: str) -> tuple[int, str]:
    """SIGTERM the process once its output shows `marker`; its exit status and whole output."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            process.send_signal(signal.SIGTERM)
            break
    lines.extend(process.stdout)
    return process.wait(timeout=60), "".join(lines)


def test_sigterm_while_the_data_is_scanned_stops_train_at_once(dataset: Path, tmp_path: Path):
    # 6,000 training images to check before training can start: the scan is under way when SIGTERM comes.
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(dataset), str(data)], check=True)
    jpeg = (data / "train" / "circle" / "circle_0.jpg").read_bytes()
    for i in range(6000):
        (data / "train" / "circle" / f"copy_{i}.jpg").write_bytes(jpeg)
    base = make_job(tmp_path / "job", {"training": data}, HYPERPARAMETERS)

    status, log = sigterm_when(start_train(base), "hyperparameters:")

    # 143: `train` handles SIGTERM from its first line on (PID 1 in a container ignores a signal it has no
    # handler for, so a stop would wait for SIGKILL); a checkpoint comes only once training runs.
    assert status == 128 + signal.SIGTERM, log
    assert "stopped by SIGTERM outside the training steps" in log
    assert "classes;" not in log  # the scan did not finish
    assert not (base / "model" / "model.pth").exists() and not (base / "output" / "failure").exists()


SIGTERM_AWARE_SCRIPT = """
import pathlib, signal, sys, time

def stop(signum, frame):
    pathlib.Path(sys.argv[0]).with_name("got-sigterm").write_text("saved my own checkpoint")
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print("script ready", flush=True)
time.sleep(120)
"""


def test_script_mode_passes_sigterm_to_the_users_script(tmp_path: Path, shapes_dataset: Path):
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, {"sagemaker_program": '"script.py"'})
    (base / "code").mkdir()
    (base / "code" / "script.py").write_text(SIGTERM_AWARE_SCRIPT)

    status, log = sigterm_when(start_train(base), "script ready")

    assert (base / "code" / "got-sigterm").read_text() == "saved my own checkpoint", log
    assert status == 0, log  # the script's own exit status after its SIGTERM handler
