"""The image against a real Docker engine: train and serve as SageMaker runs them, script mode, SageMaker
local mode (sagemaker-core) through the launcher (one and two instances), and a push to a real registry server.

Run alone with `pytest -m docker`; `make test` builds the image and names it in IMGCLF_TEST_IMAGE.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
from conftest import FAST_HYPERPARAMETERS, Clients, compose_containers, docker, make_job, write_split

from imgclf.distributed import fingerprint
from launcher import contract, promotion
from launcher.backends import DeploySpec, local_mode
from launcher.backends.local import FIND_CONTAINERS_SECONDS, ContainerLogs, LocalBackend
from launcher.cli import main
from launcher.hosted import free_port, model_ready
from launcher.lineage import model_hash
from launcher.records import Endpoint, RecordStore

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent


def post_jpeg(url: str, path: Path) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", data=path.read_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class Container:
    """`docker run -d IMAGE serve` with the model mounted, published on 127.0.0.1 only; removed afterwards."""

    def __init__(self, image: str, model_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        run = docker("run", "-d", "-p", f"127.0.0.1:{self.port}:8080", "-v", f"{model_dir}:/opt/ml/model:ro",
                     "-e", "SAGEMAKER_MODEL_SERVER_WORKERS=1", image, "serve")  # fmt: skip
        assert run.returncode == 0, run.stderr
        self.id = run.stdout.strip()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if model_ready(self.url):
                return
            time.sleep(0.5)
        raise AssertionError(f"container not ready:\n{docker('logs', self.id).stdout[-3000:]}")

    def remove(self) -> None:
        docker("rm", "-f", self.id)


@pytest.fixture
def serving(image: str) -> Iterator[callable]:
    started: list[Container] = []

    def start(model_dir: Path) -> Container:
        started.append(Container(image, model_dir))
        started[-1].wait_ready()
        return started[-1]

    yield start
    for container in started:
        container.remove()


def docker_train(image: str, base: Path) -> subprocess.CompletedProcess:
    """`docker run IMAGE train` on a prepared /opt/ml, named algo-1 as SageMaker names it."""
    data = base / "input" / "data"
    for link in data.iterdir():  # a mount cannot follow links out of it: copy the channels in
        target = link.resolve()
        link.unlink()
        subprocess.run(["cp", "-r", str(target), str(link)], check=True)
    return docker("run", "--rm", "--hostname", "algo-1", "-v", f"{base}:/opt/ml", image, "train")


def test_train_then_serve_in_the_image(image: str, tmp_path: Path, shapes_dataset: Path, serving):
    base = make_job(tmp_path / "ml", {"training": shapes_dataset})
    result = docker_train(image, base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "average test loss: " in result.stdout
    assert (base / "model" / "model.pth").is_file() and (base / "output" / "success").is_file()
    assert "rule summary:" in result.stdout and (base / "output" / "data" / "report" / "report.html").is_file()

    # The image's `evaluate` (a retrain loop's evaluation step) reproduces the job's own test figures.
    scored = docker("run", "--rm", "-v", f"{base}:/opt/ml", "-v", f"{shapes_dataset}:/data:ro", image, "evaluate",
                    "--data", "/data", "--model", "challenger=/opt/ml/model",
                    "--output", "/opt/ml/evaluation.json")  # fmt: skip
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    figures = json.loads((base / "evaluation.json").read_text())["models"]["challenger"]
    job = json.loads((base / "output" / "data" / "metrics.json").read_text())["test"]
    assert figures["images"] == job["images"] and abs(figures["loss"] - job["loss"]) < 1e-4
    # The pipeline's Resolve step command is there too, with the AWS client it needs.
    resolve = docker("run", "--rm", image, "resolve", "--help")
    assert resolve.returncode == 0 and "--model-package-group" in resolve.stdout
    assert docker("run", "--rm", "--entrypoint", "/opt/venv/bin/python", image, "-c", "import boto3").returncode == 0

    container = serving(base / "model")
    status, answer = post_jpeg(container.url, next((shapes_dataset / "test" / "circle").iterdir()))
    assert status == 200 and len(answer["logits"]) == 3
    with urllib.request.urlopen(f"{container.url}/ping", timeout=5) as ping:
        assert ping.status == 200


def test_the_image_holds_the_contract_the_launcher_checks_jobs_with(image: str):
    """The launcher refuses what the image would by running the same code: the contract installed in the image is
    this checkout's (each module's SHA-256, read inside the image and here)."""
    digests = (
        "import hashlib, json, pathlib, imgclf_contract as c; "
        "print(json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest() "
        "for p in sorted(pathlib.Path(c.__file__).parent.glob('*.py'))}))"
    )
    shown = docker("run", "--rm", image, "python", "-c", digests)
    assert shown.returncode == 0, shown.stderr
    here = Path(__file__).parents[1] / "container_src" / "contract" / "imgclf_contract"
    assert json.loads(shown.stdout) == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(here.glob("*.py"))
    }


def test_docker_stop_while_the_data_is_scanned_ends_train_with_sigterm(image: str, tmp_path: Path):
    # `train` is PID 1 in the container, which ignores a signal it has no handler for: without its early SIGTERM
    # handler a stop would wait out the grace period and end in SIGKILL (137). 6,000 images keep the scan going.
    data = tmp_path / "shapes"
    for split, count in (("train", 4), ("valid", 2), ("test", 2)):
        write_split(data / split, per_class=count)
    jpeg = (data / "train" / "circle" / "circle_0.jpg").read_bytes()
    for i in range(6000):
        (data / "train" / "circle" / f"copy_{i}.jpg").write_bytes(jpeg)
    base = make_job(tmp_path / "ml", {"training": data})
    channel = base / "input" / "data" / "training"
    channel.unlink()  # a link would point out of the mount: copy the data in
    shutil.copytree(data, channel)
    run = docker("run", "-d", "--hostname", "algo-1", "-v", f"{base}:/opt/ml", image, "train")
    assert run.returncode == 0, run.stderr
    container = run.stdout.strip()
    try:
        for _ in range(600):  # until `train` has read its hyperparameters (at most 5 minutes)
            if "hyperparameters:" in docker("logs", container).stdout:
                break
            time.sleep(0.5)
        assert docker("stop", "--time", "60", container).returncode == 0
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)
        logs = docker("logs", container)
        assert state["ExitCode"] == 143, logs.stdout[-3000:] + logs.stderr[-3000:]
        assert "stopped by SIGTERM outside the training steps" in logs.stdout + logs.stderr
    finally:
        docker("rm", "--force", container)


USER_TRAIN_SCRIPT = '''
"""A user's script for the AWS PyTorch containers: SM_* variables in, state_dict out."""
import argparse, os, shutil
import torch, torchvision
from torchvision import transforms

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--data-dir", type=str, default=os.environ["SM_CHANNEL_TRAINING"])
    args = parser.parse_args()
    transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    data = torchvision.datasets.ImageFolder(os.path.join(args.data_dir, "train"), transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model = torchvision.models.resnet18(num_classes=len(data.classes))
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.001)
    for epoch in range(args.epochs):
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    torch.save(model.state_dict(), os.path.join(args.model_dir, "model.pth"))
    os.makedirs(os.path.join(args.model_dir, "code"), exist_ok=True)
    shutil.copy(os.path.join(os.path.dirname(__file__), "inference.py"), os.path.join(args.model_dir, "code"))

if __name__ == "__main__":
    main()
'''

USER_INFERENCE_SCRIPT = """
import io, json, os
import torch, torchvision
from PIL import Image
from torchvision import transforms

def model_fn(model_dir):
    model = torchvision.models.resnet18(num_classes=3)
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return model.eval()

def input_fn(request_body, content_type):
    assert content_type == "image/jpeg"
    image = Image.open(io.BytesIO(request_body)).convert("RGB")
    return transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])(image).unsqueeze(0)

def predict_fn(input_object, model):
    with torch.no_grad():
        return model(input_object)

def output_fn(prediction, accept):
    return json.dumps({"class": int(prediction.argmax(1)[0])}), "application/json"
"""


def test_script_mode_user_script_trains_and_its_model_is_served(image, tmp_path, shapes_dataset, serving):
    hps = {"epochs": "1", "batch-size": "4", "sagemaker_program": '"train_model.py"'}
    base = make_job(tmp_path / "ml", {"training": shapes_dataset}, hps)
    (base / "code").mkdir()
    (base / "code" / "train_model.py").write_text(USER_TRAIN_SCRIPT)
    (base / "code" / "inference.py").write_text(USER_INFERENCE_SCRIPT)

    result = docker_train(image, base)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "epoch 0 loss" in result.stdout
    assert not (base / "model" / "model_config.json").exists()  # the user's script ran, not ours
    container = serving(base / "model")
    status, answer = post_jpeg(container.url, next((shapes_dataset / "test" / "square").iterdir()))
    assert status == 200 and answer["class"] in (0, 1, 2)


def launcher_main(*args: str) -> int:
    return main(list(args))


def test_local_mode_train_deploy_predict_stop(image, tmp_path, shapes_dataset, capsys):
    work = ["--workdir", str(tmp_path / "work")]
    hps = [arg for key, value in FAST_HYPERPARAMETERS.items() for arg in ("-H", f"{key}={json.loads(value)}")]
    common = ["--backend", "local", "--image", image]
    assert launcher_main(*work, "train", *common, "--data", str(shapes_dataset), "--job-name", "local-1", *hps) == 0
    job = json.loads((tmp_path / "work" / "records" / "jobs" / "local-1.json").read_text())
    assert job["status"] == "Completed" and set(job["test_metrics"]) == {"accuracy", "loss"}  # read from its log
    assert contract.read_metrics(Path(job["output_data"]))["test"]["images"] == 6
    assert Path(job["model_data"]) == tmp_path / "work" / "output" / "local-1" / "output" / "model.tar.gz"
    capsys.readouterr()
    assert launcher_main(*work, "report", "local-1") == 0  # local mode packs output/, so data/report/ in the tar
    assert "LowGPUUtilization" in capsys.readouterr().out
    assert (tmp_path / "work" / "reports" / "local-1" / "report.html").is_file()

    assert launcher_main(*work, "deploy", "local-1", *common, "--endpoint-name", "local-ep", "--workers", "1") == 0
    try:
        deployed = json.loads((tmp_path / "work" / "records" / "endpoints" / "local-ep.json").read_text())
        serving = [line.split()[0] for line in compose_containers(tmp_path / "work" / "endpoints")]
        published = {docker("port", name, "8080/tcp").stdout.strip() for name in serving}
        assert published == {deployed["upstream"].removeprefix("http://")}  # on loopback, behind the router
        listening = {c.laddr for c in psutil.Process(deployed["router_pid"]).net_connections() if c.status == "LISTEN"}
        assert listening == {("127.0.0.1", deployed["port"])}  # this machine only, unless --listen opens it
        capsys.readouterr()
        jpeg = next((shapes_dataset / "test" / "triangle").iterdir())
        assert launcher_main(*work, "predict", "--endpoint", "local-ep", str(jpeg)) == 0
        answer = json.loads(capsys.readouterr().out)
        assert len(answer["logits"]) == 3
        notes = tmp_path / "notes.txt"
        notes.write_text("hello")
        assert (
            launcher_main(*work, "predict", "--endpoint", "local-ep", "--content-type", "text/plain", str(notes)) == 1
        )
        assert "answered 415" in capsys.readouterr().err

        # A new model behind the same address (here the same network, repacked, so its SHA-256 differs), with
        # clients sending requests throughout: none fails, and every answer after the swap names the new model.
        records = RecordStore(tmp_path / "work" / "records")
        endpoint = records.load(Endpoint, "local-ep")
        repacked = tmp_path / "second" / "model.tar.gz"
        repacked.parent.mkdir()
        with tarfile.open(job["model_data"]) as old, tarfile.open(repacked, "w:gz") as new:
            for member in old.getmembers():
                new.addfile(member, old.extractfile(member) if member.isfile() else None)
            note = tarfile.TarInfo("NOTE.txt")
            new.addfile(note)
        spec, serving = DeploySpec(endpoint_name="local-ep", model_data=str(repacked)), endpoint.lineage["model_sha256"]
        with Clients(endpoint.url, jpeg.read_bytes()) as clients:
            promotion.promote(LocalBackend(tmp_path / "work", records), endpoint, spec, "test", None)
        assert clients.failed() == [] and len(clients.answers) > 10
        assert clients.served() == [serving, model_hash(str(repacked))]
        with capsys.disabled():
            print(f"\nlocal-mode swap: {len(clients.answers)} requests during it, none failed")
        assert len(compose_containers(tmp_path / "work" / "endpoints")) == 1  # the old model's container is gone
    finally:
        assert launcher_main(*work, "stop", "local-ep") == 0
    endpoint = json.loads((tmp_path / "work" / "records" / "endpoints" / "local-ep.json").read_text())
    assert endpoint["status"] == "Deleted"
    assert not model_ready(endpoint["url"])

    images = Path(shutil.copytree(shapes_dataset / "test", tmp_path / "images"))
    (images / "broken.jpg").write_bytes(jpeg.read_bytes()[:100])  # cut off: the container cannot decode it
    (images / "latin1.jpg").write_bytes(b"\xff\xd8 caf\xe9")  # local mode's transformer would fail on it as text
    transform = ["transform", "local-1", "--backend", "local", "--input", str(images), "--name", "lt"]
    assert launcher_main(*work, *transform) == 0
    output = tmp_path / "work" / "transforms" / "lt" / "output"
    lines = {line["file"]: line for line in map(json.loads, (output / "predictions.jsonl").read_text().splitlines())}
    assert len(lines) == 8 and lines["broken.jpg"]["status"] == 400  # local mode's transformer went on after it
    assert lines["latin1.jpg"]["status"] == 400 and "not UTF-8" in lines["latin1.jpg"]["error"]
    answered = [line for file, line in lines.items() if file not in ("broken.jpg", "latin1.jpg")]
    assert all(len(line["predictions"]) == 3 for line in answered)
    assert compose_containers(tmp_path / "work") == []  # neither the job's, the endpoint's nor the transform's


def test_local_mode_run_records_the_image_in_the_lineage(image, tmp_path, shapes_dataset, capsys):
    # No tuning section: `launcher run` trains, deploys, predicts and stops; the chain names the image's ID.
    config = tmp_path / "job.yaml"
    hps = {key: json.loads(value) for key, value in FAST_HYPERPARAMETERS.items()}
    config.write_text(f"data: {shapes_dataset}\nimage: {image}\nhyperparameters: {json.dumps(hps)}\n")
    work = ["--workdir", str(tmp_path / "work")]
    assert launcher_main(*work, "run", "--backend", "local", "--config", str(config), "--name", "lr",
                         "--workers", "1", "--stop-endpoint") == 0  # fmt: skip
    run = json.loads((tmp_path / "work" / "records" / "runs" / "lr.json").read_text())
    assert [step["step"] for step in run["steps"]] == ["training_job", "endpoint", "prediction", "evaluation"]
    capsys.readouterr()
    assert launcher_main(*work, "lineage", "lr", "--json") == 0
    chain = {step.pop("step"): step for step in json.loads(capsys.readouterr().out)}
    image_id = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    assert chain["training job"]["image"]["id"] == image_id and list(chain) == ["endpoint", "training job", "dataset"]
    assert compose_containers(tmp_path / "work") == []


def test_removing_local_mode_containers_leaves_none_whatever_their_state(image, tmp_path: Path):
    # When local mode returns, docker-compose may not have finished stopping its containers: one still running (here
    # PID 1 ignores SIGTERM, so it takes the whole grace period), one exited, one created and never started all go,
    # and a container of another folder stays.
    root, other = tmp_path / "endpoint", tmp_path / "other"
    label = "com.docker.compose.project.working_dir={}"
    started = [
        docker("run", "-d", "--label", label.format(root / "tmp1"), image, "sleep", "600"),
        docker("run", "-d", "--label", label.format(root / "tmp2"), image, "true"),
        docker("create", "--label", label.format(root / "tmp3"), image, "true"),
        docker("create", "--label", label.format(other / "tmp4"), image, "true"),
    ]
    try:
        assert all(done.returncode == 0 for done in started), [done.stderr for done in started]
        docker("wait", started[1].stdout.strip())
        assert len(compose_containers(root)) == 3
        assert local_mode.remove_containers(root, grace_seconds=1) == 3
        assert compose_containers(root) == []
        assert len(compose_containers(other)) == 1
    finally:
        docker("rm", "--force", *(done.stdout.strip() for done in started if done.stdout.strip()))


def test_a_job_log_holds_the_output_of_a_container_seen_before_it_started(image, tmp_path: Path):
    # Local mode creates a job's container before starting it; a reader that began following it then would end at
    # once with nothing, and the job's log (where its test metrics are read) would stay empty.
    root, log = tmp_path / "job", tmp_path / "train.log"
    label = f"com.docker.compose.project.working_dir={root / 'tmp1'}"
    created = docker("create", "--label", label, image, "sh", "-c", "echo first; echo test accuracy: 0.5")
    assert created.returncode == 0, created.stderr
    try:
        with ContainerLogs(root, log, instance_count=1):
            time.sleep(4 * FIND_CONTAINERS_SECONDS)  # the container is listed, created, more than once
            assert docker("start", created.stdout.strip()).returncode == 0
            docker("wait", created.stdout.strip())
        assert log.read_text().splitlines() == ["first", "test accuracy: 0.5"]
    finally:
        docker("rm", "--force", created.stdout.strip())


def test_local_mode_two_instances_of_two_processes_train_data_parallel(image, tmp_path: Path):
    data = tmp_path / "shapes"
    for split, count in (("train", 6), ("valid", 2), ("test", 2)):
        write_split(data / split, per_class=count)
    work = ["--workdir", str(tmp_path / "work")]
    hps = [
        "-H",
        "epochs=2",
        "-H",
        "batch_size=3",
        "-H",
        "image_size=32",
        "-H",
        "num_workers=0",
        "-H",
        "pretrained=false",
        "-H",
        "processes_per_host=2",
    ]
    code = launcher_main(*work, "train", "--backend", "local", "--image", image, "--instance-count", "2",
                         "--data", str(data), "--job-name", "ddp-1", *hps)  # fmt: skip
    assert code == 0
    job = json.loads((tmp_path / "work" / "records" / "jobs" / "ddp-1.json").read_text())
    with tarfile.open(job["output_data"]) as tar:
        reports = [
            json.load(tar.extractfile(name))
            for name in tar.getnames()
            if "/hosts/" in f"/{name}" and name.endswith(".json")
        ]
    reports.sort(key=lambda report: report["rank"])
    # global rank = host rank x 2 + local rank, the hosts (algo-1-*, algo-2-*) in sorted order
    assert [(r["rank"], r["local_rank"], r["world_size"]) for r in reports] == [(0, 0, 4), (1, 1, 4), (2, 0, 4),
                                                                                (3, 1, 4)]  # fmt: skip
    hosts = [r["host"] for r in reports]
    assert hosts[0] == hosts[1] < hosts[2] == hosts[3] and hosts[0].startswith("algo-1")
    # 18 training images shared by 4 processes (padded to 20), 2 epochs: 5 images an epoch each.
    assert [r["trained_images"] for r in reports] == [10] * 4
    assert len({r["parameters_sha256"] for r in reports}) == 1  # DDP kept the replicas in step
    with tarfile.open(job["model_data"]) as tar:
        saved = torch.load(tar.extractfile("model.pth"), weights_only=True)
    assert fingerprint(saved) == reports[0]["state_sha256"]  # the saved model is rank 0's
    assert compose_containers(tmp_path / "work") == []


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry server on 127.0.0.1, storing in a temporary folder."""
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + str(tmp_path / "storage") + "\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(50):
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def small_image(tmp_path: Path) -> Iterator[str]:
    """A one-file image: push.py's work does not depend on the image's size, and pushing the 6.5 GB image to a
    loopback registry and pulling it back took 4 minutes of every run (`make push` pushes that one)."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "stamp").write_bytes(os.urandom(64))  # a digest of its own, never one the registry already has
    (context / "Dockerfile").write_text("FROM scratch\nCOPY stamp /stamp\nLABEL org.imgclf.test=push\n")
    name = f"imgclf-push-test:{uuid.uuid4().hex[:12]}"
    built = subprocess.run(["docker", "build", "-q", "-t", name, str(context)], capture_output=True, text=True,
                           env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=300, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    try:
        yield name
    finally:
        docker("rmi", name)


def test_push_to_a_registry_and_pull_back_the_same_digest(small_image: str, registry: str):
    image = small_image
    push = [
        sys.executable,
        str(ROOT / "docker" / "push.py"),
        image,
        "--registry",
        registry,
        "--repository",
        "imgclf-test",
    ]
    result = subprocess.run(push, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr
    pushed = result.stdout.strip().splitlines()[-1]
    assert pushed.startswith(f"{registry}/imgclf-test@sha256:")
    digest = pushed.split("@", 1)[1]
    request = urllib.request.Request(
        f"http://{registry}/v2/imgclf-test/manifests/{image.split(':', 1)[1]}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Docker-Content-Digest"] == digest
    try:
        assert docker("rmi", f"{registry}/imgclf-test:{image.split(':', 1)[1]}").returncode == 0
        pulled = docker("pull", pushed)
        assert pulled.returncode == 0, pulled.stderr
        image_id = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        assert docker("image", "inspect", "--format", "{{.Id}}", pushed).stdout.strip() == image_id
    finally:
        docker("rmi", pushed)
