"""The endpoint's settings, read once from the environment SageMaker (or the launcher) gives `serve`.

SageMaker's own variables keep their meaning (SAGEMAKER_BIND_TO_PORT, SAGEMAKER_MODEL_SERVER_WORKERS,
SAGEMAKER_MODEL_SERVER_TIMEOUT, SAGEMAKER_MAX_PAYLOAD_IN_MB, SAGEMAKER_SAFE_PORT_RANGE); the batching ones
are ours. A value that cannot be used stops `serve` with a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
SAFE_PORTS_ENV = "SAGEMAKER_SAFE_PORT_RANGE"
THREADS_ENV = "IMGCLF_THREADS_PER_WORKER"
BATCH_SIZE_ENV = "IMGCLF_MAX_BATCH_SIZE"
BATCH_DELAY_ENV = "IMGCLF_MAX_BATCH_DELAY_MS"
# Batch transform fails a whole job on one 4xx answer: with this set, a request the model cannot classify (a
# broken image, say) is answered 200 with its {"error", "status"} body, so the job writes it and goes on.
ERRORS_AS_RECORDS_ENV = "IMGCLF_ERRORS_AS_RECORDS"
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 60
DEFAULT_MAX_PAYLOAD_BYTES = 6_553_500  # multi-model-server's own default limit (6.25 MB)
# Chosen with bench/serve.py on 2 cores (docs/performance.md, "Serving"): batches of 8 (41 img/s against 20 at
# batch 1 in process); a batch waits at most 10 ms for as many requests as recent batches held, which fills it under
# concurrent load (1 ms left it alternating 1 and 7 at concurrency 8) and costs a lone client nothing.
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_BATCH_DELAY_MS = 10


class SettingsError(ValueError):
    """An environment variable `serve` cannot use."""


@dataclass(frozen=True)
class ServingSettings:
    port: int
    workers: int
    threads_per_worker: int
    max_batch_size: int
    max_batch_delay_ms: int
    timeout_seconds: int
    max_payload_bytes: int
    safe_ports: tuple[int, int] | None
    cores: int
    errors_as_records: bool = False

    @property
    def oversubscribed(self) -> bool:
        """More torch threads in all the workers than cores."""
        return self.workers * self.threads_per_worker > self.cores

    @classmethod
    def from_environ(cls, gpus: int, cores: int, environ: Mapping[str, str] = os.environ) -> ServingSettings:
        """One worker per GPU, else one worker with every core: with batching, that serves the most requests a
        second and answers a lone request fastest (measured; docs/performance.md)."""
        workers = _integer(environ, WORKERS_ENV, gpus or 1, minimum=1)
        payload_mb = environ.get(PAYLOAD_ENV)
        return cls(
            port=_integer(environ, PORT_ENV, DEFAULT_PORT, minimum=1, maximum=65535),
            workers=workers,
            threads_per_worker=_integer(environ, THREADS_ENV, max(1, cores // workers), minimum=1),
            max_batch_size=_integer(environ, BATCH_SIZE_ENV, DEFAULT_MAX_BATCH_SIZE, minimum=1),
            max_batch_delay_ms=_integer(environ, BATCH_DELAY_ENV, DEFAULT_MAX_BATCH_DELAY_MS, minimum=0),
            timeout_seconds=_integer(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS, minimum=1),
            max_payload_bytes=_integer(environ, PAYLOAD_ENV, 0, minimum=1) * 2**20
            if payload_mb
            else DEFAULT_MAX_PAYLOAD_BYTES,
            safe_ports=_port_range(environ.get(SAFE_PORTS_ENV)),
            cores=cores,
            errors_as_records=_flag(environ, ERRORS_AS_RECORDS_ENV),
        )


def _integer(environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
        raise SettingsError(f"{name}={raw!r} is out of range: use {bounds}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name}={environ[name]!r} is not a yes or no: use true or false")


def _port_range(raw: str | None) -> tuple[int, int] | None:
    """SageMaker's SAGEMAKER_SAFE_PORT_RANGE, e.g. "29000-29999": ports a container may use for itself."""
    if not raw:
        return None
    try:
        low, high = (int(part) for part in raw.split("-"))
    except ValueError:
        raise SettingsError(f"{SAFE_PORTS_ENV}={raw!r} is not a range like 29000-29999") from None
    return low, high
