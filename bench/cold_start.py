"""Cold start of an endpoint: seconds from starting `serve` to /ping answering with the model's worker ready,
for ResNet-18 and ResNet-50 (random weights: loading cost does not depend on their values).

    .venv/bin/python bench/cold_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torchvision

from imgclf import artifacts, data
from launcher.hosted import free_port, model_ready

TIMEOUT = 240.0


def model_dir(folder: Path, architecture: str) -> Path:
    model = torchvision.models.get_model(architecture, num_classes=10)
    config = {"architecture": architecture, "classes": [str(i) for i in range(10)],
              "preprocessing": data.eval_preprocessing(224)}  # fmt: skip
    artifacts.save_model(folder / architecture / "model", model, config)
    return folder / architecture


def cold_start(base: Path) -> float:
    """Start `serve` on a copy of the model and time it until the model is ready; stop it."""
    shutil.rmtree(base / "server", ignore_errors=True)
    port = free_port()
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port)}
    serve = str(Path(sys.executable).parent / "serve")
    start = time.perf_counter()
    with open(base / "serve.log", "w") as log:
        process = subprocess.Popen([serve, "--config-dir", str(base / "server")], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        while not model_ready(f"http://127.0.0.1:{port}"):
            if process.poll() is not None or time.perf_counter() - start > TIMEOUT:
                raise RuntimeError(f"the server did not become ready; see {base / 'serve.log'}")
            time.sleep(0.05)
        return time.perf_counter() - start
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in args.models:
            base = model_dir(Path(tmp), architecture)
            times = [cold_start(base) for _ in range(args.rounds)]
            size = (base / "model" / "model.pth").stat().st_size / 2**20
            print(f"{architecture} ({size:.0f} MiB of weights): serve -> model ready in median "
                  f"{statistics.median(times):.1f} s (rounds: {', '.join(f'{t:.1f}' for t in times)})")  # fmt: skip


if __name__ == "__main__":
    main()
