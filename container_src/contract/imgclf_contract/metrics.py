"""The metric lines of a training job's log: their names, how the image prints them and the regexes that read them,
in one place.

The image prints, once per epoch and once at the end (`epoch_line`, `final_line`):

    epoch: 3 train loss: 0.412 valid loss: 0.52 valid accuracy: 0.875
    average test loss: 0.25
    test accuracy: 0.9

SageMaker's metric definitions, a tuner's default objective, the local tuner's per-epoch reader and every
training record's test metrics (read from the log on the launcher's machine, by SageMaker on SageMaker) come from
here; `tests/test_metric_lines.py` reads the lines the image's own trainer prints with every regex.
"""

from __future__ import annotations

import re

TRAIN_LOSS = "train loss"
VALID_LOSS = "valid loss"
VALID_ACCURACY = "valid accuracy"
TEST_LOSS = "average test loss"
TEST_ACCURACY = "test accuracy"
PER_EPOCH = (TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY)  # what early stopping and Hyperband judge trials by
# The test split's metrics, printed once at the end -> their keys in a training record's test_metrics (and in
# metrics.json's "test").
TEST_METRIC_KEYS = {TEST_LOSS: "loss", TEST_ACCURACY: "accuracy"}
NUMBER = r"([0-9.eE+-]+)"  # SageMaker's metric values; "nan" and "inf" are not metric values there


def epoch_line(epoch: int, values: dict[str, float]) -> str:
    """What the image prints after each epoch: the epoch, then each of PER_EPOCH's values in order."""
    return " ".join([f"epoch: {epoch}", *(f"{name}: {values[name]:.6g}" for name in PER_EPOCH)])


def final_line(name: str, value: float) -> str:
    """What the image prints once at the end for one of the test split's metrics."""
    return f"{name}: {value:.6g}"


def regex(name: str) -> str:
    """The regex SageMaker (and our tuner) reads a metric with: its name, a colon, a number."""
    return f"{name}: {NUMBER}"


METRIC_DEFINITIONS = [{"Name": name, "Regex": regex(name)} for name in (*PER_EPOCH, *TEST_METRIC_KEYS)]
# Tuning selects on the validation split and the test split judges the chosen model once: the objective is the
# validation loss, printed every epoch (so SageMaker's Auto early stopping and Hyperband can judge trials by it), and
# a trial's objective is its last epoch's value — the value SageMaker's tuner keeps (the final one its regex reads),
# and the loss of the model the trial saves (the trainer keeps its last epoch's weights, not its best epoch's).
# The original project's objective, `average test loss`, lets the test split pick the hyperparameters and then
# grade the winner; a job config can still name it (docs/tuning.md).
DEFAULT_OBJECTIVE = VALID_LOSS
DEFAULT_OBJECTIVE_REGEX = regex(VALID_LOSS)


def per_epoch_judge(direction: str) -> str:
    """The per-epoch metric a tuner compares trials by as they train: validation accuracy when the objective is
    maximised, else validation loss."""
    return VALID_ACCURACY if direction == "Maximize" else VALID_LOSS


# One epoch's line (`epoch_line`): the epoch and each PER_EPOCH value (nan or inf where training diverged).
VALUE = r"([0-9.eE+-]+|nan|inf)"
EPOCH_LINE = re.compile(" ".join([r"epoch: (\d+)", *(f"{name}: {VALUE}" for name in PER_EPOCH)]))


def final_values(log: str) -> dict[str, float]:
    """What SageMaker keeps of a job's log by the metric definitions (FinalMetricDataList): each metric's last value."""
    found = {d["Name"]: re.findall(d["Regex"], log) for d in METRIC_DEFINITIONS}
    return {name: float(values[-1]) for name, values in found.items() if values}


def epoch_values(match: re.Match[str]) -> tuple[int, dict[str, float]]:
    """An EPOCH_LINE match as (epoch, {metric name: value})."""
    return int(match.group(1)), {name: float(match.group(i)) for i, name in enumerate(PER_EPOCH, start=2)}


def epochs(log: str) -> list[tuple[int, dict[str, float]]]:
    """Every epoch line of a log, in order."""
    return [epoch_values(match) for match in EPOCH_LINE.finditer(log)]


def test_metrics(final: dict[str, float]) -> dict[str, float] | None:
    """A training record's test metrics, {"accuracy": ..., "loss": ...}, from its final metric values."""
    return {key: final[name] for name, key in TEST_METRIC_KEYS.items() if name in final} or None
