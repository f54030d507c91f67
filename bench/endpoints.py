"""What the serving benchmarks share: a model folder with random weights, JPEGs the size of photos, and an
endpoint started with `serve --config-dir` on a free port (stopped, with its whole process tree, on exit)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torchvision
from PIL import Image

from imgclf import artifacts, data
from launcher.hosted import free_port, model_ready

READY_TIMEOUT = 240.0


def write_model(folder: Path, architecture: str, classes: int = 10) -> Path:
    """A served model's folder (`<folder>/model`) with random weights: serving cost does not depend on them."""
    model = torchvision.models.get_model(architecture, num_classes=classes)
    config = {"architecture": architecture, "classes": [str(i) for i in range(classes)],
              "preprocessing": data.eval_preprocessing(224)}  # fmt: skip
    artifacts.save_model(folder / "model", model, config)
    return folder


def photo_jpegs(count: int, width: int = 500, height: int = 375, seed: int = 0) -> list[bytes]:
    """JPEG bodies of photo size: smooth gradients under noise, so they compress like pictures, not flat colour."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0.3, 1, height)[:, None, None]
    bodies = []
    for _ in range(count):
        tint = rng.uniform(60, 200, size=3)
        pixels = ramp * tint + rng.normal(0, 25, size=(height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


@contextlib.contextmanager
def running_endpoint(base: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Serve `<base>/model` with `serve --config-dir`; yield its URL once the model's worker is ready."""
    port = free_port()
    env = {**os.environ, **(env or {}), "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    serve = str(Path(sys.executable).parent / "serve")
    with open(base / "serve.log", "w") as log:
        process = subprocess.Popen([serve, "--config-dir", str(base / "server")], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        started = time.perf_counter()
        while not model_ready(url):
            if process.poll() is not None or time.perf_counter() - started > READY_TIMEOUT:
                raise RuntimeError(f"the endpoint did not become ready; see {base / 'serve.log'}")
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
