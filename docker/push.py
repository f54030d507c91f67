"""Push the image to Amazon ECR (default) or to any registry (`--registry host:port`).

ECR: the account comes from STS and the region from the AWS config (both overridable); the repository is
created if missing; Docker logs in with a token from ECR, passed on stdin and never printed.

    python docker/push.py IMAGE:TAG [--registry HOST:PORT] [--repository NAME] [--region R] [--account A]
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys


class PushError(Exception):
    pass


def docker(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PushError(f"docker {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def ecr_registry(repository: str, region: str | None, account: str | None) -> str:
    """Make sure the ECR repository exists, log Docker in to it, and return the registry host."""
    import boto3
    import botocore.exceptions

    session = boto3.Session(region_name=region or os.environ.get("AWS_REGION"))
    if session.region_name is None:
        raise PushError(
            "no AWS region: pass --region (make push REGION=...), set AWS_DEFAULT_REGION or `aws configure`"
        )
    if session.get_credentials() is None:
        raise PushError(
            "no AWS credentials found: configure them (`aws configure`, AWS_PROFILE or AWS_ACCESS_KEY_ID), "
            "or push to another registry with REGISTRY=host:port"
        )
    try:
        account = account or session.client("sts").get_caller_identity()["Account"]
        ecr = session.client("ecr")
        try:
            ecr.create_repository(repositoryName=repository)
            print(f"created ECR repository {repository}")
        except ecr.exceptions.RepositoryAlreadyExistsException:
            pass
        token = ecr.get_authorization_token(registryIds=[account])["authorizationData"][0]
    except botocore.exceptions.BotoCoreError as err:
        raise PushError(f"AWS request failed: {err}") from err
    except botocore.exceptions.ClientError as err:
        raise PushError(f"AWS refused the request: {err.response['Error'].get('Message', err)}") from err
    registry = f"{account}.dkr.ecr.{session.region_name}.amazonaws.com"
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    docker("login", "--username", user, "--password-stdin", registry, stdin=password)
    return registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="local image to push, NAME:TAG")
    parser.add_argument("--registry", help="push to this registry (host:port) instead of ECR")
    parser.add_argument("--repository", help="repository name in the registry (default: the image's name)")
    parser.add_argument("--region", help="ECR region (default: from the AWS config)")
    parser.add_argument("--account", help="ECR account id (default: the caller's, from STS)")
    args = parser.parse_args(argv)
    name, _, tag = args.image.partition(":")
    repository = args.repository or name
    try:
        registry = args.registry or ecr_registry(repository, args.region, args.account)
        remote = f"{registry}/{repository}:{tag or 'latest'}"
        docker("tag", args.image, remote)
        print(f"pushing {remote} ...", flush=True)
        docker("push", remote)
        digest = docker("image", "inspect", "--format", '{{join .RepoDigests "\\n"}}', remote).split()
        print(next((d for d in digest if d.startswith(f"{registry}/{repository}@")), remote))
    except PushError as err:
        print(f"push: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
