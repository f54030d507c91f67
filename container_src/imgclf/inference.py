"""Inference hooks for a trained model: `model_fn`, `input_fn`, `predict_fn`, `output_fn`.

This file is copied into every model artifact as `code/inference.py`, so it imports nothing from `imgclf`:
the artifact can be served by this project's image or by any container that follows the SageMaker
inference toolkit's hook contract. It also holds the evaluation transform and the normalisation, which
training reuses.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.fx.experimental import optimization as fx_optimization
from torchvision.transforms import v2

WEIGHTS_FILE = "model.pth"
CONFIG_FILE = "model_config.json"
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_CONTENT_TYPE = "application/json"
TOP_K_ENV = "IMGCLF_TOP_K"
MAX_PIXELS_ENV = "IMGCLF_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000  # a 50-megapixel photo; a bigger image is refused before it is decoded
THREADS_ENV = "IMGCLF_THREADS_PER_WORKER"
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
# "logits" answers the bare logits list, [[...]], as the original project's endpoint did; default "predictions".
RESPONSE_FORMAT_ENV = "IMGCLF_RESPONSE_FORMAT"
RESPONSE_FORMATS = ("predictions", "logits")
MAX_ASPECT_RATIO = 20  # longer side over shorter side; beyond it, resizing the short side explodes the long one
# The model server may hand predict_fn a list of decoded images and classify them in one forward pass.
BATCHED_PREDICT = True


class RequestError(Exception):
    """A request the model cannot answer; `status` is the HTTP status to send back."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def eval_transform(crop_size: int, resize_size: int) -> v2.Compose:
    """Deterministic preprocessing of a picture (or a uint8 image tensor): resize the short side, centre-crop.
    The result stays uint8; `normalize` turns a batch of them into the network's input."""
    return v2.Compose([v2.PILToTensor(), v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size)])


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 images (..., 3, H, W) to the network's input on their own device: x / 255, minus the mean, over the
    standard deviation, per channel, as one multiply and one add in place on the float copy (on a CPU, an eighth
    of the time of `torch.addcmul` with broadcast operands, which takes a slow path)."""
    std_t = torch.tensor(std, device=images.device).view(-1, 1, 1)
    scale = 1 / (255 * std_t)
    shift = -torch.tensor(mean, device=images.device).view(-1, 1, 1) / std_t
    return images.to(torch.float32).mul_(scale).add_(shift)


@dataclass
class Classifier:
    """What `model_fn` returns: the network, its class names and its preprocessing."""

    network: torch.nn.Module
    classes: list[str]
    transform: v2.Compose
    mean: list[float]
    std: list[float]
    device: torch.device
    top_k: int


def threads_per_worker() -> int:
    """Torch threads for one model-server worker: the cores shared among the workers (the server starts one
    worker per GPU, else one, unless SAGEMAKER_MODEL_SERVER_WORKERS says otherwise), so that workers do not
    fight over cores; IMGCLF_THREADS_PER_WORKER overrides it."""
    if THREADS_ENV in os.environ:
        return max(1, int(os.environ[THREADS_ENV]))
    cores = os.cpu_count() or 1
    workers = int(os.environ.get(WORKERS_ENV) or torch.cuda.device_count() or 1)
    return max(1, cores // max(workers, 1))


def optimize_for_inference(network: torch.nn.Module) -> torch.nn.Module:
    """Fold each batch norm into the convolution before it and keep activations channels-last: the same outputs
    (to float rounding), fewer passes over memory. A network torch.fx cannot trace is served unfused."""
    network.eval()
    try:
        network = fx_optimization.fuse(network)
    except Exception as err:  # e.g. data-dependent control flow in a custom architecture
        logging.getLogger(__name__).warning("serving the network unfused: torch.fx could not trace it (%s)", err)
    return network.to(memory_format=torch.channels_last)


def model_fn(model_dir: str) -> Classifier:
    """Load the weights with `weights_only=True`: nothing in the artifact is unpickled as code."""
    torch.set_num_threads(threads_per_worker())
    model_dir = Path(model_dir)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    classes = config["classes"]
    network = torchvision.models.get_model(config["architecture"], weights=None, num_classes=len(classes))
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    # The worker's own GPU: our handler service makes MMS's gpu_id the current device before calling this.
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    network = optimize_for_inference(network).to(device)
    pre = config["preprocessing"]
    transform = eval_transform(pre["crop_size"], pre["resize_size"])
    top_k = min(int(os.environ.get(TOP_K_ENV, 5)), len(classes))
    return Classifier(network, classes, transform, pre["mean"], pre["std"], device, top_k)


def check_dimensions(width: int, height: int) -> None:
    """Refuse, from the image header alone, what would take too much memory or time to decode and resize."""
    if width < 1 or height < 1:
        raise RequestError(400, f"the image is {width}x{height} pixels: it has no pixels")
    max_pixels = int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS))
    if width * height > max_pixels:
        raise RequestError(
            413, f"the image is {width}x{height} pixels, over the limit of {max_pixels:,}; send a smaller image"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise RequestError(
            400, f"the image is {width}x{height} pixels, longer than {MAX_ASPECT_RATIO}:1; crop it closer to a square"
        )


def decode_image(data: bytes | bytearray) -> Image.Image:
    """Decode image bytes into an RGB picture, or raise `RequestError` (400, 413) saying why not."""
    if not data:
        raise RequestError(400, "the request body is empty; send the image file's bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_dimensions(*image.size)
            image.load()
            return image.convert("RGB")
    except RequestError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own limit, twice Image.MAX_IMAGE_PIXELS
        raise RequestError(413, f"the image is too large to decode ({err})") from err
    except Exception as err:  # Pillow's decoders raise many kinds (OSError, SyntaxError, EOFError, struct.error...)
        raise RequestError(400, f"the body is not a decodable image ({type(err).__name__}: {err})") from err


def input_fn(request_body: bytes | bytearray, content_type: str | None) -> Image.Image:
    """Decode one image request; the model's own preprocessing runs in `predict_fn`."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in IMAGE_CONTENT_TYPES:
        raise RequestError(
            415, f"unsupported content type {content_type!r}; send one of {', '.join(IMAGE_CONTENT_TYPES)}"
        )
    return decode_image(request_body)


def predict_fn(images: Image.Image | list[Image.Image], model: Classifier) -> dict | list[dict]:
    """Classify one image (one result) or a list (a list of results): the top-k classes and all the logits."""
    if not isinstance(images, list):
        return predict_fn([images], model)[0]
    batch = torch.stack([model.transform(image) for image in images]).to(model.device)
    batch = normalize(batch, model.mean, model.std).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = model.network(batch).float().cpu()
    probabilities = logits.softmax(dim=1)
    top_p, top_i = probabilities.topk(model.top_k, dim=1)
    return [
        {
            "predictions": [
                {"label": model.classes[i], "index": i, "probability": p}
                for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)
            ],
            "logits": row_logits.tolist(),
        }
        for row_p, row_i, row_logits in zip(top_p, top_i, logits, strict=True)
    ]


def output_fn(prediction: dict, accept: str | None) -> str:
    """Serialise the result of one request as JSON (the only response type offered): the top classes and the
    logits, or with IMGCLF_RESPONSE_FORMAT=logits the bare logits as a one-row list."""
    media_types = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    if not any(m in ("", "*/*", "application/*", JSON_CONTENT_TYPE) for m in media_types):
        raise RequestError(406, f"cannot answer with {accept!r}; this model answers {JSON_CONTENT_TYPE}")
    response_format = os.environ.get(RESPONSE_FORMAT_ENV) or RESPONSE_FORMATS[0]
    if response_format not in RESPONSE_FORMATS:
        raise ValueError(f"{RESPONSE_FORMAT_ENV}={response_format!r}: use one of {', '.join(RESPONSE_FORMATS)}")
    return json.dumps([prediction["logits"]] if response_format == "logits" else prediction)
