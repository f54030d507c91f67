"""The metric lines of a training job's log: the one place that names them and holds the regexes that read them.

The container prints, once per epoch and once at the end (its format strings are in `imgclf.train`):

    epoch: 3 train loss: 0.412 valid loss: 0.52 valid accuracy: 0.875
    average test loss: 0.25
    test accuracy: 0.9

SageMaker's metric definitions, a tuner's default objective, the local tuner's per-epoch reader and every
training record's test metrics (read from the log on this machine, by SageMaker on SageMaker) come from here;
`tests/test_metric_lines.py` formats the container's own lines and matches every regex, so they cannot drift apart.
"""

from __future__ import annotations

import re

TRAIN_LOSS = "train loss"
VALID_LOSS = "valid loss"
VALID_ACCURACY = "valid accuracy"
TEST_LOSS = "average test loss"
TEST_ACCURACY = "test accuracy"
PER_EPOCH = (TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY)  # what early stopping and Hyperband judge trials by
NUMBER = r"([0-9.eE+-]+)"  # SageMaker's metric values; "nan" and "inf" are not metric values there


def regex(name: str) -> str:
    """The regex SageMaker (and our tuner) reads a metric with: its name, a colon, a number."""
    return f"{name}: {NUMBER}"


METRIC_DEFINITIONS = [{"Name": name, "Regex": regex(name)} for name in (*PER_EPOCH, TEST_LOSS, TEST_ACCURACY)]
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


# The final test metrics' names -> the keys of a training record's test_metrics (and of metrics.json's "test").
TEST_METRIC_KEYS = {TEST_ACCURACY: "accuracy", TEST_LOSS: "loss"}
# One epoch's line: the epoch, its training loss, validation loss and accuracy (nan or inf where training diverged).
VALUE = r"([0-9.eE+-]+|nan|inf)"
EPOCH_LINE = re.compile(rf"epoch: (\d+) {TRAIN_LOSS}: {VALUE} {VALID_LOSS}: {VALUE} {VALID_ACCURACY}: {VALUE}")


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
