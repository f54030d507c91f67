"""The hooks an inference.py may leave out, filled as AWS's PyTorch containers fill them (the inference toolkit's
decoders and encoders, a TorchScript model), and the handler service's choice between them and the script's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imgclf import inference
from imgclf.serving import default_hooks, handler_service, wire


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"[[1, 2], [3, 4]]", "application/json", [[1.0, 2.0], [3.0, 4.0]]),
        ("1,2\n3,4\n", "text/csv; charset=utf-8", [[1.0, 2.0], [3.0, 4.0]]),  # text, as the handler hands it
    ],
)
def test_text_bodies_become_float_tensors(body: bytes, content_type: str, expected: list):
    tensor = default_hooks.input_fn(body, content_type)
    assert tensor.dtype == torch.float32 and tensor.tolist() == expected


def test_npy_keeps_its_dtype():
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.int64).reshape(2, 3))
    assert default_hooks.input_fn(buffer.getvalue(), "application/x-npy").dtype == torch.int64


def test_an_unknown_content_type_is_a_415_and_bad_json_a_400():
    with pytest.raises(default_hooks.UnsupportedMediaType) as unknown:
        default_hooks.input_fn(b"\xff\xd8", "image/jpeg")
    assert unknown.value.status == 415 and "input_fn" in str(unknown.value)
    with pytest.raises(default_hooks.UnsupportedMediaType) as bad:
        default_hooks.input_fn(b"{not json", "application/json")
    assert bad.value.status == 400


def test_a_tensor_is_answered_as_a_json_list_or_csv_and_else_406():
    prediction = torch.tensor([[0.5, -1.0]])
    body, content_type = default_hooks.output_fn(prediction, "*/*")
    assert content_type == "application/json" and json.loads(body) == [[0.5, -1.0]]
    body, content_type = default_hooks.output_fn(prediction, "text/html, text/csv")
    assert content_type == "text/csv" and body.strip() == "0.5,-1.0"
    with pytest.raises(default_hooks.UnsupportedMediaType) as refused:
        default_hooks.output_fn(prediction, "image/png")
    assert refused.value.status == 406


def test_without_model_fn_a_torchscript_model_is_loaded(tmp_path: Path):
    torch.jit.script(torch.nn.Linear(2, 1)).save(str(tmp_path / "model.pt"))
    model = default_hooks.model_fn(str(tmp_path))
    assert default_hooks.predict_fn(torch.ones(1, 2), model).shape == (1, 1)
    (tmp_path / "model.pt").unlink()
    torch.save({"weight": torch.ones(1)}, tmp_path / "model.pth")  # a state dict: only the script knows the network
    with pytest.raises(ValueError, match="define model_fn"):
        default_hooks.model_fn(str(tmp_path))


def test_missing_hooks_are_filled_and_the_scripts_own_are_kept(tmp_path: Path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("def predict_fn(data, model):\n    return data * 2\n")
    hooks = handler_service.load_hooks(tmp_path)
    assert hooks.predict_fn(3, None) == 6 and not hooks.batched
    assert hooks.input_fn is default_hooks.input_fn and hooks.output_fn is default_hooks.output_fn


def test_a_batch_body_round_trips_and_a_broken_one_is_refused():
    parts = [(["image/jpeg", ""], b"\xff\xd8abc"), (["", "application/json"], b"")]
    assert wire.unpack(wire.pack(parts)) == parts
    with pytest.raises(ValueError):
        wire.unpack(wire.pack(parts)[:-1])


def test_the_bare_logits_format_is_a_one_row_list(monkeypatch: pytest.MonkeyPatch):
    prediction = {"predictions": [{"label": "a", "index": 0, "probability": 0.9}], "logits": [2.0, -1.0]}
    monkeypatch.setenv(inference.RESPONSE_FORMAT_ENV, "logits")
    assert json.loads(inference.output_fn(prediction, "application/json")) == [[2.0, -1.0]]
    monkeypatch.setenv(inference.RESPONSE_FORMAT_ENV, "nonsense")
    with pytest.raises(ValueError, match="IMGCLF_RESPONSE_FORMAT"):
        inference.output_fn(prediction, None)
