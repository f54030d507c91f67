"""Serving speed: in-process inference against the endpoint over HTTP, and against TorchServe on the same model.

(a) In process, with the endpoint's own hooks (decode, preprocess, forward, JSON) on all the cores: batch 1,
    and every batch size up to --max-batch (the best is reported); also a plain eager model with the same
    preprocessing, which is what a naive handler runs.
(b) The endpoint (`serve`: the front on the public port, multi-model-server batching behind it, its default
    workers, threads and batch settings) at each --concurrency: p50/p99 latency and requests/s from a
    closed-loop client in this process; and the front's own cost: concurrency 1 straight to multi-model-server
    on its loopback port against the same through the front.
(c) TorchServe 0.12 with the same hooks, model, images, workers and threads per worker, and dynamic batching
    (batch size = the best in-process batch, --max-batch-delay). It runs from its own virtualenv
    (`make torchserve-venv`): its model-archiver package clashes with multi-model-server's.

    .venv/bin/python bench/serve.py [--model resnet18] [--seconds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision
from endpoints import photo_jpegs, running_endpoint, write_model
from http_load import run_load
from torchvision.transforms import v2

from imgclf import inference
from imgclf.serving import settings
from launcher.hosted import free_port

ROOT = Path(__file__).resolve().parent.parent
TORCHSERVE_VENV = ROOT / "build" / "torchserve-venv"
TORCHSERVE_ROUTE = "/predictions/model"
READY_TIMEOUT = 240.0


def timed_rounds(step: Callable[[list[bytes]], object], bodies: list[bytes], batch: int, seconds: float):
    """Run `step` on successive batches of `bodies` for `seconds`; return (images/s, median ms per batch)."""
    step(bodies[:batch])  # warm-up
    latencies, images, index = [], 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = [bodies[(index + i) % len(bodies)] for i in range(batch)]
        index += batch
        begin = time.perf_counter()
        step(chunk)
        latencies.append(time.perf_counter() - begin)
        images += batch
    return images / (time.perf_counter() - started), 1000 * statistics.median(latencies)


def served_step(model_dir: Path) -> Callable[[list[bytes]], object]:
    """What one endpoint worker does for a batch of requests, minus the HTTP: the artifact's own hooks."""
    classifier = inference.model_fn(str(model_dir))
    torch.set_num_threads(os.cpu_count())  # model_fn shares the cores among workers; here one process has all

    def step(chunk: list[bytes]) -> list[str]:
        images = [inference.input_fn(body, "image/jpeg") for body in chunk]
        return [inference.output_fn(result, None) for result in inference.predict_fn(images, classifier)]

    return step


def naive_step(model_dir: Path) -> Callable[[list[bytes]], object]:
    """A naive handler: the eager network as trained (no fusing, no channels-last), torchvision's usual
    preprocessing (the same pixels, normalised per image)."""
    config = json.loads((model_dir / inference.CONFIG_FILE).read_text())
    network = torchvision.models.get_model(config["architecture"], num_classes=len(config["classes"]))
    network.load_state_dict(torch.load(model_dir / inference.WEIGHTS_FILE, weights_only=True))
    network.eval()
    pre = config["preprocessing"]
    transform = v2.Compose([v2.PILToTensor(), v2.Resize(pre["resize_size"], antialias=True),
                            v2.CenterCrop(pre["crop_size"]), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean=pre["mean"], std=pre["std"])])  # fmt: skip
    torch.set_num_threads(os.cpu_count())

    def step(chunk: list[bytes]) -> list[str]:
        batch = torch.stack([transform(inference.decode_image(body)) for body in chunk])
        with torch.inference_mode():
            return [json.dumps(row.tolist()) for row in network(batch).softmax(dim=1)]

    return step


def model_server_urls(server_dir: Path) -> tuple[str, str]:
    """multi-model-server's own (loopback) inference and management URLs, from the config `serve` wrote."""
    lines = (server_dir / "mms.properties").read_text().splitlines()
    properties = dict(line.split("=", 1) for line in lines if "=" in line)
    return properties["inference_address"], properties["management_address"]


def model_description(management_url: str) -> dict:
    with urllib.request.urlopen(f"{management_url}/models/model", timeout=5) as answer:
        return json.loads(answer.read())


def wait_until_answering(url: str, body: bytes, process: subprocess.Popen, log: Path) -> None:
    started = time.perf_counter()
    while True:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"})
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status == 200:
                return
        if process.poll() is not None or time.perf_counter() - started > READY_TIMEOUT:
            raise RuntimeError(f"TorchServe did not start answering; see {log}")
        time.sleep(0.5)


@contextlib.contextmanager
def running_torchserve(venv: Path, base: Path, body: bytes, workers: int, batch: int, delay_ms: int) -> Iterator[str]:
    """Serve `<base>/model` with TorchServe (an unarchived model folder, our handler); yield its URL."""
    model = base / "torchserve" / "store" / "model"
    shutil.copytree(base / "model", model)
    shutil.copyfile(Path(__file__).with_name("torchserve_handler.py"), model / "handler.py")
    (model / "MAR-INF").mkdir()
    manifest = {"runtime": "python", "model": {"modelName": "model", "handler": "handler.py", "modelVersion": "1.0"}}
    (model / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    ports = [free_port() for _ in range(3)]
    models = {"model": {"1.0": {"defaultVersion": True, "marName": "model", "minWorkers": workers,
                                "maxWorkers": workers, "batchSize": batch, "maxBatchDelay": delay_ms}}}  # fmt: skip
    config = base / "torchserve" / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{ports[0]}\nmanagement_address=http://127.0.0.1:{ports[1]}\n"
        f"metrics_address=http://127.0.0.1:{ports[2]}\nload_models=model\nmodels={json.dumps(models)}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "container_src"), inference.WORKERS_ENV: str(workers)}
    command = [str(venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
               "--model-store", str(model.parent), "--ts-config", str(config)]  # fmt: skip
    log = base / "torchserve" / "torchserve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, cwd=config.parent, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{ports[0]}"
    try:
        wait_until_answering(url + TORCHSERVE_ROUTE, body, process, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def load_row(name: str, result: dict) -> str:
    return (f"{name:<34} {result['requests_per_second']:7.1f} req/s  p50 {result['p50_ms']:6.1f} ms  "
            f"p99 {result['p99_ms']:6.1f} ms  errors {result['errors']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=32, help="distinct 500x375 JPEGs, sent round-robin")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds of load before each endpoint figure")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=int, default=5, help="TorchServe's, in milliseconds")
    parser.add_argument("--torchserve-venv", type=Path, default=TORCHSERVE_VENV)
    args = parser.parse_args()
    bodies = photo_jpegs(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        base = write_model(Path(tmp), args.model)
        print(f"{args.model}, {args.images} JPEGs 500x375 (~{len(bodies[0]) // 1024} KiB), {os.cpu_count()} cores, "
              f"{args.seconds:g} s per figure")  # fmt: skip

        naive_rate, naive_p50 = timed_rounds(naive_step(base / "model"), bodies, 1, args.seconds)
        step = served_step(base / "model")
        by_batch = {batch: timed_rounds(step, bodies, batch, args.seconds) for batch in range(1, args.max_batch + 1)
                    if batch == 1 or batch % 2 == 0}  # fmt: skip
        best = max(by_batch, key=lambda batch: by_batch[batch][0])
        rate, p50 = by_batch[1]
        print(f"{'in process, naive eager, batch 1':<34} {naive_rate:7.1f} img/s  p50 {naive_p50:6.1f} ms")
        for batch, (batch_rate, batch_p50) in by_batch.items():
            print(f"{f'in process, served hooks, batch {batch}':<34} {batch_rate:7.1f} img/s  "
                  f"p50 {batch_p50:6.1f} ms per batch")  # fmt: skip

        ours, theirs = {}, {}
        with running_endpoint(base) as url:
            mms_url, management_url = model_server_urls(base / "server")
            workers = len(model_description(management_url)["workers"])
            print(f"endpoint: {workers} worker(s); the front batches up to {settings.DEFAULT_MAX_BATCH_SIZE} "
                  f"within {settings.DEFAULT_MAX_BATCH_DELAY_MS} ms")  # fmt: skip
            for concurrency in args.concurrency:
                run_load(url, bodies, concurrency, args.warm_up)
                ours[concurrency] = run_load(url, bodies, concurrency, args.seconds)
                print(load_row(f"endpoint, concurrency {concurrency}", ours[concurrency]))
            low = min(args.concurrency)
            run_load(mms_url, bodies, low, args.warm_up, "/predictions/model")
            direct = run_load(mms_url, bodies, low, args.seconds, "/predictions/model")
            print(load_row(f"straight to MMS, concurrency {low}", direct))

        if (args.torchserve_venv / "bin" / "torchserve").is_file():
            with running_torchserve(args.torchserve_venv, base, bodies[0], workers, best, args.max_batch_delay) as url:
                for concurrency in args.concurrency:
                    run_load(url, bodies, concurrency, args.warm_up, TORCHSERVE_ROUTE)
                    theirs[concurrency] = run_load(url, bodies, concurrency, args.seconds, TORCHSERVE_ROUTE)
                    name = f"TorchServe (batch {best}), concurrency {concurrency}"
                    print(load_row(name, theirs[concurrency]))
        else:
            print(f"TorchServe: skipped, no virtualenv at {args.torchserve_venv} (make torchserve-venv)")

        high = max(args.concurrency)
        print(f"best in-process batch {best}: {by_batch[best][0] / rate:.2f}x batch 1")
        print(f"endpoint p50 at concurrency {low} / in-process batch-1 p50: {ours[low]['p50_ms'] / p50:.2f} "
              f"(target <= 1.15; vs naive {ours[low]['p50_ms'] / naive_p50:.2f})")  # fmt: skip
        print(f"endpoint req/s at concurrency {high} / best in-process batched img/s (batch {best}): "
              f"{ours[high]['requests_per_second'] / by_batch[best][0]:.2f} (target >= 0.95)")  # fmt: skip
        print(f"the front's cost at concurrency {low}: p50 {ours[low]['p50_ms'] - direct['p50_ms']:+.1f} ms "
              f"({ours[low]['p50_ms'] / direct['p50_ms']:.2f}x straight to MMS)")  # fmt: skip
        for concurrency, result in theirs.items():
            print(
                f"endpoint / TorchServe req/s at concurrency {concurrency}: "
                f"{ours[concurrency]['requests_per_second'] / result['requests_per_second']:.2f} (target >= 1.2)"
            )


if __name__ == "__main__":
    main()
