"""The model directory is self-contained: weights-only state_dict, config, and its own inference code."""

import importlib.util
import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import draw_shape


def load_artifact_code(model_dir: Path):
    """Import the artifact's code/inference.py by path, as a foreign container would (no imgclf involved)."""
    spec = importlib.util.spec_from_file_location("artifact_inference", model_dir / "code" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_artifact_contents(trained_model_dir: Path):
    assert sorted(p.name for p in trained_model_dir.iterdir()) == ["code", "model.pth", "model_config.json"]
    config = json.loads((trained_model_dir / "model_config.json").read_text())
    assert config["architecture"] == "resnet18"
    assert config["classes"] == ["circle", "square", "triangle"]
    assert config["preprocessing"] == {
        "crop_size": 32,
        "resize_size": 37,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert config["hyperparameters"]["image_size"] == 32
    assert "torch" in config["versions"]


def test_weights_load_with_weights_only(trained_model_dir: Path):
    state = torch.load(trained_model_dir / "model.pth", weights_only=True)
    assert isinstance(state, dict) and state["fc.weight"].shape == (3, 512)


def test_artifact_code_imports_nothing_from_the_project(trained_model_dir: Path):
    source = (trained_model_dir / "code" / "inference.py").read_text()
    assert "imgclf" not in source.replace('"""', "").split("import torch")[1]


def test_artifact_code_serves_the_model_on_its_own(trained_model_dir: Path):
    hooks = load_artifact_code(trained_model_dir)
    model = hooks.model_fn(str(trained_model_dir))
    buffer = io.BytesIO()
    draw_shape("triangle").save(buffer, "JPEG")
    image = hooks.input_fn(bytearray(buffer.getvalue()), "image/jpeg")
    answer = json.loads(hooks.output_fn(hooks.predict_fn(image, model), "application/json"))
    assert len(answer["logits"]) == 3
    assert {p["label"] for p in answer["predictions"]} == {"circle", "square", "triangle"}
    assert sum(p["probability"] for p in answer["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_a_pickled_object_in_place_of_weights_is_refused(trained_model_dir: Path, tmp_path: Path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would have run",))

    (tmp_path / "model.pth").write_bytes(pickle.dumps(Payload(), protocol=2))
    (tmp_path / "model_config.json").write_text((trained_model_dir / "model_config.json").read_text())
    hooks = load_artifact_code(trained_model_dir)
    with pytest.raises(pickle.UnpicklingError):
        hooks.model_fn(str(tmp_path))
