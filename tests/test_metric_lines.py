"""The metric lines the image prints (imgclf_contract.metrics.epoch_line and final_line, which imgclf.train calls)
against the regexes the tuners and SageMaker read them with. A real training log is read the same way in
tests/test_train_contract.py."""

from __future__ import annotations

import re

from imgclf_contract import metrics

EPOCH_VALUES = {metrics.TRAIN_LOSS: 0.4123, metrics.VALID_LOSS: 0.5, metrics.VALID_ACCURACY: 0.875}
TEST_LOSS, TEST_ACCURACY = 0.25, 0.9


def container_log() -> str:
    """The lines train prints for one epoch and at the end, from its own format strings."""
    lines = [metrics.epoch_line(3, EPOCH_VALUES), metrics.final_line(metrics.TEST_LOSS, TEST_LOSS)]
    return "\n".join(["some progress line", *lines, metrics.final_line(metrics.TEST_ACCURACY, TEST_ACCURACY)])


def test_every_metric_definition_reads_its_value_from_the_containers_lines():
    log = container_log()
    read = {}
    for definition in metrics.METRIC_DEFINITIONS:
        found = re.findall(definition["Regex"], log)
        assert len(found) == 1, (definition, log)  # one line each: the test loss regex must not read another
        read[definition["Name"]] = float(found[0])
    assert read == {
        **EPOCH_VALUES,
        metrics.TEST_LOSS: TEST_LOSS,
        metrics.TEST_ACCURACY: TEST_ACCURACY,
    }


def test_the_default_objective_and_the_epoch_line_read_the_containers_lines():
    log = container_log()
    # The default objective is the validation loss, read from every epoch's line; a trial's is the last one.
    assert metrics.DEFAULT_OBJECTIVE == metrics.VALID_LOSS
    assert [float(v) for v in re.findall(metrics.DEFAULT_OBJECTIVE_REGEX, log)][-1] == EPOCH_VALUES[metrics.VALID_LOSS]
    assert not re.search(metrics.DEFAULT_OBJECTIVE_REGEX, metrics.final_line(metrics.TEST_LOSS, 0.25))  # not the test
    epoch, values = metrics.epoch_values(metrics.EPOCH_LINE.search(log))
    assert (epoch, values[metrics.VALID_LOSS], values[metrics.VALID_ACCURACY]) == (3, 0.5, 0.875)
    assert values[metrics.TRAIN_LOSS] == EPOCH_VALUES[metrics.TRAIN_LOSS]


def test_a_diverged_epoch_still_matches_the_epoch_line():
    nan, inf = float("nan"), float("inf")
    diverged = {metrics.TRAIN_LOSS: nan, metrics.VALID_LOSS: inf, metrics.VALID_ACCURACY: nan}
    line = metrics.epoch_line(1, diverged)
    assert metrics.EPOCH_LINE.search(line).groups() == ("1", "nan", "inf", "nan")


def test_the_test_metric_keys_are_metric_definitions():
    assert set(metrics.TEST_METRIC_KEYS) <= {d["Name"] for d in metrics.METRIC_DEFINITIONS}
