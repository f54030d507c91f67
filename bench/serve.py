"""Serving speed: in-process inference against the endpoint over HTTP, and against TorchServe on the same model.

(a) In process, with the endpoint's own hooks (decode, preprocess, forward, JSON) on all the cores: batch 1,
    and every batch size up to --max-batch (the best is reported); also a plain eager model with the same
    preprocessing, which is what a naive handler runs.
(b) The endpoint (`serve`: the front on the public port, multi-model-server batching behind it, its default
    workers, threads and batch settings) at each --concurrency: p50/p99 latency and requests/s from a
    closed-loop client in this process on keep-alive connections; and the front's own cost: the lowest
    concurrency straight to multi-model-server on its loopback port against the same through the front.
(c) TorchServe 0.12 with the same hooks, model, images, workers and threads per worker, and dynamic batching
    (batch size = the best in-process batch, --max-batch-delay). It runs from its own virtualenv
    (`make torchserve-venv`): its model-archiver package clashes with multi-model-server's.

Every figure but the batch sweep is taken in each of --rounds rounds, (a), (b) and (c) back to back with all
the servers up, and each ratio is the median over the rounds of the ratio within a round: this machine's
speed drifts by more than the differences measured, and a ratio of figures taken minutes apart measures
the drift.

    .venv/bin/python bench/serve.py [--model resnet18] [--seconds 5] [--rounds 5]
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


def median_result(results: list[dict]) -> dict:
    """The median of each figure over the rounds; errors summed."""
    keys = ("requests_per_second", "p50_ms", "p99_ms")
    return {**{key: statistics.median(r[key] for r in results) for key in keys},
            "errors": sum(r["errors"] for r in results)}  # fmt: skip


def measure_round(step: Callable, bodies: list[bytes], best: int, servers: dict[str, tuple[str, str]],
                  concurrencies: dict[str, list[int]], args: argparse.Namespace) -> dict:  # fmt: skip
    """One round: the in-process baselines, then every server at each of its concurrencies, back to back, so that
    the ratios of one round compare figures taken under the same conditions of this machine."""
    figures = {"in process, batch 1": timed_rounds(step, bodies, 1, args.seconds),
               "in process, best batch": timed_rounds(step, bodies, best, args.seconds)}  # fmt: skip
    for name, (url, route) in servers.items():
        for concurrency in concurrencies[name]:
            run_load(url, bodies, concurrency, args.warm_up, route)
            figures[name, concurrency] = run_load(url, bodies, concurrency, args.seconds, route)
    return figures


def paired(rounds: list[dict], ratio: Callable[[dict], float]) -> str:
    """The median of one ratio over the rounds, with its range."""
    values = sorted(ratio(figures) for figures in rounds)
    return f"{statistics.median(values):.2f} (rounds {values[0]:.2f}-{values[-1]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=32, help="distinct 500x375 JPEGs, sent round-robin")
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every figure; ratios are medians over them")
    parser.add_argument("--warm-up", type=float, default=1.0, help="seconds of load before each endpoint figure")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-batch-delay", type=int, default=5, help="TorchServe's, in milliseconds")
    parser.add_argument("--torchserve-venv", type=Path, default=TORCHSERVE_VENV)
    args = parser.parse_args()
    bodies = photo_jpegs(args.images)
    low, high = min(args.concurrency), max(args.concurrency)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = write_model(Path(tmp), args.model)
        print(f"{args.model}, {args.images} JPEGs 500x375 (~{len(bodies[0]) // 1024} KiB), {os.cpu_count()} cores, "
              f"{args.rounds} rounds of {args.seconds:g} s per figure, clients on keep-alive connections")  # fmt: skip

        naive_rate, naive_p50 = timed_rounds(naive_step(base / "model"), bodies, 1, args.seconds)
        step = served_step(base / "model")
        by_batch = {batch: timed_rounds(step, bodies, batch, args.seconds) for batch in range(1, args.max_batch + 1)
                    if batch == 1 or batch % 2 == 0}  # fmt: skip
        best = max(by_batch, key=lambda batch: by_batch[batch][0])
        print(f"{'in process, naive eager, batch 1':<34} {naive_rate:7.1f} img/s  p50 {naive_p50:6.1f} ms")
        for batch, (batch_rate, batch_p50) in by_batch.items():
            print(f"{f'in process, served hooks, batch {batch}':<34} {batch_rate:7.1f} img/s  "
                  f"p50 {batch_p50:6.1f} ms per batch")  # fmt: skip

        url = stack.enter_context(running_endpoint(base))
        mms_url, management_url = model_server_urls(base / "server")
        workers = len(model_description(management_url)["workers"])
        print(f"endpoint: {workers} worker(s); the front batches up to {settings.DEFAULT_MAX_BATCH_SIZE} "
              f"within {settings.DEFAULT_MAX_BATCH_DELAY_MS} ms")  # fmt: skip
        servers = {"endpoint": (url, "/invocations"), "straight to MMS": (mms_url, "/predictions/model")}
        concurrencies = {"endpoint": args.concurrency, "straight to MMS": [low]}
        if (args.torchserve_venv / "bin" / "torchserve").is_file():
            torchserve = f"TorchServe (batch {best})"
            torchserve_url = stack.enter_context(
                running_torchserve(args.torchserve_venv, base, bodies[0], workers, best, args.max_batch_delay)
            )
            servers[torchserve] = (torchserve_url, TORCHSERVE_ROUTE)
            concurrencies[torchserve] = args.concurrency
        else:
            torchserve = None
            print(f"TorchServe: skipped, no virtualenv at {args.torchserve_venv} (make torchserve-venv)")

        rounds = []
        for number in range(1, args.rounds + 1):
            rounds.append(measure_round(step, bodies, best, servers, concurrencies, args))
            figures = rounds[-1]
            print(f"round {number}: in-process b1 p50 {figures['in process, batch 1'][1]:.1f} ms, batch {best} "
                  f"{figures['in process, best batch'][0]:.1f} img/s; endpoint c{low} p50 "
                  f"{figures['endpoint', low]['p50_ms']:.1f} ms, c{high} "
                  f"{figures['endpoint', high]['requests_per_second']:.1f} req/s", flush=True)  # fmt: skip
        stack.close()

        print(f"medians over {args.rounds} rounds:")
        for key in ("in process, batch 1", "in process, best batch"):
            rate, p50 = (statistics.median(figures[key][i] for figures in rounds) for i in (0, 1))
            print(f"{key:<34} {rate:7.1f} img/s  p50 {p50:6.1f} ms per batch")
        for name in servers:
            for concurrency in concurrencies[name]:
                result = median_result([figures[name, concurrency] for figures in rounds])
                print(load_row(f"{name}, concurrency {concurrency}", result))

        print(f"best in-process batch {best}: {by_batch[best][0] / by_batch[1][0]:.2f}x batch 1")
        print("ratios, each the median over the rounds of the figures taken in the same round:")
        endpoint_p50 = median_result([figures["endpoint", low] for figures in rounds])["p50_ms"]
        print(f"endpoint p50 at concurrency {low} / in-process batch-1 p50: "
              f"{paired(rounds, lambda f: f['endpoint', low]['p50_ms'] / f['in process, batch 1'][1])} "
              f"(target <= 1.15; vs naive {endpoint_p50 / naive_p50:.2f})")  # fmt: skip
        print(
            f"endpoint req/s at concurrency {high} / best in-process batched img/s (batch {best}): "
            f"{paired(rounds, lambda f: f['endpoint', high]['requests_per_second'] / f['in process, best batch'][0])}"
            " (target >= 0.95)"
        )
        print(f"the front's cost at concurrency {low}: p50 "
              f"{paired(rounds, lambda f: f['endpoint', low]['p50_ms'] - f['straight to MMS', low]['p50_ms'])} ms, "
              f"{paired(rounds, lambda f: f['endpoint', low]['p50_ms'] / f['straight to MMS', low]['p50_ms'])}x "
              "straight to MMS")  # fmt: skip
        if torchserve:
            for concurrency in args.concurrency:
                ratio = paired(rounds, lambda f, c=concurrency: f["endpoint", c]["requests_per_second"]
                               / f[torchserve, c]["requests_per_second"])  # fmt: skip
                print(f"endpoint / TorchServe req/s at concurrency {concurrency}: {ratio} (target >= 1.2)")
        print(f"errors: {sum(r['errors'] for f in rounds for k, r in f.items() if isinstance(k, tuple))}")


if __name__ == "__main__":
    main()
