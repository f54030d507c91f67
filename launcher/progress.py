"""Progress lines for the user, on stderr so that stdout stays machine-readable (e.g. `predict`'s JSON); and a
per-thread mute for stdout, for code that prints there unasked (SageMaker local mode copies container output)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

_lock = threading.Lock()
_muted: dict[int, int] = {}  # muted thread id -> how many `muted_stdout` blocks it is in
_proxy: _MutingStdout | None = None  # on sys.stdout while any thread is muted


def say(message: str) -> None:
    print(f"[launcher] {message}", file=sys.stderr, flush=True)


def text_table(lines: list[list[str]]) -> str:
    """Rows of cells (the first the header) as left-aligned columns two spaces apart."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


class _MutingStdout:
    """Stands in for sys.stdout: drops what muted threads write, passes everything else to the real stream."""

    def __init__(self, real: TextIO):
        self.real = real

    def write(self, text: str) -> int:
        if threading.get_ident() in _muted:
            return len(text)
        return self.real.write(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty, ...
        return getattr(self.real, name)


@contextlib.contextmanager
def muted_stdout() -> Iterator[None]:
    """Within the block, drop what the calling thread writes to sys.stdout; other threads still print.

    Blocks may nest and run in several threads at once; sys.stdout is given back when the last one ends (unless
    someone else replaced it meanwhile, then theirs is left in place).
    """
    global _proxy
    me = threading.get_ident()
    with _lock:
        if _proxy is None:
            _proxy = sys.stdout = _MutingStdout(sys.stdout)
        _muted[me] = _muted.get(me, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _muted[me] -= 1
            if not _muted[me]:
                del _muted[me]
            if not _muted:
                if sys.stdout is _proxy:
                    sys.stdout = _proxy.real
                _proxy = None
