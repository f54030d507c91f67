"""Host one SageMaker local-mode endpoint until SIGTERM (started detached by `launcher deploy --backend local`).

Local mode keeps an endpoint alive only while the Python process that deployed it runs, so this small
process deploys the model, stays up, and tears the endpoint down (docker-compose down) when told to stop.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from launcher import hosted
from launcher.backends import local_mode
from launcher.backends.sagemaker import Hosting


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="endpoint name")
    parser.add_argument("--image", required=True, help="serving image")
    parser.add_argument("--model-data", required=True, help="file:// URI of a model.tar.gz")
    parser.add_argument("--port", type=int, required=True, help="host port for the endpoint")
    parser.add_argument("--listen", default="127.0.0.1", help="the address on this machine the port is published on")
    parser.add_argument("--instance-type", default="local", help="local or local_gpu")
    parser.add_argument("--env", default="{}", help="JSON object of environment variables for the container")
    parser.add_argument("--container-root", type=Path, required=True, help="folder for local mode's compose files")
    args = parser.parse_args(argv)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    session = local_mode.session(serving_port=args.port, container_root=args.container_root, listen=args.listen)
    hosting = Hosting(args.image, args.model_data, local_mode.LOCAL_ROLE, json.loads(args.env), args.instance_type)
    local_mode.deploy_endpoint(session, args.name, hosting)
    print(f"endpoint {args.name} deployed on port {args.port}", flush=True)
    try:
        stopping.wait()
    finally:
        local_mode.delete_endpoint(session, args.name)
        local_mode.remove_containers(args.container_root, hosted.STOP_GRACE_SECONDS)
        print(f"endpoint {args.name} deleted", flush=True)


if __name__ == "__main__":
    main()
