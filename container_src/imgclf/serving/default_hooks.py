"""The hooks an artifact's `code/inference.py` may leave out, filled the way AWS's PyTorch containers fill them.

Scripts written for those containers often define `model_fn` and `input_fn` and rely on the container for the
rest: predict = call the model, and output = the prediction encoded by the SageMaker inference toolkit
(a tensor or array as a JSON list). Without `input_fn`, the toolkit's decoders read JSON, CSV and NPY into a
tensor; without `model_fn`, a TorchScript `model.pt` (or `model.pth`) is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sagemaker_inference import content_types, decoder, encoder, errors

MODEL_FILES = ("model.pt", "model.pth")


class UnsupportedMediaType(Exception):
    """A content type or accept header the toolkit's decoders and encoders do not know."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _device() -> torch.device:
    # The worker's own GPU: the handler service makes MMS's gpu_id the current device before loading.
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def model_fn(model_dir: str) -> torch.nn.Module:
    """A TorchScript model, on the worker's device, in eval mode."""
    path = next((Path(model_dir) / name for name in MODEL_FILES if (Path(model_dir) / name).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"code/inference.py defines no model_fn and {model_dir} has no "
                                f"{' or '.join(MODEL_FILES)} to load as TorchScript; define model_fn")  # fmt: skip
    try:
        model = torch.jit.load(path, map_location=_device())
    except RuntimeError as err:
        raise ValueError(f"code/inference.py defines no model_fn and {path} is not a TorchScript model; define "
                         f"model_fn to load it ({err})") from err  # fmt: skip
    return model.eval()


def input_fn(body: bytes | bytearray, content_type: str | None) -> torch.Tensor:
    """JSON, CSV or NPY to a tensor (float32 from text) on the worker's device."""
    media_type = (content_type or content_types.JSON).split(";")[0].strip().lower()
    try:
        array = decoder.decode(body, media_type)
    except errors.UnsupportedFormatError:
        raise UnsupportedMediaType(415, f"unsupported content type {content_type!r}: the model's code/inference.py "
                                        "defines no input_fn, and the default reads application/json, text/csv "
                                        "and application/x-npy") from None  # fmt: skip
    except ValueError as err:
        raise UnsupportedMediaType(400, f"the body is not valid {media_type} ({err})") from err
    text = media_type in content_types.UTF8_TYPES
    tensor = torch.tensor(array, dtype=torch.float32) if text else torch.from_numpy(array)
    return tensor.to(_device())


def predict_fn(data: Any, model: Any) -> Any:
    """Call the model on the input, without gradients."""
    with torch.no_grad():
        return model(data)


def output_fn(prediction: Any, accept: str | None) -> tuple[bytes | str, str]:
    """Encode the prediction with the toolkit's encoders: JSON (the default), CSV or NPY."""
    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy()
    media_types = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    for media_type in media_types:
        if media_type in ("", content_types.ANY, "application/*"):
            media_type = content_types.JSON
        if media_type in encoder.SUPPORTED_CONTENT_TYPES:
            return encoder.encode(prediction, media_type), media_type
    raise UnsupportedMediaType(406, f"cannot answer with {accept!r}: the model's code/inference.py defines no "
                                    "output_fn, and the default writes application/json, text/csv and "
                                    "application/x-npy")  # fmt: skip


HOOKS = {"model_fn": model_fn, "input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
