"""The `local` backend: SageMaker Python SDK local mode, our image in Docker through docker-compose.

Jobs use `file://` inputs and outputs; endpoints are hosted by a detached `launcher.local_endpoint` process
and queried with the original project's predictor (raw JPEG in, JSON out).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from launcher import contract, hosted, sdk
from launcher.backends.base import Backend, DeploySpec, TrainingSpec
from launcher.errors import LauncherError
from launcher.progress import say

INSTANCE_TYPES = ("local", "local_gpu")


class LocalBackend(Backend):
    name = "local"

    def train(self, spec: TrainingSpec) -> dict[str, Any]:
        if spec.instance_type not in INSTANCE_TYPES:
            raise LauncherError(
                f"the local backend runs instance types {', '.join(INSTANCE_TYPES)}, not {spec.instance_type!r}"
            )
        output_dir = self.local_output_dir(spec) / spec.job_name / "output"
        channels = {name: Path(path).resolve() for name, path in spec.channels.items()}
        for name, path in channels.items():
            if not path.exists():
                raise LauncherError(f"channel {name!r}: {path} does not exist")
        record = {
            "name": spec.job_name,
            "backend": self.name,
            "status": "InProgress",
            "created": time.time(),
            "image": spec.image,
            "instance_type": spec.instance_type,
            "instance_count": spec.instance_count,
            "hyperparameters": spec.hyperparameters,
            "channels": {name: str(path) for name, path in channels.items()},
        }
        self.records.save("jobs", record)
        container_root = self.workdir / "jobs" / spec.job_name
        container_root.mkdir(parents=True, exist_ok=True)
        estimator = sdk.estimator(
            sdk.local_session(container_root=container_root),
            image=spec.image,
            role=sdk.LOCAL_ROLE,
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            output_path=f"file://{output_dir}",
            hyperparameters=spec.hyperparameters,
        )
        say(f"training job {spec.job_name} started in SageMaker local mode ({spec.instance_count} x {spec.image})")
        try:
            estimator.fit({name: f"file://{path}" for name, path in channels.items()}, job_name=spec.job_name)
        except Exception as err:  # the SDK raises RuntimeError/ValueError variants for a failed container
            record.update(status="Failed", failure_reason=f"{err}; see the container log above", ended=time.time())
            self.records.save("jobs", record)
            return record
        finally:
            sdk.remove_stopped_containers(container_root)
        record.update(
            status="Completed",
            ended=time.time(),
            model_data=str(output_dir / contract.MODEL_ARTIFACT),
            output_data=str(output_dir / contract.OUTPUT_ARTIFACT),
        )
        metrics = contract.read_metrics(output_dir / contract.OUTPUT_ARTIFACT)
        record["test_metrics"] = (metrics or {}).get("test")
        self.records.save("jobs", record)
        return record

    def deploy(self, spec: DeploySpec) -> dict[str, Any]:
        if spec.instance_type not in INSTANCE_TYPES:
            raise LauncherError(f"the local backend serves on instance types {', '.join(INSTANCE_TYPES)}")
        base_dir = self.new_endpoint_dir(spec.endpoint_name)
        port = spec.port or hosted.free_port()
        record = spec.record(self.name, port)
        command = [
            sys.executable, "-m", "launcher.local_endpoint",
            "--name", spec.endpoint_name,
            "--image", spec.image,
            "--model-data", f"file://{Path(spec.model_data).resolve()}",
            "--port", str(port),
            "--instance-type", spec.instance_type,
            "--env", json.dumps(spec.serving_environment()),
            "--container-root", str(base_dir),
        ]  # fmt: skip
        return hosted.start(self.records, record, command, dict(os.environ), base_dir, spec.startup_timeout)

    def predict(self, endpoint: dict[str, Any], body: bytes, content_type: str) -> Any:
        predictor = sdk.image_predictor(endpoint["name"], sdk.local_session(serving_port=endpoint["port"]))
        try:
            answer = predictor.predict(body, initial_args={"ContentType": content_type})
        except Exception as err:  # urllib3 connection errors, JSON decoding of a non-JSON answer
            raise LauncherError(f"endpoint {endpoint['name']} did not answer: {err}; see {endpoint['log']}") from err
        if isinstance(answer, dict) and "error" in answer and "status" in answer:
            raise LauncherError(f"endpoint {endpoint['name']} answered {answer['status']}: {answer['error']}")
        return answer

    def stop(self, endpoint: dict[str, Any]) -> None:
        hosted.stop(self.records, endpoint)
