"""The retrain loop on the process backend, through the CLI and with real model servers: a challenger against the
champion an endpoint serves, promotion behind the same address with clients sending requests throughout (a new
connection per request, and a kept-alive `requests.Session`), a worse challenger kept out, rollback, and the faults:
an endpoint that is not in service or serves other classes, a challenger that cannot start, an interrupted swap.

Not covered here: the local backend's swap (tests/test_local_backend_promotion.py, Docker) and SageMaker's
(tests/test_launcher_sagemaker.py, botocore's Stubber)."""

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from conftest import Clients, write_split
from mlflow.tracking import MlflowClient

from launcher import promotion
from launcher.backends import DeploySpec
from launcher.backends.process import ProcessBackend
from launcher.cli import main
from launcher.errors import LauncherError
from launcher.lineage import model_hash
from launcher.records import Endpoint, Promotion, RecordStore
from launcher.router import MODEL_HEADER

pytestmark = pytest.mark.slow  # trained models behind real model servers

FIXED = ["-H", "batch_size=6", "-H", "image_size=32", "-H", "num_workers=0", "-H", "freeze_backbone=true",
         "-H", "profiler_interval_ms=0"]  # fmt: skip
GOOD = ["-H", "epochs=3", "-H", "learning_rate=0.02"]
WORSE = ["-H", "epochs=1", "-H", "learning_rate=1e-6"]  # as good as the backbone's untrained head


@dataclasses.dataclass
class Loop:
    work: Path
    data: Path
    endpoint: str = "ep"

    def cli(self, *args: str) -> int:
        return main(["--workdir", str(self.work), *args])

    def record(self, kind: str, name: str) -> dict:
        return json.loads((self.work / "records" / kind / f"{name}.json").read_text())

    def model(self, job: str) -> str:
        return self.record("jobs", job)["model_data"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, backbone: Path) -> Iterator[Loop]:
    """Two trained jobs (a good and a worse model) and an endpoint serving the worse one."""
    tmp = tmp_path_factory.mktemp("loop")
    data = tmp / "data"
    for split, count in (("train", 8), ("valid", 2), ("test", 4)):
        write_split(data / split, per_class=count)
    state = Loop(tmp / "work", data)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    channels = ["--data", str(data), "--channel", f"pretrained={backbone}", *FIXED]
    assert state.cli("train", *channels, *WORSE, "--job-name", "worse") == 0
    assert state.cli("train", *channels, *GOOD, "--job-name", "good") == 0
    assert state.cli("deploy", "worse", "--endpoint-name", state.endpoint, "--workers", "1") == 0
    yield state
    state.cli("stop", state.endpoint)


def image_of(data: Path) -> bytes:
    return next((data / "test" / "circle").iterdir()).read_bytes()


def serving_groups(endpoint: dict) -> list[int]:
    """Process groups of model servers under the endpoint's folder that are alive."""
    folders = endpoint["endpoint_dir"] + "/model-"
    groups = set()
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if folders in (process.info["cwd"] or "") or folders in " ".join(process.info["cmdline"] or []):
                groups.add(os.getpgid(process.pid))
        except (ProcessLookupError, psutil.Error):
            continue
    return sorted(groups)


def test_an_endpoint_not_in_service_or_for_other_classes_is_refused_before_training(loop: Loop, capsys):
    jobs = sorted((loop.work / "records" / "jobs").glob("*.json"))
    assert loop.cli("run", "--data", str(loop.data), "--endpoint", "no-such-endpoint", *FIXED) == 1
    assert "no endpoint named 'no-such-endpoint'" in capsys.readouterr().err
    other = write_split(loop.work.parent / "other" / "train", per_class=2, classes=("circle", "square")).parent
    write_split(other / "valid", per_class=1, classes=("circle", "square"))
    write_split(other / "test", per_class=1, classes=("circle", "square"))
    assert loop.cli("run", "--data", str(other), "--endpoint", loop.endpoint, *FIXED) == 1
    err = capsys.readouterr().err
    assert (
        "the champion classifies other classes (circle, square, triangle) than the challenger (circle, square)" in err
    )
    assert sorted((loop.work / "records" / "jobs").glob("*.json")) == jobs  # no training started


def test_promotion_and_rollback_fail_no_request_and_a_worse_challenger_is_kept(loop: Loop, capsys):
    endpoint = loop.record("endpoints", loop.endpoint)
    worse, good = model_hash(loop.model("worse")), model_hash(loop.model("good"))

    with Clients(endpoint["url"], image_of(loop.data)) as clients:
        assert loop.cli("promote", "good", "--endpoint", loop.endpoint) == 0
    out = capsys.readouterr().err
    assert "decision: promote: average test loss" in out
    assert clients.failed() == [] and len(clients.answers) > 20
    assert {kind for kind, _, _ in clients.answers} == {"new", "kept-alive"}
    assert clients.served() == [worse, good]  # every answer after the swap comes from the new model
    with capsys.disabled():
        print(f"\npromotion: {len(clients.answers)} requests during the swap, none failed")
    promoted = loop.record("endpoints", loop.endpoint)
    assert promoted["url"] == endpoint["url"] and promoted["job_name"] == "good"
    assert [entry["job_name"] for entry in promoted["history"]] == ["worse", "good"]
    assert len(serving_groups(promoted)) == 1  # the old model server is gone

    promotions = [json.loads(f.read_text()) for f in (loop.work / "records" / "promotions").glob("*.json")]
    (decided,) = [p for p in promotions if p["endpoint"] == loop.endpoint]
    assert decided["decision"] == "promoted" and decided["status"] == "Completed"
    assert decided["challenger"]["metrics"]["loss"] < decided["champion"]["metrics"]["loss"]
    assert decided["data"] == str(loop.data / "test")
    client = MlflowClient(f"sqlite:///{loop.work / 'mlflow.db'}")
    name, version = loop.record("jobs", "good")["model_version"].removeprefix("models:/").rsplit("/", 1)
    assert str(client.get_model_version_by_alias(name, promotion.CHAMPION_ALIAS).version) == version
    run = client.get_run(decided["mlflow_run"])
    assert run.data.tags["imgclf.decision"] == "promoted" and "challenger loss" in run.data.metrics

    # The worse model challenges again: it loses, nothing changes behind the endpoint, and its version says why.
    assert loop.cli("promote", "worse", "--endpoint", loop.endpoint) == 0
    assert "decision: keep the champion: average test loss" in capsys.readouterr().err
    assert loop.record("endpoints", loop.endpoint)["generation"] == promoted["generation"]
    answer = requests.post(f"{endpoint['url']}/invocations", data=image_of(loop.data),
                           headers={"Content-Type": "image/jpeg"}, timeout=60)  # fmt: skip
    assert answer.headers[MODEL_HEADER] == good
    worse_version = loop.record("jobs", "worse")["model_version"].rsplit("/", 1)[1]
    assert "kept on ep" in client.get_model_version(name, worse_version).tags["imgclf.promotion"]
    assert str(client.get_model_version_by_alias(name, promotion.CHAMPION_ALIAS).version) == version

    with Clients(endpoint["url"], image_of(loop.data)) as clients:
        assert loop.cli("rollback", loop.endpoint) == 0
    assert clients.failed() == [] and clients.served() == [good, worse]
    with capsys.disabled():
        print(f"\nrollback: {len(clients.answers)} requests during the swap, none failed")
    assert str(client.get_model_version_by_alias(name, promotion.CHAMPION_ALIAS).version) == worse_version
    assert loop.cli("lineage", loop.endpoint, "--json") == 0
    chain = json.loads(capsys.readouterr().out)
    assert [p["decision"] for p in chain[0]["promotions"]] == ["promoted", "kept", "rolled back"]
    # As text (what `launcher run` ends with): the decisions as a short table, a line each, with both models' figures.
    assert loop.cli("lineage", loop.endpoint) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["promotion", "decision", "champion"])
    for decided, line in zip(chain[0]["promotions"], lines[header + 1 : header + 4], strict=True):
        measured = [decided[role]["metrics"] or {} for role in ("champion", "challenger")]  # a rollback: none
        figures = [f"{m[key]:.4g}" for m in measured for key in ("loss", "accuracy") if m]
        assert figures or decided["decision"] == "rolled back"
        assert line.split()[0] == decided["name"] and decided["decision"] in line and "{" not in line, line
        assert all(figure in line for figure in figures) and decided["serving"] in line, (figures, line)


def test_a_challenger_that_cannot_start_leaves_the_champion_serving(loop: Loop, tmp_path: Path):
    records = RecordStore(loop.work / "records")
    endpoint = records.load(Endpoint, loop.endpoint)
    serving = endpoint.lineage["model_sha256"]
    broken = tmp_path / "model.tar.gz"
    subprocess.run(["tar", "-czf", str(broken), "-C", str(loop.data), "test"], check=True)  # no model in it
    spec = DeploySpec(endpoint_name=loop.endpoint, model_data=str(broken))  # the server exits on the load error
    with Clients(endpoint.url, image_of(loop.data)) as clients, pytest.raises(LauncherError, match="model was ready"):
        promotion.promote(ProcessBackend(loop.work, records), endpoint, spec, "test", None)
    assert clients.failed() == [] and clients.served() == [serving]
    after = records.load(Endpoint, loop.endpoint)
    assert after.lineage["model_sha256"] == serving and after.generation == endpoint.generation
    assert len(serving_groups(after.to_json())) == 1


@pytest.fixture
def second_endpoint(loop: Loop) -> Iterator[str]:
    """An endpoint of its own that served the worse model and now serves the good one: a model to roll back to,
    whatever the other tests did to the module's endpoint."""
    name = "ep-2"
    assert loop.cli("deploy", "worse", "--endpoint-name", name, "--workers", "1") == 0
    try:
        assert loop.cli("promote", "good", "--endpoint", name) == 0
        yield name
    finally:
        loop.cli("stop", name)


def test_an_interrupted_promotion_leaves_one_model_serving_and_says_which(loop: Loop, second_endpoint: str):
    records = RecordStore(loop.work / "records")
    before = records.load(Endpoint, second_endpoint)
    launcher = subprocess.Popen([sys.executable, "-m", "launcher.cli", "--workdir", str(loop.work), "rollback",
                                 second_endpoint], stderr=subprocess.PIPE, text=True)  # fmt: skip
    folders = set(Path(before.endpoint_dir).glob("model-*"))
    deadline = time.monotonic() + 120
    while not any((f / "serve.log").is_file() for f in set(Path(before.endpoint_dir).glob("model-*")) - folders):
        assert time.monotonic() < deadline, "no new model server started"
        time.sleep(0.1)
    launcher.send_signal(signal.SIGTERM)  # while the new model server starts
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err
    after = records.load(Endpoint, second_endpoint)
    assert after.pid == before.pid and after.generation == before.generation
    assert len(serving_groups(after.to_json())) == 1
    answer = requests.get(f"{after.url}/ping", timeout=10)
    assert answer.status_code == 200 and answer.headers[MODEL_HEADER] == before.lineage["model_sha256"]
    stopped = [
        records.load(type(r), r.name) for r in records.find(Promotion, status="Stopped", endpoint=second_endpoint)
    ]
    assert stopped and stopped[-1].extra["serving"]["model_sha256"] == before.lineage["model_sha256"]
    assert collections.Counter(p.status for p in stopped) == {"Stopped": len(stopped)}
