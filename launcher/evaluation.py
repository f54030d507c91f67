"""A model judged on a labelled folder: from the logits a transform wrote for every image, the accuracy, top-5
accuracy and average loss (`imgclf_contract.judging`, as the training job's test metrics and the image's `evaluate`
compute them), per-class precision,
recall, F1 and support, the confusion matrix, the most confused pairs and the most confident mistakes.

The labelled folder holds one subfolder per class (a training data folder's `test/` split is taken when the
folder has one). Images of classes the model does not know are counted and left out of the metrics.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from imgclf_contract import judging
from launcher.errors import LauncherError

CONFIG_FILE = "model_config.json"
MOST_CONFUSED = 10
WORST_MISTAKES = 12


def labelled_root(data: Path) -> Path:
    """The folder whose subfolders are the classes: `data/test` for a training data folder, else `data`."""
    if not data.is_dir():
        raise LauncherError(f"no folder at {data}: give --data a folder with one subfolder per class")
    test = data / "test"
    return test if test.is_dir() else data


def labels_of(files: list[str]) -> dict[str, str]:
    """Each file's class: the subfolder it is in. Files outside any class folder are refused by name."""
    loose = [f for f in files if "/" not in f]
    if loose:
        raise LauncherError(
            f"{len(loose)} image(s) lie outside any class folder (e.g. {loose[0]}): evaluation needs one subfolder "
            "per class, as training does"
        )
    return {f: f.split("/", 1)[0] for f in files}


def model_classes(model_archive: Path) -> list[str]:
    """The class names in a model.tar.gz's model_config.json, in the order of the network's outputs."""
    try:
        with tarfile.open(model_archive, "r:*") as tar:
            member = tar.extractfile(CONFIG_FILE) if CONFIG_FILE in tar.getnames() else None
            config = json.load(member) if member else None
    except (OSError, tarfile.TarError, ValueError) as err:
        raise LauncherError(f"cannot read {CONFIG_FILE} from {model_archive}: {err}") from err
    classes = config.get("classes") if isinstance(config, dict) else None
    if not classes or not all(isinstance(name, str) for name in classes):
        raise LauncherError(
            f"{model_archive} has no class names ({CONFIG_FILE} needs a `classes` list, as this image's `train` "
            "writes it): evaluation cannot tell which output is which class"
        )
    return classes


@dataclass(frozen=True)
class Scored:
    """The images that count: their files, true class indices and logits."""

    files: list[str]
    truth: np.ndarray  # (n,) int
    logits: np.ndarray  # (n, classes) float64


def score(classes: list[str], labels: dict[str, str], lines: dict[str, dict[str, Any]]) -> tuple[Scored, dict]:
    """The images with a known class and logits; and what was left out: unknown classes and failed files."""
    index = {name: i for i, name in enumerate(classes)}
    files, truth, logits = [], [], []
    unknown: dict[str, int] = {}
    failed = []
    for file, label in sorted(labels.items()):
        line = lines.get(file)
        if label not in index:
            unknown[label] = unknown.get(label, 0) + 1
        elif line is None or "predictions" not in line:
            failed.append({"file": file, "error": (line or {}).get("error", "not classified")})
        elif not isinstance(line.get("logits"), list) or len(line["logits"]) != len(classes):
            failed.append({"file": file, "error": f"the answer has no logits for the model's {len(classes)} classes"})
        else:
            files.append(file)
            truth.append(index[label])
            logits.append(line["logits"])
    scored = Scored(files, np.asarray(truth, dtype=np.int64), np.asarray(logits, dtype=np.float64))
    return scored, {"unknown_classes": unknown, "failed": failed}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def evaluate(classes: list[str], scored: Scored, left_out: dict) -> dict[str, Any]:
    """Every figure of the evaluation as plain JSON-able values."""
    if not len(scored.files):
        reasons = [f"{len(left_out['failed'])} could not be classified"] if left_out["failed"] else []
        if left_out["unknown_classes"]:
            reasons.append(f"the model does not know the classes {', '.join(left_out['unknown_classes'])}")
        raise LauncherError(f"no image could be scored: {'; '.join(reasons) or 'none found'}")
    log_p = log_softmax(scored.logits)
    predicted = log_p.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        scored.truth, predicted, labels=labels, zero_division=0
    )
    matrix = confusion_matrix(scored.truth, predicted, labels=labels)
    return {
        **judging.headline(scored.truth.tolist(), scored.logits.tolist(), len(classes)),  # as the image's `evaluate`
        "classes": classes,
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        ],
        "confusion_matrix": matrix.tolist(),
        "most_confused": most_confused(classes, matrix),
        "worst_mistakes": worst_mistakes(classes, scored, np.exp(log_p), predicted),
        **left_out,
    }


def most_confused(classes: list[str], matrix: np.ndarray) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true class, predicted class, count), most first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    cells = sorted(zip(*np.nonzero(off), strict=True), key=lambda cell: (-off[cell], cell))[:MOST_CONFUSED]
    return [{"true": classes[t], "predicted": classes[p], "count": int(off[t, p])} for t, p in cells]


def worst_mistakes(classes: list[str], scored: Scored, probabilities: np.ndarray, predicted: np.ndarray) -> list:
    """The wrong answers given with the most confidence, most confident first."""
    wrong = np.nonzero(predicted != scored.truth)[0]
    order = sorted(wrong, key=lambda i: (-probabilities[i, predicted[i]], scored.files[i]))[:WORST_MISTAKES]
    return [
        {
            "file": scored.files[i],
            "true": classes[scored.truth[i]],
            "predicted": classes[predicted[i]],
            "probability": float(probabilities[i, predicted[i]]),
            "true_probability": float(probabilities[i, scored.truth[i]]),
        }
        for i in order
    ]
