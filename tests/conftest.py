"""Shared fixtures: tiny real image datasets and SageMaker-shaped job folders; and the session's hygiene: what the
tests start (model servers, routers, supervisors, trainers) is ended when the session ends, even after a failed test,
and the temporary folders its processes make (torchrun's `torchelastic_*`, multiprocessing's `pymp-*`) go with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
import torch
import torchvision
from PIL import Image, ImageDraw
from torchvision.transforms import v2

from imgclf.data import IMAGENET_MEAN, IMAGENET_STD
from launcher.router import MODEL_HEADER

BIN = Path(sys.executable).parent
COLOURS = {"circle": (200, 30, 30), "square": (30, 160, 40), "triangle": (40, 60, 200)}

# -- the session's hygiene ------------------------------------------------------------------------------------------
SESSION_ENV = "IMGCLF_TEST_SESSION"  # every process the session starts inherits it: how the end finds them
# What a test may start that outlives it when it fails: the launcher's detached endpoints, the container's entry points.
STARTED_HERE = ("launcher.router", "launcher.supervisor", "launcher.local_endpoint", "/serve", "/train",
                "model_service_worker", "com.amazonaws.ml.mms", "torch.distributed.run", "imgclf.worker",
                "mlflow server")  # fmt: skip
SESSION_TMP = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process (not an xdist worker) marks the session and gives its children a temporary folder of
    their own; its own temporary files (pytest's tmp_path folders, kept for failed tests) stay where they were."""
    if hasattr(config, "workerinput") or SESSION_ENV in os.environ:
        return
    tempfile.gettempdir()  # fixed for this process before TMPDIR changes for its children
    os.environ[SESSION_ENV] = uuid.uuid4().hex
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="imgclf-tests-")  # short: model servers put sockets there
    config.stash[SESSION_TMP] = Path(os.environ["TMPDIR"])
    os.environ["IMGCLF_HASH_CACHE"] = str(Path(os.environ["TMPDIR"]) / "file-hashes.sqlite")  # not the user's


def pytest_unconfigure(config: pytest.Config) -> None:
    """End every process this session started and left running, by process id, then remove the children's
    temporary folder."""
    folder = config.stash.get(SESSION_TMP, None)
    if folder is None:
        return
    session, ended = os.environ[SESSION_ENV], []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            command = " ".join(process.info["cmdline"] or [])
            if process.pid == os.getpid() or not any(mark in command for mark in STARTED_HERE):
                continue
            if process.environ().get(SESSION_ENV) == session:
                process.kill()
                ended.append(f"{process.pid} {command[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if ended:
        print(f"\nthe session ended {len(ended)} process(es) its tests left running:", *ended, sep="\n  ")
    shutil.rmtree(folder, ignore_errors=True)


def draw_shape(shape: str, size: int = 40, seed: int = 0) -> Image.Image:
    """A small picture of a coloured shape on a white background, slightly shifted by `seed`."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    offset = seed % 5
    box = (6 + offset, 6 + offset, size - 10 + offset, size - 10 + offset)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS.get(shape, (128, 128, 128)))
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS.get(shape, (128, 128, 128)))
    else:
        draw.polygon(
            [(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])],
            fill=COLOURS.get(shape, (128, 128, 128)),
        )
    return image


def write_split(root: Path, per_class: int, classes: tuple[str, ...] = tuple(COLOURS), fmt: str = "JPEG") -> Path:
    for shape in classes:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = "jpg" if fmt == "JPEG" else fmt.lower()
            draw_shape(shape, seed=i).save(folder / f"{shape}_{i}.{suffix}", fmt)
    return root


BROWSER_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
                 "--v=0"]  # fmt: skip


def chromium(page: Path | str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a page of this machine, a file or a loopback address (`--dump-dom`, `--screenshot=...`)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed: make browser (apt-get install chromium)"
    address = page if isinstance(page, str) else page.as_uri()
    command = [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, address]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def default_sigint() -> None:
    """`preexec_fn` for a process the test will Ctrl-C: SIGINT as a terminal's foreground job has it. A suite
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of data (a decompression bomb needs no more
    to be refused, and nothing this size is ever allocated)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


@pytest.fixture
def shapes_dataset(tmp_path: Path) -> Path:
    """A `training`-channel layout: train/ valid/ test/ with three classes of real JPEGs."""
    root = tmp_path / "shapes"
    write_split(root / "train", per_class=4)
    write_split(root / "valid", per_class=2)
    write_split(root / "test", per_class=2)
    return root


# Small and fast on two CPU cores; every value JSON-encoded as SageMaker does.
FAST_HYPERPARAMETERS = {
    "epochs": "1",
    "batch_size": '"4"',
    "image_size": "32",
    "num_workers": "0",
    "learning_rate": "0.01",
    "pretrained": "false",
}


def make_job(base_dir: Path, channels: dict[str, Path], hyperparameters: dict[str, str] | None = None) -> Path:
    """Lay out a SageMaker training job under `base_dir` (what /opt/ml holds)."""
    config = base_dir / "input" / "config"
    config.mkdir(parents=True)
    for folder in ("model", "output/data"):  # SageMaker creates these before the container starts
        (base_dir / folder).mkdir(parents=True)
    hps = FAST_HYPERPARAMETERS if hyperparameters is None else hyperparameters
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text(json.dumps({name: {"TrainingInputMode": "File"} for name in channels}))
    for name, source in channels.items():
        target = base_dir / "input" / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    return base_dir


# On a host (not a SageMaker cluster) "algo-1" does not resolve; this tells the training toolkit not to wait
# for it, as in SageMaker Studio's local mode. The process backend sets the same.
HOST_RUN_ENV = {"SM_STUDIO_LOCAL_MODE": "true"}


def run_entry_point(
    name: str, base_dir: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the image's `train` (or another console script) as SageMaker would, under SAGEMAKER_BASE_DIR."""
    env = {**os.environ, **HOST_RUN_ENV, "SAGEMAKER_BASE_DIR": str(base_dir), **(env or {})}
    return subprocess.run(
        [str(BIN / name), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real training run, shared by the tests that need a model: its `model/` folder."""
    tmp = tmp_path_factory.mktemp("trained")
    data = tmp / "shapes"
    write_split(data / "train", per_class=4)
    write_split(data / "valid", per_class=2)
    write_split(data / "test", per_class=2)
    base = make_job(tmp / "job", {"training": data})
    result = run_entry_point("train", base)
    assert result.returncode == 0, result.stdout + result.stderr
    return base / "model"


@pytest.fixture(scope="session")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `pretrained` channel: ResNet-18 weights with batch-norm statistics measured on the shapes."""
    folder = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    to_input = v2.Compose([v2.PILToTensor(), v2.Resize(32), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # fmt: skip
    images = torch.stack([to_input(draw_shape(shape, seed=i)) for shape in COLOURS for i in range(8)])
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for _ in range(3):
            model(images)
    torch.save(model.state_dict(), folder / "resnet18.pth")
    return folder


# -- Docker tests (marked `docker`): the image `make test` built, and the containers local mode leaves -------------
@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("IMGCLF_TEST_IMAGE")
    if not name:
        pytest.fail("IMGCLF_TEST_IMAGE is not set: run the Docker tests with `make test` (it builds the image)")
    subprocess.run(["docker", "image", "inspect", name], check=True, capture_output=True)
    return name


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(autouse=True)
def no_container_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every Docker test leaves no container of the test image behind, in any state (removed, then reported)."""
    name = os.environ.get("IMGCLF_TEST_IMAGE")
    if request.node.get_closest_marker("docker") is None or not name:
        yield
        return

    def containers() -> set[str]:
        return set(docker("ps", "-aq", "--no-trunc", "--filter", f"ancestor={name}").stdout.split())

    before = containers()
    yield
    left = containers() - before
    if left:
        listed = docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout.splitlines()
        docker("rm", "--force", *left)
        described = "\n".join(line for line in listed if line.split(" ", 1)[0] in left)
        pytest.fail(f"the test left {len(left)} container(s) behind:\n{described}", pytrace=False)


def compose_containers(root: Path) -> list[str]:
    """Containers of any state that local mode started from compose files under `root`."""
    listed = docker("ps", "-a", "--format", '{{.Names}} {{.Label "com.docker.compose.project.working_dir"}}')
    return [line for line in listed.stdout.splitlines() if str(root) in line]


class Clients:
    """Two clients sending a JPEG to the endpoint until stopped: one opens a connection per request, one keeps its
    connection alive. Each answer is kept as (client, status or exception, model SHA-256 header)."""

    def __init__(self, url: str, image: bytes):
        self.url, self.image = url, image
        self.answers: list[tuple[str, object, str]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.send, args=(kind,)) for kind in ("new", "kept-alive")]

    def send(self, kind: str) -> None:
        session = requests.Session() if kind == "kept-alive" else requests
        while not self.stopping.is_set():
            try:
                answer = session.post(f"{self.url}/invocations", data=self.image,
                                      headers={"Content-Type": "image/jpeg"}, timeout=120)  # fmt: skip
                self.answers.append((kind, answer.status_code, answer.headers.get(MODEL_HEADER, "")))
            except requests.RequestException as err:
                self.answers.append((kind, repr(err), ""))

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1)  # answers after the swap too
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def failed(self) -> list:
        return [answer for answer in self.answers if answer[1] != 200]

    def served(self) -> list[str]:
        """The models that answered, in the order each client saw them (the same for both, or this fails), each
        once per run of answers: [old, new] for a swap."""
        seen = set()
        for client in ("new", "kept-alive"):
            order = [sha for kind, _, sha in self.answers if kind == client]
            seen.add(tuple(sha for i, sha in enumerate(order) if i == 0 or order[i - 1] != sha))
        assert len(seen) == 1, f"the clients saw the models in different orders: {seen}"
        return list(seen.pop())
