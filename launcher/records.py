"""Records of jobs and endpoints (JSON files under the work dir), so later commands can find them."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError

KINDS = ("jobs", "endpoints")


def unique_name(prefix: str) -> str:
    """SageMaker-style name: prefix, UTC timestamp to the millisecond, and a short random suffix."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


class RecordStore:
    """One JSON file per job or endpoint: `<root>/<kind>/<name>.json`, written atomically."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.json"

    def exists(self, kind: str, name: str) -> bool:
        return self.path(kind, name).is_file()

    def save(self, kind: str, record: dict[str, Any]) -> Path:
        path = self.path(kind, record["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(record, indent=2, default=str))
        os.replace(partial, path)
        return path

    def load(self, kind: str, name: str) -> dict[str, Any]:
        path = self.path(kind, name)
        if not path.is_file():
            known = ", ".join(self.names(kind)[-5:]) or "none"
            raise LauncherError(f"no {kind[:-1]} named {name!r} in {self.root} (most recent: {known})")
        return json.loads(path.read_text())

    def names(self, kind: str) -> list[str]:
        """Names of the records of a kind, oldest first."""
        folder = self.root / kind
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        return [p.stem for p in files]

    def find(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        """Records whose fields equal the given values, oldest first."""
        records = (self.load(kind, name) for name in self.names(kind))
        return [r for r in records if all(r.get(k) == v for k, v in fields.items())]
