"""A fourth backend is one class plus its entry point: `launcher run` (tuning, training, deploying, predicting,
evaluating, stopping) and `launcher lineage` reach it through the backend roles alone, since nothing branches on a
backend's name. The test backend trains by packing a real job's model and output and
printing the container's metric lines; its endpoints are the process backend's (a real `serve`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import write_split

from imgclf_contract import metrics
from launcher import contract
from launcher.backends import TrainingSpec, registry
from launcher.backends.process import ProcessBackend
from launcher.cli import main
from launcher.records import TrainingJob

pytestmark = pytest.mark.slow  # launcher run with a real model server

BEST_RATE = 0.02


class ReplayBackend(ProcessBackend):
    """Only `name` and the training lifecycle's `launch` and `run_to_end` are its own."""

    name = "replay"
    trained: ClassVar[Path]  # the model folder every job "trains" (a real job's, beside its output/)

    def launch(self, spec: TrainingSpec) -> TrainingJob:
        job_dir = self.workdir / "jobs" / spec.job_name
        job_dir.mkdir(parents=True)
        return TrainingJob(name=spec.job_name, backend=self.name, hyperparameters=spec.hyperparameters,
                           log=str(job_dir / "train.log"))  # fmt: skip

    def run_to_end(self, job: TrainingJob, spec: TrainingSpec) -> dict[str, float]:
        loss = abs(float(spec.hyperparameters["learning_rate"]) - BEST_RATE)  # the objective the tuner reads
        epoch = {metrics.TRAIN_LOSS: loss, metrics.VALID_LOSS: loss, metrics.VALID_ACCURACY: 0.5}
        lines = [metrics.epoch_line(1, epoch), metrics.final_line(metrics.TEST_LOSS, loss),
                 metrics.final_line(metrics.TEST_ACCURACY, 0.5)]  # fmt: skip
        Path(job.log).write_text("\n".join(lines) + "\n")
        artifacts = self.output_dir_on_host(spec) / job.name / "output"
        job.model_data = str(contract.pack(self.trained, artifacts / contract.MODEL_ARTIFACT))
        output = self.trained.parent / "output" / "data"  # the real job's, report included
        job.output_data = str(contract.pack(output, artifacts / contract.OUTPUT_ARTIFACT))
        job.status = "Completed"
        return metrics.final_values(Path(job.log).read_text())


@pytest.fixture
def replay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_model_dir: Path) -> Iterator[None]:
    """ReplayBackend registered as a plug-in registers: an entry point in distribution metadata on the path."""
    dist_info = tmp_path / "site" / "replay-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: replay\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(f"[imgclf.backends]\nreplay = {__name__}:ReplayBackend\n")
    monkeypatch.syspath_prepend(str(dist_info.parent))
    monkeypatch.setattr(ReplayBackend, "trained", trained_model_dir, raising=False)
    forget = (registry.targets, registry.backend_class, registry.loadable)
    for found in forget:
        found.cache_clear()
    yield
    for found in forget:
        found.cache_clear()


@pytest.mark.usefixtures("replay")
def test_a_registered_backend_runs_the_whole_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture):
    data = tmp_path / "data"
    for split in ("train", "valid", "test"):
        write_split(data / split, per_class=1)
    config = tmp_path / "job.yaml"
    config.write_text(
        f"data: {data}\n"
        "tuning:\n"
        "  ranges: {learning_rate: 'CategoricalParameter([0.002, 0.02, 0.2])'}\n"
        "  strategy: Grid\n"
        "  max_jobs: 3\n"
        "deploy: {workers: 1}\n"
    )
    work = ["--workdir", str(tmp_path / "work")]
    assert main([*work, "run", "--backend", "replay", "--config", str(config), "--name", "r", "--stop-endpoint"]) == 0
    records = tmp_path / "work" / "records"
    tuning = json.loads((records / "tuning" / "r-tune.json").read_text())
    assert tuning["backend"] == "replay" and tuning["best"]["tuned_hyperparameters"] == {"learning_rate": BEST_RATE}
    assert (tmp_path / "work" / "tuning" / "r-tune" / "results.csv").is_file()
    run = json.loads((records / "runs" / "r.json").read_text())
    assert run["status"] == "Completed" and run["training_job"] == tuning["best"]["job_name"]  # the best trial's model
    job = json.loads((records / "jobs" / f"{run['training_job']}.json").read_text())
    assert job["backend"] == "replay" and job["hyperparameters"]["learning_rate"] == BEST_RATE
    assert run["steps"][-2]["top"][0]["label"] in {"circle", "square", "triangle"}  # a real endpoint answered
    assert run["steps"][-1]["step"] == "evaluation"  # by a real model server of the backend's transform
    endpoint = json.loads((records / "endpoints" / "r-ep.json").read_text())
    assert (endpoint["backend"], endpoint["status"]) == ("replay", "Deleted")
    capsys.readouterr()

    assert main([*work, "lineage", "r-ep", "--json"]) == 0
    chain = {step.pop("step"): step for step in json.loads(capsys.readouterr().out)}
    assert list(chain) == ["endpoint", "training job", "tuning", "dataset"]
    assert {chain[step]["backend"] for step in ("endpoint", "training job", "tuning")} == {"replay"}
