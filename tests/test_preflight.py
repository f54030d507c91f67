"""launcher.preflight: data folders and tuning ranges the container would refuse, refused with its message (the
container's own `imgclf.data` is run on the same folders to compare); unknown names warned with close matches;
script mode left alone. Real folders of real JPEGs; no job runs here (test_sagemaker_moto.py and
test_launcher_process.py run the checks through the launcher's commands)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgclf.data import load_image_folders
from imgclf_contract.errors import ContractError
from launcher import preflight
from launcher.backends import TrainingSpec
from launcher.errors import LauncherError
from launcher.tuning import Tuning, TuningSpec


def container_refusal(channels: dict[str, Path]) -> str:
    with pytest.raises(ContractError) as refused:
        load_image_folders(channels)
    return str(refused.value)


def only_train(root: Path) -> None:
    shutil.rmtree(root / "valid")
    shutil.rmtree(root / "test")


def renamed_val_without_test(root: Path) -> None:
    (root / "valid").rename(root / "val")
    shutil.rmtree(root / "test")


def class_missing_in_test(root: Path) -> None:
    shutil.rmtree(next((root / "test").iterdir()))


def empty_valid(root: Path) -> None:
    for path in (root / "valid").rglob("*.jpg"):
        path.unlink()


def empty_train_class(root: Path) -> None:
    for path in next((root / "train").iterdir()).iterdir():
        path.unlink()


def no_class_folders(root: Path) -> None:
    shutil.rmtree(root / "train")
    (root / "train").mkdir()


@pytest.mark.parametrize(
    "damage",
    [only_train, renamed_val_without_test, class_missing_in_test, empty_valid, empty_train_class, no_class_folders],
)
def test_data_the_container_refuses_is_refused_in_its_words(shapes_dataset: Path, damage):
    damage(shapes_dataset)
    channels = {"training": shapes_dataset}
    problems = preflight.data_problems({"training": str(shapes_dataset)})
    assert container_refusal(channels) in problems


def test_separate_channels_are_checked_as_the_container_does(shapes_dataset: Path):
    channels = {"train": shapes_dataset / "train", "test": shapes_dataset / "test"}
    assert preflight.data_problems({k: str(v) for k, v in channels.items()}) == [container_refusal(channels)]


def test_good_and_s3_data_pass(shapes_dataset: Path):
    load_image_folders({"training": shapes_dataset})  # the container takes it
    assert preflight.data_problems({"training": str(shapes_dataset)}) == []
    assert preflight.data_problems({"training": "s3://bucket/data"}) == []  # not read from here


def spec(channels: dict[str, str], **hyperparameters: object) -> TrainingSpec:
    return TrainingSpec(job_name="j", channels=channels, hyperparameters=hyperparameters)


def test_refusal_names_every_problem_and_the_fix(shapes_dataset: Path):
    with pytest.raises(LauncherError) as refused:
        preflight.check_training(spec({"training": str(shapes_dataset)}, learning_rate="abc", batch_size=0))
    message = str(refused.value)
    assert "hyperparameter 'learning_rate' must be a number >= 0.0 and <= inf, got 'abc'" in message
    assert "hyperparameter 'batch_size' must be an integer >= 1, got 0" in message
    assert "nothing was started" in message and "-H NAME=VALUE" in message


def test_unknown_names_warn_with_close_matches(shapes_dataset: Path, capsys: pytest.CaptureFixture):
    preflight.check_training(spec({"training": str(shapes_dataset)}, learning_rte=0.1, sagemaker_region="x"))
    err = capsys.readouterr().err
    assert "unknown hyperparameter 'learning_rte'; did you mean learning_rate?" in err
    assert "sagemaker_region" not in err  # the platform's own keys


def test_script_mode_keeps_its_freedom(tmp_path: Path):
    preflight.check_training(spec({"training": str(tmp_path)}, sagemaker_program="train.py", batch_size="many"))


def tuning(shapes_dataset: Path, ranges: dict[str, str], **fixed: object) -> TuningSpec:
    return TuningSpec.of(Tuning(ranges=ranges), "t", spec({"training": str(shapes_dataset)}, **fixed))


@pytest.mark.parametrize(
    ("tuned", "expected"),
    [
        ({"batch_size": "IntegerParameter(0, 64)"},
         "tuning range 'batch_size', minimum 0: hyperparameter 'batch_size' must be an integer >= 1, got 0"),
        ({"momentum": "ContinuousParameter(0.5, 1.0)"},
         "tuning range 'momentum', maximum 1.0: hyperparameter 'momentum' must be a number >= 0.0 and < 1.0"),
        ({"optimizer": 'CategoricalParameter(["sgd", "lamb"])'},
         "tuning range 'optimizer', choice 'lamb': hyperparameter 'optimizer' must be one of sgd, adam, adamw"),
        ({"epochs": "ContinuousParameter(1, 3)"}, "hyperparameter 'epochs' takes integers"),
        ({"optimizer": "IntegerParameter(1, 3)"}, "hyperparameter 'optimizer' is not a number"),
    ],
)  # fmt: skip
def test_tuning_ranges_reaching_refused_values_are_refused(shapes_dataset: Path, tuned, expected):
    with pytest.raises(LauncherError, match="the image would refuse") as refused:
        preflight.check_tuning(tuning(shapes_dataset, tuned))
    assert expected in str(refused.value)


def test_good_tuning_passes(shapes_dataset: Path):
    ranges = {"batch_size": "IntegerParameter(1, 64)", "learning_rate": "ContinuousParameter(0.001, 0.1)"}
    preflight.check_tuning(tuning(shapes_dataset, ranges, epochs=1))
