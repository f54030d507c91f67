"""The training contract end to end: the real `train` entry point on a SageMaker-shaped job folder."""

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import FAST_HYPERPARAMETERS, make_job, run_entry_point, write_split

pytestmark = pytest.mark.slow  # the real `train` entry point

# The regexes a tuner uses (docs/launcher.md lists them); each must match the log exactly.
EPOCH_REGEX = re.compile(
    r"^epoch: (\d+) train loss: ([0-9.eE+-]+) valid loss: ([0-9.eE+-]+) valid accuracy: ([0-9.eE+-]+)$", re.M
)
TEST_LOSS_REGEX = re.compile(r"^average test loss: ([0-9.eE+-]+)$", re.M)
TEST_ACCURACY_REGEX = re.compile(r"^test accuracy: ([0-9.eE+-]+)$", re.M)


def test_combined_training_channel(tmp_path: Path, shapes_dataset: Path):
    hps = {
        **FAST_HYPERPARAMETERS,
        "epochs": "2",
        "sagemaker_job_name": '"hpo-1"',
        "_tuning_objective_metric": '"average test loss"',
        "sagemaker_region": '"us-east-1"',
    }
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, hps)

    result = run_entry_point("train", base)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [m.group(1) for m in EPOCH_REGEX.finditer(result.stdout)] == ["1", "2"]
    assert len(TEST_LOSS_REGEX.findall(result.stdout)) == 1
    assert len(TEST_ACCURACY_REGEX.findall(result.stdout)) == 1
    assert (base / "output" / "success").is_file() and not (base / "output" / "failure").exists()
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["test"]["images"] == 6
    assert float(TEST_LOSS_REGEX.search(result.stdout).group(1)) == float(f"{metrics['test']['loss']:.6g}")
    # Each step's loss stays on the device and is read in blocks; the epoch's figure is still their mean (12
    # training images in 3 batches of 4 an epoch), and the metric log has every one of them.
    log = [json.loads(line) for line in (base / "output/data/diagnostics/training.jsonl").read_text().splitlines()]
    train_losses = [record["loss"] for record in log if record["mode"] == "TRAIN"]
    assert len(train_losses) == 6
    for epoch, losses in zip(metrics["epochs"], (train_losses[:3], train_losses[3:]), strict=True):
        assert epoch["train"]["loss"] == pytest.approx(sum(losses) / 3, rel=1e-12)
    assert "unknown hyperparameters" not in result.stdout  # SageMaker's own keys are tolerated silently


@pytest.mark.parametrize(
    ("settings", "described"),
    [({}, "fp32, contiguous"), ({"mixed_precision": '"bf16"', "channels_last": "true"}, "bfloat16, channels-last")],
)
def test_precision_and_memory_format(tmp_path: Path, shapes_dataset: Path, settings: dict, described: str):
    # auto is full precision on a CPU; bf16 autocast and channels-last also run here (they pay on a GPU).
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, {**FAST_HYPERPARAMETERS, **settings})
    result = run_entry_point("train", base)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"training in {described} on cpu" in result.stdout
    assert len(TEST_LOSS_REGEX.findall(result.stdout)) == 1 and (base / "model" / "model.pth").is_file()


def test_separate_channels(tmp_path: Path, shapes_dataset: Path):
    channels = {name: shapes_dataset / name for name in ("train", "valid", "test")}
    base = make_job(tmp_path / "job", channels)
    result = run_entry_point("train", base)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (base / "model" / "model.pth").is_file()


def test_bad_hyperparameter_fails_before_reading_data(tmp_path: Path):
    base = make_job(tmp_path / "job", {}, {**FAST_HYPERPARAMETERS, "batch_size": '"12.5"'})  # and no data at all
    result = run_entry_point("train", base)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: hyperparameter 'batch_size' must be an integer >= 1, got '12.5'")
    assert "\n" not in failure
    assert not (base / "model" / "model.pth").exists()


def test_a_missing_channel_fails_in_seconds_with_the_reason(tmp_path: Path, shapes_dataset: Path):
    base = make_job(tmp_path / "job", {"valid": shapes_dataset / "valid", "test": shapes_dataset / "test"})
    result = run_entry_point("train", base, timeout=60)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClientError: no training data: got channels ['test', 'valid']")


def test_corrupt_image_is_skipped_and_counted(tmp_path: Path, shapes_dataset: Path):
    good = (shapes_dataset / "train" / "circle" / "circle_0.jpg").read_bytes()
    (shapes_dataset / "train" / "circle" / "broken.jpg").write_bytes(good[:100])
    (shapes_dataset / "valid" / "square" / "Thumbs.db").write_bytes(b"\x00" * 64)
    base = make_job(tmp_path / "job", {"training": shapes_dataset})

    result = run_entry_point("train", base)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped 1 unreadable file(s) in the train split" in result.stdout
    skipped = json.loads((base / "output" / "data" / "metrics.json").read_text())["skipped_files"]
    assert {(row["split"], Path(row["file"]).name) for row in skipped} == {
        ("train", "broken.jpg"),
        ("valid", "Thumbs.db"),
    }


def test_class_mismatch_fails_with_the_difference(tmp_path: Path, shapes_dataset: Path):
    write_split(shapes_dataset / "test", 1, classes=("star",))
    base = make_job(tmp_path / "job", {"training": shapes_dataset})
    result = run_entry_point("train", base)
    assert result.returncode == 1
    assert "extra ['star']" in (base / "output" / "failure").read_text()


def test_pretrained_requested_without_weights_says_how_to_provide_them(tmp_path: Path, shapes_dataset: Path):
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, {**FAST_HYPERPARAMETERS, "pretrained": "true"})
    result = run_entry_point("train", base, timeout=120)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert "pretrained=true but no ImageNet weights for resnet18" in failure
    assert "'pretrained' input channel" in failure


def test_pretrained_channel_is_the_starting_point(tmp_path: Path, shapes_dataset: Path):
    weights = tmp_path / "weights" / "resnet18.pth"
    weights.parent.mkdir()
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), weights)
    hps = {**FAST_HYPERPARAMETERS, "pretrained": "true", "freeze_backbone": "true"}
    base = make_job(tmp_path / "job", {"training": shapes_dataset, "pretrained": weights.parent}, hps)

    result = run_entry_point("train", base)

    assert result.returncode == 0, result.stdout + result.stderr
    trained = torch.load(base / "model" / "model.pth", weights_only=True)
    # The backbone was frozen, so it still holds exactly the given weights; the new head has 3 classes.
    assert torch.equal(trained["layer4.1.conv2.weight"], reference.state_dict()["layer4.1.conv2.weight"])
    assert trained["fc.weight"].shape == (3, 512)
    config = json.loads((base / "model" / "model_config.json").read_text())
    assert config["pretrained_weights"].endswith("resnet18.pth")


USER_SCRIPT = """
import argparse, json, os

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--learning_rate", type=float)
args = parser.parse_args()
images = sorted(os.listdir(os.path.join(os.environ["SM_CHANNEL_TRAINING"], "train")))
with open(os.path.join(os.environ["SM_MODEL_DIR"], "user-model.json"), "w") as f:
    json.dump({"epochs": args.epochs, "learning_rate": args.learning_rate, "classes": images}, f)
print("average test loss: 0.5")
"""


def test_script_mode_runs_the_users_script_with_the_toolkits_arguments(tmp_path: Path, shapes_dataset: Path):
    hps = {"epochs": "3", "learning_rate": "0.1", "sagemaker_program": '"train_model.py"'}
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, hps)
    (base / "code").mkdir()
    (base / "code" / "train_model.py").write_text(USER_SCRIPT)

    result = run_entry_point("train", base)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "average test loss: 0.5" in result.stdout
    written = json.loads((base / "model" / "user-model.json").read_text())
    assert written == {"epochs": 3, "learning_rate": 0.1, "classes": ["circle", "square", "triangle"]}
    assert not (base / "model" / "model.pth").exists()  # the built-in trainer did not run


def test_script_mode_failure_is_reported(tmp_path: Path, shapes_dataset: Path):
    base = make_job(tmp_path / "job", {"training": shapes_dataset}, {"sagemaker_program": '"train_model.py"'})
    (base / "code").mkdir()
    (base / "code" / "train_model.py").write_text("raise SystemExit('no GPU for me')")
    result = run_entry_point("train", base)
    assert result.returncode == 1
    assert "no GPU for me" in result.stderr + result.stdout
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ExecuteUserScriptError") and "ExitCode 1" in failure
