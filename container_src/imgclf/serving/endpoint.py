"""`serve`: the front on the public port, multi-model-server behind it, healthy only once the model answers.

The order matters to SageMaker, which marks an endpoint InService when `/ping` answers 200: the front binds
the port first (a taken port fails at once) and answers 503 while multi-model-server starts, the model is
registered and a warm-up request goes through the model's own hooks. A model that cannot answer it (corrupt
weights, a missing config, an `inference.py` that does not import or whose `model_fn` raises) ends `serve`
with status 1 and the reason, so the endpoint fails instead of answering 500 to everything.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from imgclf.serving.front import JSON, Batcher, Front, Upstream
from imgclf.serving.model_server import MODEL_NAME, ModelServer, ModelServerError
from imgclf.serving.settings import ServingSettings

log = logging.getLogger(__name__)

EXIT_CANNOT_SERVE = 1
WARM_UP_SIZE = 224
WORKER_CHECK_SECONDS = 1.0
# No model worker process for this long: multi-model-server will not start one (it retries connecting to the dead
# worker's socket, keeps calling it READY, and holds every request until its response timeout).
WORKER_LOSS_SECONDS = 10.0
LINGER_SECONDS = 1.0  # the 503s already decided reach their clients before serve exits


class CannotServe(RuntimeError):
    """The model server did not start, or the model cannot answer."""


def warm_up_image() -> bytes:
    """A grey JPEG: what every image model can read, and what our own hooks decode, resize and classify."""
    buffer = io.BytesIO()
    Image.new("RGB", (WARM_UP_SIZE, WARM_UP_SIZE), (128, 128, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def warm_up(batcher: Batcher, timeout: float) -> None:
    """One request through the batcher and the model's hooks. 2xx or 4xx means the model loaded and answers (a
    script's `input_fn` may refuse JPEGs); 5xx means it cannot serve."""
    status, _, body = batcher.submit(warm_up_image(), "image/jpeg", JSON, timeout)
    if status >= 500:
        try:
            reason = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            reason = body.decode(errors="replace")[:1000]
        raise CannotServe(reason)
    log.info("warm-up request answered %d", status)


def run(model_dir: Path, settings: ServingSettings, host: str, config_dir: Path | None = None) -> int:
    """Serve until told to stop (exit 0) or until the model server fails (non-zero); see the module's doc."""
    server = ModelServer(config_dir or Path(tempfile.mkdtemp(prefix="imgclf-serve-")), settings)
    upstream = Upstream(server.inference_url, f"/predictions/{MODEL_NAME}", timeout=settings.timeout_seconds + 5)
    batcher = Batcher(upstream, settings.workers, settings.max_batch_size, settings.max_batch_delay_ms / 1000)
    try:
        front = Front(host, settings, batcher)  # the public port first: a taken one fails before anything slow
    except OSError as err:
        log.error("cannot serve: cannot listen on %s:%d (%s)", host, settings.port, err)
        return EXIT_CANNOT_SERVE
    threading.Thread(target=front.serve_forever, name="front", daemon=True).start()
    stopping, lost = threading.Event(), threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stopping.set()
        server.terminate()  # not stop(): waiting on the process here would deadlock with the main thread's wait

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    try:
        server.start()
        _wait_until_answering(server, stopping)
        server.register(model_dir)
        warm_up(batcher, settings.timeout_seconds + 10)
        front.ready.set()
        watchdog = threading.Thread(target=watch_workers, args=(server, front, stopping, lost), daemon=True)
        watchdog.start()
        log.info("ready after %.1f s: %s:%d answers /ping, /invocations and /execution-parameters (%d worker(s) x "
                 "%d thread(s), batches of up to %d within %d ms)", time.monotonic() - started, host, settings.port,
                 settings.workers, settings.threads_per_worker, settings.max_batch_size,
                 settings.max_batch_delay_ms)  # fmt: skip
        status = server.process.wait()
        if stopping.is_set():
            return 0
        if lost.is_set():
            return EXIT_CANNOT_SERVE
        log.error("cannot serve: multi-model-server exited with status %d", status)
        return status or EXIT_CANNOT_SERVE
    except (CannotServe, ModelServerError, OSError) as err:
        if stopping.is_set():
            return 0
        log.error("cannot serve: %s", err)
        return EXIT_CANNOT_SERVE
    finally:
        front.shutdown()
        front.server_close()
        server.stop()


def watch_workers(server: ModelServer, front: Front, stopping: threading.Event, lost: threading.Event) -> None:
    """End serving once no model worker process has run for WORKER_LOSS_SECONDS (a worker and the child it forked
    both killed, say by an out-of-memory kill of the group): /ping and /invocations answer 503 at once, the requests
    waiting are answered 503, and serve exits non-zero, so that whatever runs the endpoint replaces it. A child
    killed alone is forked again by its worker, and a worker killed alone leaves its child answering: neither ends
    serving."""
    gone_since: float | None = None
    while not stopping.wait(WORKER_CHECK_SECONDS):
        if server.workers_alive():
            gone_since = None
            continue
        gone_since = gone_since or time.monotonic()
        if time.monotonic() - gone_since >= WORKER_LOSS_SECONDS:
            reason = (f"no model worker has run for {WORKER_LOSS_SECONDS:.0f} s (killed or crashed) and "
                      "multi-model-server starts none; this endpoint must be replaced")  # fmt: skip
            log.error("cannot serve: %s", reason)
            front.fail(reason)
            lost.set()
            time.sleep(LINGER_SECONDS)
            server.terminate()
            return


def _wait_until_answering(server: ModelServer, stopping: threading.Event) -> None:
    from sagemaker_inference import environment

    deadline = time.monotonic() + environment.Environment().startup_timeout
    while not server.answering():
        if stopping.is_set():
            raise CannotServe("stopped while starting")
        if server.process.poll() is not None:
            raise CannotServe(f"multi-model-server exited with status {server.process.returncode} while starting; "
                              "see the lines above")  # fmt: skip
        if time.monotonic() > deadline:
            raise CannotServe("multi-model-server did not answer within SAGEMAKER_STARTUP_TIMEOUT")
        time.sleep(0.1)


def cores() -> int:
    """The cores this process may use (a container's CPU set, not the host's)."""
    return len(os.sched_getaffinity(0))
