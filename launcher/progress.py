"""Progress lines for the user, on stderr so that stdout stays machine-readable (e.g. `predict`'s JSON)."""

import sys


def say(message: str) -> None:
    print(f"[launcher] {message}", file=sys.stderr, flush=True)
