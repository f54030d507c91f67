"""The debugging contract with SageMaker, through the real `train` entry point: the hook follows SageMaker's
debughookconfig.json when there is one, and training survives an smdebug that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST_HYPERPARAMETERS, make_job, run_entry_point

pytestmark = pytest.mark.slow  # the real `train` entry point

NO_SMDEBUG_SCRIPT = """
import sys

sys.modules["smdebug"] = None  # as if it were not installed: importing it raises ImportError

from imgclf.environment import TrainingEnv
from imgclf.train import run

run(TrainingEnv.from_environ())
"""


def report(base: Path) -> dict[str, dict]:
    folder = base / "output" / "data" / "report"
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}


def test_the_hook_follows_sagemakers_debug_hook_config(tmp_path: Path, shapes_dataset: Path):
    base = make_job(tmp_path / "job", {"training": shapes_dataset})
    tensors = base / "output" / "tensors"  # SageMaker's LocalPath, uploaded to the job's S3OutputPath
    config = {
        "LocalPath": str(tensors),
        "S3OutputPath": "s3://bucket/debug",
        "HookParameters": {"train.save_interval": "1", "eval.save_interval": "1"},
        "CollectionConfigurations": [{"CollectionName": "losses"}, {"CollectionName": "gradients"}],
    }
    (base / "input" / "config" / "debughookconfig.json").write_text(json.dumps(config))

    result = run_entry_point("train", base)

    assert result.returncode == 0, result.stdout + result.stderr
    assert any((tensors / "events").iterdir())
    assert not (base / "output" / "data" / "debug").exists()  # ours was not created
    results = report(base)
    # The hook saved every step here, so its gradients are denser than the metric log's checks (every 100 steps);
    # the losses are as dense in both, and the metric log's are used.
    evidence = "train loss: metric log; valid loss: metric log; gradient mean abs: smdebug trace"
    assert results["VanishingGradient"]["details"]["evidence"] == evidence
    assert results["VanishingGradient"]["status"] == "NoIssuesFound"
    assert "configured by SageMaker" in (base / "output/data/report/report.html").read_text()


def test_training_goes_on_without_smdebug_and_the_report_says_so(tmp_path: Path, shapes_dataset: Path):
    hps = {**FAST_HYPERPARAMETERS, "sagemaker_program": '"train_model.py"'}
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, hps)
    (base / "code").mkdir()
    (base / "code" / "train_model.py").write_text(NO_SMDEBUG_SCRIPT)

    result = run_entry_point("train", base)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (base / "model" / "model.pth").is_file()
    assert "smdebug failed" in (base / "output/data/report/report.html").read_text()
    assert report(base)["ExplodingTensor"]["details"]["evidence"] == "metric log"


def test_a_bad_rule_configuration_fails_in_seconds_with_the_reason(tmp_path: Path, shapes_dataset: Path):
    hps = {**FAST_HYPERPARAMETERS, "rules": json.dumps(json.dumps({"Overfit": {"ratio": 0.2}}))}
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, hps)
    result = run_entry_point("train", base)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: hyperparameter 'rules': rule Overfit has no parameter ratio")
