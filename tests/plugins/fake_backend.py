"""A backend from outside `launcher/`, for the plug-in test: it trains and hosts, nothing else. Its training job
prints the container's metric lines and packs a "model" that names the classes it saw; its endpoint answers every
JPEG with the first of them, or with its own option `--answer`. It joins the launcher through the `imgclf.backends`
entry point group alone."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgclf_contract import layout, metrics
from launcher import contract
from launcher.backends import BackendOptions, DeploySpec, Hosts, TrainingSpec, Trains
from launcher.errors import LauncherError
from launcher.records import Endpoint, TrainingJob

JPEG_START = b"\xff\xd8"


@dataclass(frozen=True)
class FakeOptions(BackendOptions):
    answer: str | None = field(default=None, metadata={"help": "the label every request is answered with"})


class FakeBackend(Trains, Hosts):
    name = "fake"
    Options = FakeOptions

    def launch(self, spec: TrainingSpec) -> TrainingJob:
        folder = self.workdir / "fake-jobs" / spec.job_name
        folder.mkdir(parents=True)
        return spec.record(self.name, log=str(folder / "train.log"))

    def run_to_end(self, job: TrainingJob, spec: TrainingSpec) -> dict[str, float]:
        train = layout.find_split_dirs({name: Path(path) for name, path in spec.channels.items()})["train"]
        classes = layout.class_folders(train)
        model = Path(job.log).parent / "model"
        model.mkdir()
        (model / "classes.json").write_text(json.dumps(classes))
        epoch = {metrics.TRAIN_LOSS: 1.0, metrics.VALID_LOSS: 1.0, metrics.VALID_ACCURACY: 1 / len(classes)}
        lines = [metrics.epoch_line(1, epoch), metrics.final_line(metrics.TEST_LOSS, 1.0),
                 metrics.final_line(metrics.TEST_ACCURACY, 1 / len(classes))]  # fmt: skip
        Path(job.log).write_text("\n".join(lines) + "\n")
        artifacts = self.output_dir_on_host(spec) / job.name / "output"
        job.model_data = str(contract.pack(model, artifacts / contract.MODEL_ARTIFACT))
        job.status = "Completed"
        return metrics.final_values(Path(job.log).read_text())

    def deploy(self, spec: DeploySpec) -> Endpoint:
        folder = self.new_endpoint_dir(spec.endpoint_name)
        contract.unpack(Path(spec.model_data), folder)
        answer = spec.options.answer if isinstance(spec.options, FakeOptions) else None
        endpoint = spec.record(self.name, status="InService", url=f"fake://{folder}", environment={"answer": answer})
        self.records.save(endpoint)
        return endpoint

    def predict(self, endpoint: Endpoint, body: bytes, content_type: str) -> Any:
        if content_type != "image/jpeg" or not body.startswith(JPEG_START):
            raise LauncherError(f"endpoint {endpoint.name} takes JPEG images only, not {content_type}")
        classes = json.loads((Path(endpoint.url.removeprefix("fake://")) / "classes.json").read_text())
        label = (endpoint.environment or {}).get("answer") or classes[0]
        return {"top": [{"label": label, "probability": 1.0}], "served_by": self.name}

    def stop(self, endpoint: Endpoint) -> None:
        endpoint.status, endpoint.deleted = "Deleted", time.time()
        self.records.save(endpoint)
