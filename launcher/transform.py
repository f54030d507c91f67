"""Batch transform on this machine's side: which files to classify, the JSON Lines they are written to, the
model server's answers gathered with bounded concurrency, progress, and the summary.

`<output>/predictions.jsonl` holds one line per image file, in the order the answers came:

    {"file": "cats/1.jpg", "predictions": [{"label": "cat", "index": 0, "probability": 0.97}, ...]}
    {"file": "cats/2.jpg", "error": "the body is not a decodable image (...)", "status": 400}

(`"logits": [...]` too when asked for). A file whose line is there is finished: a run that was interrupted
goes on with the others. A file the server could not answer at all (no connection, 5xx) is written with its
reason too, and tried again by the next run.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from launcher import contract
from launcher.errors import LauncherError
from launcher.progress import say

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
MIXED_CONTENT_TYPE = "application/x-image"  # one content type for a job of JPEGs and PNGs; the model decodes both
PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.json"
REQUEST_TIMEOUT_SECONDS = 120
PROGRESS_SECONDS = 5.0
DEFAULT_CONCURRENCY = 4
RETRIED_STATUSES = (408, 429)  # client errors that say "try again", not "this file is bad"


def content_type(path: str) -> str:
    return CONTENT_TYPES[os.path.splitext(path)[1].lower()]


def job_content_type(files: Iterable[str]) -> str:
    """The one ContentType of a SageMaker (or local-mode) transform job over these files."""
    types = {content_type(f) for f in files}
    return types.pop() if len(types) == 1 else MIXED_CONTENT_TYPE


def image_files(root: Path) -> list[str]:
    """Every JPEG and PNG under `root` (by extension, any depth), as sorted relative POSIX paths."""
    if not root.is_dir():
        raise LauncherError(f"no folder at {root}: give --input a folder of images (any depth)")
    found = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix.lower() in CONTENT_TYPES and path.is_file()
    )
    if not found:
        raise LauncherError(f"no JPEG or PNG files (.jpg, .jpeg, .png) under {root}")
    return found


def is_finished(line: dict[str, Any]) -> bool:
    """Answered for good: predictions, or a client error that sending again would not change."""
    status = line.get("status")
    return "predictions" in line or (isinstance(status, int) and 400 <= status < 500 and status not in RETRIED_STATUSES)


class Predictions:
    """`predictions.jsonl`: read what earlier runs finished, append new answers (thread-safe, a line at a time)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def lines(self) -> dict[str, dict[str, Any]]:
        """The last line written for each file (a torn last line, from a killed run, is ignored)."""
        latest: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for text in self.path.read_text().splitlines():
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if isinstance(line, dict) and isinstance(line.get("file"), str):
                    latest[line["file"]] = line
        return latest

    def end_torn_line(self) -> None:
        """A run killed mid-write leaves a last line without its newline: end it, so the next line stands alone."""
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb+") as stream:
                stream.seek(-1, os.SEEK_END)
                if stream.read(1) != b"\n":
                    stream.write(b"\n")

    def finished(self) -> set[str]:
        return {name for name, line in self.lines().items() if is_finished(line)}

    def add(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a") as stream:
            stream.write(text)


def answer_line(file: str, status: int, body: bytes, keep_logits: bool) -> dict[str, Any]:
    """One file's line from the server's answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status == 200 and isinstance(answer, dict) and "predictions" in answer:
        line = {"file": file, "predictions": answer["predictions"]}
        if keep_logits:
            line["logits"] = answer.get("logits")
        return line
    error = contract.error_answer(body)  # ours, also where it came with 200 (errors as records)
    if error:
        return {"file": file, "error": error[0], "status": error[1] or status}
    return {"file": file, "error": f"unexpected answer: {body[:200]!r}", "status": status}


def add_out_files(
    files: list[str],
    read: Callable[[str], bytes | None],
    keep_logits: bool,
    predictions: Predictions,
    progress: Progress,
    missing: str,
) -> None:
    """Each file's line from the `.out` file that a batch transform wrote for it (`read` gives its bytes, None where
    there is none: then the line says `missing`, and the next run tries the file again)."""
    for file in files:
        body = read(file)
        if body is None:
            line = {"file": file, "error": missing, "status": 503}
        else:
            line = answer_line(file, 200, body, keep_logits)
        predictions.add(line)
        progress.tick(failed="predictions" not in line)


class Progress:
    """Files done, rate and time left, on the console every few seconds and at the end."""

    def __init__(self, label: str, total: int, done_before: int = 0):
        self.label, self.total, self.done = label, total, done_before
        self.new = self.failed = 0
        self.started = self.shown = time.monotonic()
        self._lock = threading.Lock()

    def begin(self) -> None:
        """The first request is about to go: the rate counts from here, not from the server's start-up."""
        self.started = self.shown = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the first request (or since this object was made, if none was sent)."""
        return time.monotonic() - self.started

    def tick(self, failed: bool) -> None:
        with self._lock:
            self.done, self.new, self.failed = self.done + 1, self.new + 1, self.failed + failed
            if time.monotonic() - self.shown >= PROGRESS_SECONDS:
                self.show()

    def show(self) -> None:
        self.shown = time.monotonic()
        elapsed = max(self.shown - self.started, 1e-9)
        rate = self.new / elapsed
        left = f", {(self.total - self.done) / rate:.0f} s left" if rate and self.done < self.total else ""
        failed = f", {self.failed} failed" if self.failed else ""
        say(f"{self.label}: {self.done}/{self.total} files, {rate:.1f} files/s{left}{failed}")


def server_concurrency(url: str) -> int:
    """Requests at once that fill the server's batches: its /execution-parameters' MaxConcurrentTransforms, as
    SageMaker's batch transform asks (DEFAULT_CONCURRENCY where it does not say)."""
    try:
        with urllib.request.urlopen(f"{url}/execution-parameters", timeout=10) as answer:
            return max(1, int(json.loads(answer.read())["MaxConcurrentTransforms"]))
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_CONCURRENCY


class HttpClassifier:
    """Sends files to a model server's /invocations from `concurrency` threads, each on a kept-alive connection."""

    def __init__(self, url: str, concurrency: int, keep_logits: bool):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.concurrency, self.keep_logits = concurrency, keep_logits

    def run(self, root: Path, files: list[str], predictions: Predictions, progress: Progress) -> None:
        todo: queue.Queue[str] = queue.Queue()
        for file in files:
            todo.put(file)
        stop = threading.Event()
        progress.begin()

        def work() -> None:
            connection: http.client.HTTPConnection | None = None
            while not stop.is_set():
                try:
                    file = todo.get_nowait()
                except queue.Empty:
                    break
                line, connection = self._classify(root, file, connection)
                if stop.is_set() and "predictions" not in line:
                    break  # the server is going away with the launcher: not this file's fault
                predictions.add(line)
                progress.tick(failed="predictions" not in line)
            if connection is not None:
                connection.close()

        threads = [threading.Thread(target=work, daemon=True) for _ in range(min(self.concurrency, len(files)))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:  # the lines written so far stay; the next run goes on from there
            stop.set()
            raise

    def _classify(
        self, root: Path, file: str, connection: http.client.HTTPConnection | None
    ) -> tuple[dict[str, Any], http.client.HTTPConnection | None]:
        try:
            body = (root / file).read_bytes()
        except OSError as err:
            return {"file": file, "error": f"cannot read the file: {err.strerror or err}", "status": 400}, connection
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile fails once
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_SECONDS)
            try:
                headers = {"Content-Type": content_type(file), "Accept": "application/json"}
                connection.request("POST", "/invocations", body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                if answer.will_close:
                    connection.close()
                    connection = None
                return answer_line(file, answer.status, data, self.keep_logits), connection
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                connection = None
                if attempt == 2:
                    return {"file": file, "error": f"no answer from the model server: {err}", "status": 503}, None
        raise AssertionError("unreachable")


def summarise(files: list[str], lines: dict[str, dict[str, Any]], seconds: float, new: int) -> dict[str, Any]:
    """What a transform produced: counts, how often each label came first, the failures with reasons; and this
    run's rate, `new` files in `seconds` from its first request to its last answer."""
    answered = [lines[f] for f in files if f in lines]
    classified = [line for line in answered if "predictions" in line]
    failures = [
        {"file": line["file"], "status": line.get("status"), "error": line.get("error")}
        for line in answered
        if "predictions" not in line
    ]
    labels = Counter(line["predictions"][0]["label"] for line in classified if line["predictions"])
    return {
        "files": len(files),
        "classified": len(classified),
        "failed": len(failures),
        "missing": len(files) - len(answered),
        "top_labels": dict(labels.most_common()),
        "failures": failures,
        "seconds": round(seconds, 3),
        "files_per_second": round(new / seconds, 3) if seconds > 0 else None,
    }


class Batch:
    """A transform's output folder: its predictions, its summary, and the model they came from (`model.json`), so
    that a second run into the same folder goes on only with the same model."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.predictions = Predictions(folder / PREDICTIONS_FILE)

    @classmethod
    def open(cls, folder: Path, model_data: str) -> Batch:
        folder.mkdir(parents=True, exist_ok=True)
        identity_file = folder / MODEL_FILE
        identity = {"model_data": model_data}
        if identity_file.is_file() and json.loads(identity_file.read_text()) != identity:
            earlier = json.loads(identity_file.read_text()).get("model_data")
            raise LauncherError(
                f"{folder} holds the predictions of another model ({earlier}); give another --output, or remove it"
            )
        identity_file.write_text(json.dumps(identity))
        batch = cls(folder)
        batch.predictions.end_torn_line()
        return batch

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.folder / SUMMARY_FILE
        path.write_text(json.dumps(summary, indent=2))
        return path
