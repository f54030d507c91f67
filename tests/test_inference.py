"""The request hooks: content types, undecodable bodies and Accept headers map to the right HTTP status; torch
threads per model-server worker."""

import io
import os

import pytest
from conftest import draw_shape

from imgclf import inference
from imgclf.inference import RequestError, input_fn, output_fn


def encoded(fmt: str) -> bytearray:
    buffer = io.BytesIO()
    draw_shape("circle").convert("RGBA" if fmt == "PNG" else "RGB").save(buffer, fmt)
    return bytearray(buffer.getvalue())


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("JPEG", "application/x-image"), ("PNG", "Image/PNG; q=1")],
)
def test_images_decode_to_rgb(fmt, content_type):
    assert input_fn(encoded(fmt), content_type).mode == "RGB"


@pytest.mark.parametrize("content_type", ["text/csv", "application/json", None, ""])
def test_unsupported_content_type_is_415(content_type):
    with pytest.raises(RequestError) as raised:
        input_fn(encoded("JPEG"), content_type)
    assert raised.value.status == 415 and "image/jpeg" in str(raised.value)


@pytest.mark.parametrize("body", [b"", b"not an image", bytes(encoded("JPEG"))[:40]])
def test_undecodable_body_is_400(body):
    with pytest.raises(RequestError) as raised:
        input_fn(bytearray(body), "image/jpeg")
    assert raised.value.status == 400


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "text/html, application/json;q=0.9"])
def test_json_answers_any_accept_that_allows_json(accept):
    assert output_fn({"logits": [1.0]}, accept) == '{"logits": [1.0]}'


def test_other_accept_is_406():
    with pytest.raises(RequestError) as raised:
        output_fn({"logits": [1.0]}, "text/csv")
    assert raised.value.status == 406


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, os.cpu_count()),  # one worker (no GPU here): every core
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": str(os.cpu_count())}, 1),  # one worker per core: one thread each
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "IMGCLF_THREADS_PER_WORKER": "3"}, 3),
    ],
)
def test_torch_threads_share_the_cores_among_workers(monkeypatch: pytest.MonkeyPatch, environ: dict, expected: int):
    for name in ("SAGEMAKER_MODEL_SERVER_WORKERS", "IMGCLF_THREADS_PER_WORKER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert inference.threads_per_worker() == expected


def _network_with_trained_batch_norms():
    import torch
    import torchvision

    network = torchvision.models.resnet18(num_classes=5).eval()
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # random init has mean 0, var 1: folding would be trivial
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
    return network


def test_serving_folds_batch_norms_and_keeps_the_outputs():
    import copy

    import torch

    network = _network_with_trained_batch_norms()
    served = inference.optimize_for_inference(copy.deepcopy(network))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in served.parameters() if p.dim() == 4)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = network(images), served(images.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_a_network_fx_cannot_trace_is_served_unfused(caplog: pytest.LogCaptureFixture):
    import torch

    class Branchy(torch.nn.Module):  # control flow on a tensor's value: symbolic tracing fails
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x)) if x.sum() > 0 else self.conv(x)

    served = inference.optimize_for_inference(Branchy())
    assert isinstance(served.norm, torch.nn.BatchNorm2d)
    assert "unfused" in caplog.text
    assert served(torch.ones(1, 3, 8, 8)).shape == (1, 4, 6, 6)
