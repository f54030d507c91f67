import json
from pathlib import Path

import pytest

from imgclf.environment import TrainingEnv, decode_hyperparameters
from imgclf.errors import UserError


def test_decode_hyperparameters_as_sagemaker_sends_them():
    raw = {
        "batch_size": '"128"',
        "learning_rate": "0.03087708635920261",
        "sagemaker_program": '"hpo.py"',
        "model_name": "resnet50",  # not valid JSON: kept as the raw string
        "epochs": 3,  # already decoded: kept
    }
    assert decode_hyperparameters(raw) == {
        "batch_size": "128",
        "learning_rate": 0.03087708635920261,
        "sagemaker_program": "hpo.py",
        "model_name": "resnet50",
        "epochs": 3,
    }


def test_environment_reads_sagemaker_files(tmp_path: Path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"epochs": "2"}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}, "test": {}}))
    (tmp_path / "input" / "data" / "valid").mkdir(parents=True)

    env = TrainingEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_NUM_GPUS": "0"})

    assert env.hyperparameters == {"epochs": 2}
    assert env.hosts == ["algo-1", "algo-2"] and env.current_host == "algo-2"
    assert env.channels == {name: tmp_path / "input" / "data" / name for name in ("train", "test", "valid")}
    assert env.model_dir == tmp_path / "model"
    assert env.output_data_dir == tmp_path / "output" / "data"
    assert env.failure_file == tmp_path / "output" / "failure"


def test_toolkit_variables_override_the_files(tmp_path: Path):
    env = TrainingEnv.from_environ(
        {
            "SAGEMAKER_BASE_DIR": str(tmp_path),
            "SM_CHANNEL_TRAIN": "/data/train",
            "SM_MODEL_DIR": "/somewhere/model",
            "SM_HOSTS": '["algo-1", "algo-2"]',
            "SM_CURRENT_HOST": "algo-1",
            "SM_NUM_GPUS": "0",
        }
    )
    assert env.channels == {"train": Path("/data/train")}
    assert env.model_dir == Path("/somewhere/model")
    assert env.hosts == ["algo-1", "algo-2"]


def test_broken_config_file_is_a_user_error(tmp_path: Path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text("{not json")
    with pytest.raises(UserError, match=r"hyperparameters\.json is not valid JSON"):
        TrainingEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_NUM_GPUS": "0"})
