import logging
import os

import pytest

from imgclf import hyperparameters
from imgclf_contract.errors import HyperparameterError
from imgclf_contract.hyperparameters import Hyperparameters


def test_defaults():
    hps = Hyperparameters.from_mapping({})
    assert hps.model_name == "resnet18" and hps.optimizer == "sgd" and hps.pretrained is None
    assert hps.num_workers == min(os.cpu_count() or 1, 8)  # "auto"


def test_decoded_sagemaker_values_are_converted():
    hps = Hyperparameters.from_mapping(
        {
            "batch_size": "128",
            "learning_rate": 0.0308,
            "epochs": 2.0,
            "pretrained": "true",
            "freeze_backbone": "False",
            "model_name": "ResNet50",
            "optimizer": "adamw",
            "num_workers": "auto",
        }
    )
    assert (hps.batch_size, hps.learning_rate, hps.epochs) == (128, 0.0308, 2)
    assert hps.pretrained is True and hps.freeze_backbone is False
    assert (hps.model_name, hps.optimizer) == ("resnet50", "adamw")


def test_platform_keys_are_ignored_silently_and_unknown_keys_warned(caplog):
    with caplog.at_level(logging.WARNING):
        Hyperparameters.from_mapping(
            {"sagemaker_program": "hpo.py", "_tuning_objective_metric": "average test loss", "learning_rat": 0.1}
        )
    assert "learning_rat" in caplog.text
    assert "sagemaker_program" not in caplog.text and "_tuning_objective_metric" not in caplog.text


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", -0.1, "'learning_rate' must be a number >= 0.0"),
        ("learning_rate", "fast", "'learning_rate' must be a number"),
        ("learning_rate", float("nan"), "'learning_rate' must be a number"),
        ("batch_size", 12.5, "'batch_size' must be an integer >= 1, got 12.5"),
        ("batch_size", "many", "'batch_size' must be an integer"),
        ("batch_size", 0, "'batch_size' must be an integer >= 1"),
        ("epochs", True, "'epochs' must be an integer"),
        ("model_name", "vgg16", "'model_name' must be one of resnet18, resnet34, resnet50, resnet101, resnet152"),
        ("optimizer", "rmsprop", "'optimizer' must be one of sgd, adam, adamw"),
        ("momentum", 1.0, "'momentum' must be a number >= 0.0 and < 1.0"),
        ("pretrained", "maybe", "'pretrained' must be one of true, false, auto"),
        ("image_size", 16, "'image_size' must be an integer >= 32"),
        ("processes_per_host", 0, "'processes_per_host' must be an integer >= 1, got 0"),
        ("processes_per_host", "all", "'processes_per_host' must be an integer >= 1"),
    ],
)
def test_bad_values_name_the_hyperparameter_and_the_rule(key, value, expected):
    with pytest.raises(HyperparameterError) as raised:
        Hyperparameters.from_mapping({key: value})
    assert expected in str(raised.value)


def test_zero_learning_rate_is_allowed():
    assert Hyperparameters.from_mapping({"learning_rate": 0}).learning_rate == 0.0


def test_processes_per_host_auto_and_the_cores_shared_among_them(monkeypatch: pytest.MonkeyPatch):
    assert Hyperparameters.from_mapping({"processes_per_host": "auto"}).processes_per_host == 0  # one per GPU
    assert Hyperparameters.from_mapping({"processes_per_host": "4"}).processes_per_host == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # what torch.distributed.run tells each of 4 processes
    assert Hyperparameters.from_mapping({}).num_workers == 4


def test_rules_are_checked_by_the_contract_for_shape_and_by_the_image_for_names_and_parameters():
    with pytest.raises(HyperparameterError, match="rules must be a JSON object"):
        Hyperparameters.from_mapping({"rules": "[1, 2]"})  # what the launcher refuses too
    assert Hyperparameters.from_mapping({"rules": '{"NoSuchRule": false}'}).rules == {"NoSuchRule": False}
    with pytest.raises(HyperparameterError, match=r"hyperparameter 'rules': unknown rules NoSuchRule"):
        hyperparameters.parse({"rules": '{"NoSuchRule": false}'})  # the image's rule book knows the names
    assert hyperparameters.parse({"rules": '{"Overfit": {"patience": 2}}'}).rules == {"Overfit": {"patience": 2}}
