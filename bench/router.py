"""What the endpoint's router costs: the same model server loaded through the router (the endpoint's address on the
process and local backends) and directly (its loopback port behind the router), in paired rounds.

    python bench/router.py [--rounds 3] [--seconds 5] [--concurrency 4]

Prints one JSON object: each round's requests per second and median latency both ways, and the medians over
rounds of router / direct throughput and of the latency the router adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from endpoints import photo_jpegs, write_model
from http_load import run_load

from launcher import contract
from launcher.backends import DeploySpec
from launcher.backends.process import ProcessBackend
from launcher.records import RecordStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=16, help="distinct 500x375 JPEGs, sent round-robin")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure and round")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    bodies = photo_jpegs(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = contract.pack(write_model(folder / "m", args.model) / "model", folder / "model.tar.gz")
        backend = ProcessBackend(folder / "work", RecordStore(folder / "work" / "records"))
        endpoint = backend.deploy(DeploySpec(endpoint_name="bench", model_data=str(model), workers=1))
        try:
            run_load(endpoint.url, bodies, args.concurrency, 1.0)  # warm-up
            rounds = []
            for _ in range(args.rounds):
                direct = run_load(endpoint.upstream, bodies, args.concurrency, args.seconds)
                routed = run_load(endpoint.url, bodies, args.concurrency, args.seconds)
                rounds.append({"direct": direct, "router": routed})
        finally:
            backend.stop(endpoint)
    ratios = [r["router"]["requests_per_second"] / r["direct"]["requests_per_second"] for r in rounds]
    added = [r["router"]["p50_ms"] - r["direct"]["p50_ms"] for r in rounds]
    print(json.dumps({
        "concurrency": args.concurrency,
        "rounds": [{way: {k: round(r[way][k], 2) for k in ("requests_per_second", "p50_ms", "errors")}
                    for way in ("direct", "router")} for r in rounds],
        "router_over_direct_throughput": round(statistics.median(ratios), 3),
        "router_added_p50_ms": round(statistics.median(added), 2),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
