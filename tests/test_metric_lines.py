"""The container's metric lines against the launcher's regexes: the tuner and SageMaker read what train prints."""

from __future__ import annotations

import re

from imgclf import train
from launcher import metrics

EPOCH = {"epoch": 3, "train_loss": 0.4123, "valid_loss": 0.5, "valid_accuracy": 0.875}
TEST_LOSS, TEST_ACCURACY = 0.25, 0.9


def container_log() -> str:
    """The lines train prints for one epoch and at the end, from its own format strings."""
    lines = [train.EPOCH_METRICS.format(**EPOCH), train.TEST_LOSS.format(TEST_LOSS)]
    return "\n".join(["some progress line", *lines, train.TEST_ACCURACY.format(TEST_ACCURACY)])


def test_every_metric_definition_reads_its_value_from_the_containers_lines():
    log = container_log()
    read = {}
    for definition in metrics.METRIC_DEFINITIONS:
        found = re.findall(definition["Regex"], log)
        assert len(found) == 1, (definition, log)  # one line each: the test loss regex must not read another
        read[definition["Name"]] = float(found[0])
    assert read == {
        metrics.TRAIN_LOSS: EPOCH["train_loss"],
        metrics.VALID_LOSS: EPOCH["valid_loss"],
        metrics.VALID_ACCURACY: EPOCH["valid_accuracy"],
        metrics.TEST_LOSS: TEST_LOSS,
        metrics.TEST_ACCURACY: TEST_ACCURACY,
    }


def test_the_default_objective_and_the_epoch_line_read_the_containers_lines():
    log = container_log()
    # The default objective is the validation loss, read from every epoch's line; a trial's is the last one.
    assert metrics.DEFAULT_OBJECTIVE == metrics.VALID_LOSS
    assert [float(v) for v in re.findall(metrics.DEFAULT_OBJECTIVE_REGEX, log)][-1] == EPOCH["valid_loss"]
    assert not re.search(metrics.DEFAULT_OBJECTIVE_REGEX, train.TEST_LOSS.format(TEST_LOSS))  # not the test split
    epoch, values = metrics.epoch_values(metrics.EPOCH_LINE.search(log))
    assert (epoch, values[metrics.VALID_LOSS], values[metrics.VALID_ACCURACY]) == (3, 0.5, 0.875)
    assert values[metrics.TRAIN_LOSS] == EPOCH["train_loss"]


def test_a_diverged_epoch_still_matches_the_epoch_line():
    line = train.EPOCH_METRICS.format(epoch=1, train_loss=float("nan"), valid_loss=float("inf"),
                                      valid_accuracy=float("nan"))  # fmt: skip
    assert metrics.EPOCH_LINE.search(line).groups() == ("1", "nan", "inf", "nan")


def test_the_test_metric_keys_are_metric_definitions():
    assert set(metrics.TEST_METRIC_KEYS) <= {d["Name"] for d in metrics.METRIC_DEFINITIONS}
