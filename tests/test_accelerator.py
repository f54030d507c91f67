"""No silent CPU: a host whose NVIDIA driver shows GPUs that torch cannot use stops `train` and `serve` with the
driver, the CUDA the image needs and the fix, unless the user allows the CPU.

The host is simulated: the driver's files (/proc/driver/nvidia: a folder per GPU under gpus/, and version) are
written to a folder that IMGCLF_NVIDIA_DRIVER_DIR names; this machine has no GPU, so torch sees no CUDA, as on a
host whose driver is too old. Real GPU placement (cuda:<gpu_id> per worker) needs a GPU and is not covered here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import BIN, FAST_HYPERPARAMETERS, make_job, run_entry_point
from test_serving import start_server, stop_server, worker_ids

from imgclf import accelerator

DRIVER_470 = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.182.03  Fri Feb 24 03:29:56 UTC 2023\n"
DRIVER_580_OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder)\n"


def simulated_host(folder: Path, gpus: int, version: str = DRIVER_470) -> Path:
    for i in range(gpus):
        (folder / "gpus" / f"0000:00:1{i}.0").mkdir(parents=True)
    (folder / "version").write_text(version + "GCC version:  gcc version 10.2.1\n")
    return folder


def test_the_driver_files_give_the_gpu_count_and_the_driver_version(tmp_path: Path):
    assert accelerator.host_gpus(simulated_host(tmp_path / "a", 4)) == accelerator.HostGpus(4, "470.182.03")
    assert accelerator.host_gpus(simulated_host(tmp_path / "b", 1, DRIVER_580_OPEN)).driver == "580.65.06"
    assert accelerator.host_gpus(tmp_path / "no-driver") == accelerator.HostGpus(0, None)


def test_the_message_names_the_driver_the_cuda_needed_and_the_fix():
    message = accelerator.unusable_message(accelerator.HostGpus(8, "470.182.03"))
    assert "8 NVIDIA GPU(s) with driver 470.182.03" in message
    if torch.version.cuda:  # the CUDA build this project pins
        assert f"CUDA {torch.version.cuda}" in message
        assert f"driver {accelerator.MINIMUM_DRIVER[int(torch.version.cuda.split('.')[0])]} or newer" in message
    assert accelerator.GPU_AMI_VERSION in message and "allow_cpu" in message and "IMGCLF_ALLOW_CPU" in message


def test_gpus_older_than_the_build_are_refused():
    built = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "compute_120"]
    assert accelerator.unsupported_architecture((7, 0), built)  # V100 (ml.p3)
    assert not accelerator.unsupported_architecture((7, 5), built)  # T4 (ml.g4dn)
    assert not accelerator.unsupported_architecture((9, 0), built)  # H100 (ml.p5)
    assert not accelerator.unsupported_architecture((3, 7), [])  # torch did not say


def test_no_gpu_at_all_is_the_cpu_without_a_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(accelerator.DRIVER_DIR_ENV, str(tmp_path / "no-driver"))
    assert accelerator.select_device() == torch.device("cpu")


def test_gpus_hidden_on_purpose_are_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(accelerator.DRIVER_DIR_ENV, str(simulated_host(tmp_path, 2)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert accelerator.select_device() == torch.device("cpu")


@pytest.mark.slow
def test_train_stops_before_reading_data_on_unusable_gpus_and_runs_with_allow_cpu(tmp_path: Path, shapes_dataset):
    env = {accelerator.DRIVER_DIR_ENV: str(simulated_host(tmp_path / "driver", 4))}
    refused = run_entry_point("train", make_job(tmp_path / "refused", {"training": shapes_dataset}), env=env)
    assert refused.returncode == 1
    failure = (tmp_path / "refused" / "output" / "failure").read_text()
    assert failure.startswith("ClientError: this host has 4 NVIDIA GPU(s) with driver 470.182.03"), failure
    assert "classes;" not in refused.stdout  # stopped before the data scan

    allowed_hps = {**FAST_HYPERPARAMETERS, "allow_cpu": "true"}
    allowed = run_entry_point("train", make_job(tmp_path / "allowed", {"training": shapes_dataset}, allowed_hps),
                              env=env)  # fmt: skip
    assert allowed.returncode == 0, allowed.stdout[-3000:] + allowed.stderr[-3000:]
    assert "running on the CPU as allowed" in allowed.stdout + allowed.stderr
    assert (tmp_path / "allowed" / "model" / "model.pth").is_file()


def test_a_users_script_is_stopped_too(tmp_path: Path, shapes_dataset: Path):
    env = {accelerator.DRIVER_DIR_ENV: str(simulated_host(tmp_path / "driver", 1))}
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, {"sagemaker_program": json.dumps("script.py")})
    (base / "code").mkdir()
    (base / "code" / "script.py").write_text("print('the script ran')\n")
    result = run_entry_point("train", base, env=env)
    assert result.returncode == 1 and "the script ran" not in result.stdout
    assert "driver 470.182.03" in (base / "output" / "failure").read_text()


@pytest.mark.slow
def test_serve_exits_on_unusable_gpus_and_serves_with_allow_cpu(trained_model_dir: Path, tmp_path: Path):
    driver = {accelerator.DRIVER_DIR_ENV: str(simulated_host(tmp_path / "driver", 2))}
    refused = subprocess.run(
        [str(BIN / "serve"), "--config-dir", str(tmp_path / "server")],
        env={**driver, "PATH": str(BIN), "SAGEMAKER_BASE_DIR": str(trained_model_dir.parent)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "cannot serve: this host has 2 NVIDIA GPU(s) with driver 470.182.03" in refused.stdout + refused.stderr
    assert not (tmp_path / "server").exists()  # no server was started

    server = start_server(trained_model_dir, tmp_path / "endpoint", {**driver, accelerator.ALLOW_CPU_ENV: "true"})
    try:
        assert worker_ids(server)
    finally:
        stop_server(server)
