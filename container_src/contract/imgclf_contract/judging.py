"""How a model is judged, for the image's `evaluate` and the launcher alike: its headline figures on a labelled
test split, from each image's logits (accuracy, top-k accuracy, average loss: the training job's test metrics,
computed the same way), and the promotion rule that compares two models' figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # the files of a labelled folder that are scored
TOP_K = 5
# A file of this name alone in a model's folder says there is no such model (a SageMaker Pipeline's first cycle has
# no champion, and a Processing input cannot be left out at run time).
NO_MODEL = "no-model"
MODEL_ARCHIVE = "model.tar.gz"
NEWEST = "newest"  # a pipeline execution's dataset version when a trigger started it: the store's newest


def log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    total = math.log(sum(math.exp(value - top) for value in logits))
    return [value - top - total for value in logits]


def headline(truth: list[int], logits: list[list[float]], classes: int) -> dict[str, Any]:
    """images, accuracy, top_k, top_k_accuracy and loss (the mean negative log-likelihood of the true class) of
    the images whose true class index is `truth[i]` and whose logits are `logits[i]`."""
    if not truth:
        raise ValueError("no image to score")
    k = min(TOP_K, classes)
    correct = in_top_k = 0
    loss = 0.0
    for label, row in zip(truth, logits, strict=True):
        log_p = log_softmax(row)
        ranked = sorted(range(len(log_p)), key=lambda i: -log_p[i])  # stable: ties keep the lower index first
        correct += ranked[0] == label
        in_top_k += label in ranked[:k]
        loss -= log_p[label]
    n = len(truth)
    return {"images": n, "accuracy": correct / n, "top_k": k, "top_k_accuracy": in_top_k / n, "loss": loss / n}


def other_classes(champion: list[str], challenger: list[str]) -> str | None:
    """Why two models cannot be judged against each other (they classify other classes: images of a class one does
    not know would be left out of its figures only); None where they classify the same."""
    if sorted(champion) == sorted(challenger):
        return None
    return (
        f"the champion classifies other classes ({', '.join(sorted(champion))}) than the challenger "
        f"({', '.join(sorted(challenger))}): a challenger must classify the same classes; deploy it on a new endpoint"
    )


@dataclass(frozen=True)
class Rule:
    """Promote when the challenger's average test loss is lower than the champion's by at least `min_improvement`
    and its accuracy is not lower."""

    min_improvement: float = 0.0

    def __str__(self) -> str:
        return (
            f"promote if the challenger's average test loss is lower than the champion's by at least "
            f"{self.min_improvement:g} and its test accuracy is not lower"
        )

    def verdict(self, champion: dict[str, Any], challenger: dict[str, Any]) -> tuple[bool, str]:
        """Whether the challenger wins, and why, in figures."""
        loss = f"average test loss {challenger['loss']:.6f} against {champion['loss']:.6f}"
        accuracy = f"test accuracy {challenger['accuracy']:.4f} against {champion['accuracy']:.4f}"
        if champion["loss"] - challenger["loss"] < self.min_improvement or challenger["loss"] >= champion["loss"]:
            return False, f"{loss}: not lower by at least {self.min_improvement:g}"
        if challenger["accuracy"] < champion["accuracy"]:
            return False, f"{accuracy}: lower ({loss})"
        return True, f"{loss}, {accuracy}"
