"""The metric lines the image prints (imgclf_contract.metrics.epoch_line and final_line, which imgclf.train calls)
against the regexes the tuners and SageMaker read them with. A real training log is read the same way in
tests/test_train_contract.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_a_metric_added_to_the_contract_is_read_and_tracked_with_no_other_change(tmp_path: Path):
    """The launcher reads, tracks, plots and compares whatever imgclf_contract.metrics declares: a copy of the contract
    with one more per-epoch and one more test metric, first on the path of a fresh interpreter, is all it takes for
    the epoch line, SageMaker's metric definitions, a record's test metrics, the job's MLflow run (each epoch's value
    a step of the metric's curve) and a promotion's side-by-side figures to carry them."""
    contract = tmp_path / "imgclf_contract"
    shutil.copytree(Path(metrics.__file__).parent, contract, ignore=shutil.ignore_patterns("__pycache__"))
    source = (contract / "metrics.py").read_text()
    source = source.replace(
        "PER_EPOCH = (TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY)", f"{NEW_EPOCH_METRIC}\n{NEW_PER_EPOCH}"
    )
    source = source.replace('TEST_METRIC_KEYS = {TEST_LOSS: "loss", TEST_ACCURACY: "accuracy"}', NEW_TEST_KEYS)
    assert source.count("top-5") == 2, "the contract's declarations moved: update this test's edit"
    (contract / "metrics.py").write_text(source)
    probe = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["contract"].startswith(str(tmp_path))
    assert "valid top-5 accuracy" in seen["definitions"] and "test top-5 accuracy" in seen["definitions"]
    assert seen["epoch"] == {"train loss": 0.5, "valid loss": 0.4, "valid accuracy": 0.8, "valid top-5 accuracy": 0.95}
    assert seen["test_metrics"] == {"loss": 0.3, "accuracy": 0.85, "top5": 0.97}
    assert seen["tracked"]["valid top-5 accuracy"] == 0.96 and seen["tracked"]["test top-5 accuracy"] == 0.97
    assert seen["curve"] == [[1, 0.95], [2, 0.96]]
    assert seen["compared"]["champion test top-5 accuracy"] == 0.97
    assert seen["compared"]["challenger test top-5 accuracy"] == 0.98


NEW_EPOCH_METRIC = 'VALID_TOP5 = "valid top-5 accuracy"'
NEW_PER_EPOCH = "PER_EPOCH = (TRAIN_LOSS, VALID_LOSS, VALID_ACCURACY, VALID_TOP5)"
NEW_TEST_KEYS = 'TEST_METRIC_KEYS = {TEST_LOSS: "loss", TEST_ACCURACY: "accuracy", "test top-5 accuracy": "top5"}'
# Prints what the launcher made of a job log written through the (changed) contract, and what it tracked in MLflow.
PROBE = """
import json, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
import imgclf_contract
from imgclf_contract import metrics
from launcher import promotion, steps
from launcher.backends.process import ProcessBackend
from launcher.records import Promotion, RecordStore, TrainingJob
from launcher.tracking import Tracker

work = Path(sys.argv[1]) / "work"
epoch = {"train loss": 0.5, "valid loss": 0.4, "valid accuracy": 0.8, "valid top-5 accuracy": 0.95}
final = {"average test loss": 0.3, "test accuracy": 0.85, "test top-5 accuracy": 0.97}
log = work / "train.log"
log.parent.mkdir(parents=True)
epochs = [metrics.epoch_line(1, epoch), metrics.epoch_line(2, {**epoch, "valid top-5 accuracy": 0.96})]
log.write_text("\\n".join([*epochs, *(metrics.final_line(n, v) for n, v in final.items())]))
test = metrics.test_metrics(metrics.final_values(log.read_text()))
uri = f"sqlite:///{work / 'mlflow.db'}"
backend = ProcessBackend(work, RecordStore(work / "records"), Tracker(uri, "new-metric"))
job = TrainingJob(name="job", backend="process", log=str(log), status="Failed", test_metrics=test)
run = backend.tracker.start("job", "training")
steps.track_training(backend, job, run, {})
challenger = TrainingJob(name="new", backend="process", test_metrics={**test, "top5": 0.98})
contest = Promotion(name="p", backend="process", endpoint="ep")
contest.champion = promotion._contender(job.name, "model.tar.gz", job)
contest.challenger = promotion._contender(challenger.name, "new/model.tar.gz", challenger)
print(json.dumps({
    "contract": imgclf_contract.__file__,
    "definitions": [d["Name"] for d in metrics.METRIC_DEFINITIONS],
    "epoch": metrics.epochs(log.read_text())[0][1],
    "test_metrics": test,
    "tracked": MlflowClient(uri).get_run(run).data.metrics,
    "curve": [[m.step, m.value] for m in MlflowClient(uri).get_metric_history(run, "valid top-5 accuracy")],
    "compared": promotion.compared_figures(contest),
}))
"""
