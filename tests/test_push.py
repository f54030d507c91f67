"""`make push` to ECR without AWS credentials fails at once with a clear message (no AWS account needed)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ecr_push_without_credentials_says_what_to_do(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata credentials either
        AWS_REGION="us-east-1",
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "push.py"), "imgclf:latest"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no AWS credentials found" in result.stderr and "REGISTRY=host:port" in result.stderr
    assert "Traceback" not in result.stderr
