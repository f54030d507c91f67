"""`evaluate`: models scored on one labelled test split inside the image — what a retrain loop's evaluation step
runs where no launcher does (a SageMaker Processing job) — and, given a champion too, the promotion rule's decision.

Each image goes through the model's own inference hooks (`imgclf.inference`: decode, resize, crop, normalise), in
batches; the figures are `imgclf_contract.judging`'s, as `launcher evaluate` computes them from the endpoint's
logits, so both give the same figures for the same model and files. Images of classes a model does not know, and
files that do not decode, are counted and left out, as there.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgclf import inference
from imgclf_contract.judging import IMAGE_SUFFIXES, MODEL_ARCHIVE, NO_MODEL, Rule, headline, other_classes

BATCH = 32
ROLES = ("champion", "challenger")


class EvaluationError(Exception):
    """Input the evaluation cannot use; the message says what to give instead."""


def labelled_files(data: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The labelled root (`data/test` where there is one, else `data`, one subfolder per class) and (path relative
    to it, class) of every image under it."""
    root = data / "test" if (data / "test").is_dir() else data
    if not root.is_dir():
        raise EvaluationError(f"no folder at {data}: give a folder with one subfolder per class (or a test/ split)")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    loose = [f for f in files if "/" not in f]
    if loose or not files:
        raise EvaluationError(
            f"{root} has no image in a class folder"
            if not files
            else f"{len(loose)} image(s) of {root} lie "
            f"outside any class folder (e.g. {loose[0]}): give one subfolder per class"
        )
    return root, [(f, f.split("/", 1)[0]) for f in files]


def safe_members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's files and folders, refusing links and paths that leave the folder (the image's Python has no
    `filter=` for extractall)."""
    for member in archive.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise EvaluationError(f"refusing to extract {member.name!r}: not a plain file or folder inside the archive")
        yield member


def model_folder(model: Path, scratch: Path) -> Path | None:
    """A model's folder: as given, or a model.tar.gz (given, or alone in the given folder, as a Processing job's input
    places it) extracted under `scratch`; None where the folder holds the NO_MODEL file only."""
    if model.is_dir():
        held = sorted(p.name for p in model.iterdir())
        if held == [NO_MODEL]:
            return None
        if held != [MODEL_ARCHIVE]:
            return model
        model = model / MODEL_ARCHIVE
    if not model.is_file():
        raise EvaluationError(f"no model at {model}: give a model.tar.gz or its extracted folder")
    folder = Path(tempfile.mkdtemp(dir=scratch))
    try:
        with tarfile.open(model, "r:*") as archive:
            archive.extractall(folder, members=safe_members(archive))
    except (OSError, tarfile.TarError) as err:
        raise EvaluationError(f"cannot read {model} as a model.tar.gz: {err}") from err
    return folder


def score(model_dir: Path, root: Path, files: list[tuple[str, str]]) -> dict[str, Any]:
    """One model's figures on `files` (under `root`), with what was left out."""
    try:
        model = inference.model_fn(str(model_dir))
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise EvaluationError(f"cannot load the model in {model_dir}: {err}") from err
    index = {name: i for i, name in enumerate(model.classes)}
    unknown: dict[str, int] = {}
    failed: list[dict[str, str]] = []
    truth: list[int] = []
    logits: list[list[float]] = []
    batch: list[tuple[int, Any]] = []

    def classify() -> None:
        for (label, _), answer in zip(batch, inference.predict_fn([image for _, image in batch], model), strict=True):
            truth.append(label)
            logits.append(answer["logits"])
        batch.clear()

    for file, label in files:
        if label not in index:
            unknown[label] = unknown.get(label, 0) + 1
            continue
        try:
            batch.append((index[label], inference.decode_image((root / file).read_bytes())))
        except inference.RequestError as err:
            failed.append({"file": file, "error": str(err)})
        if len(batch) == BATCH:
            classify()
    if batch:
        classify()
    if not truth:
        raise EvaluationError(
            f"no image could be scored by the model in {model_dir}: its classes are {', '.join(model.classes)}"
        )
    figures = headline(truth, logits, len(model.classes))
    return {**figures, "classes": list(model.classes), "unknown_classes": unknown, "failed": failed}


def evaluate(data: Path, models: dict[str, Path], rule: Rule, scratch: Path) -> dict[str, Any]:
    """The evaluation file: each model's figures on the same files and, with a challenger, the decision."""
    root, files = labelled_files(data)
    folders = {role: model_folder(path, scratch) for role, path in models.items()}
    if "challenger" in folders and folders["challenger"] is None:
        raise EvaluationError(f"the challenger's folder {models['challenger']} says {NO_MODEL}: nothing to judge")
    figures = {role: score(folder, root, files) for role, folder in folders.items() if folder is not None}
    result: dict[str, Any] = {"data": str(root), "files": len(files), "models": figures, "rule": str(rule)}
    if "challenger" in figures:
        refusal = other_classes(figures["champion"]["classes"], figures["challenger"]["classes"]) if (
            "champion" in figures) else None  # fmt: skip
        if refusal:
            promote, reason = False, refusal
        elif "champion" in figures:
            promote, reason = rule.verdict(figures["champion"], figures["challenger"])
        else:
            promote, reason = True, "no champion: the first model is promoted"
        result["decision"] = {"promote": promote, "reason": reason, "min_improvement": rule.min_improvement}
    return result


def role_and_path(text: str) -> tuple[str, Path]:
    role, sep, path = text.partition("=")
    if not sep or role not in ROLES or not path:
        raise EvaluationError(f"--model {text!r}: give ROLE=PATH with ROLE one of {', '.join(ROLES)}")
    return role, Path(path)
