"""The multi-model-server handler: runs the model's hooks and answers every request with JSON.

MMS loads this module and instantiates its one class. The hooks come from the model's own
`code/inference.py` (so an artifact serves with the code it was trained with), else from `imgclf.inference`.
Errors are answered per request with their HTTP status and a JSON body, never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from imgclf import inference

log = logging.getLogger(__name__)

ARTIFACT_MODULE = "model_inference"


def load_hooks(model_dir: Path) -> ModuleType:
    """Import the artifact's `code/inference.py` if it has one, else the built-in hooks."""
    code = model_dir / "code" / "inference.py"
    if not code.is_file():
        return inference
    spec = importlib.util.spec_from_file_location(ARTIFACT_MODULE, code)
    module = importlib.util.module_from_spec(spec)
    sys.modules[ARTIFACT_MODULE] = module  # dataclasses and pickling look classes up there
    spec.loader.exec_module(module)
    return module


def _header(context: Any, idx: int, name: str) -> str | None:
    headers = {key.lower(): value for key, value in context.get_all_request_header(idx).items()}
    value = headers.get(name.lower())
    return value.decode() if isinstance(value, bytes | bytearray) else value


class ImageClassifierService:
    """Decode each request alone, classify the decodable ones in one forward pass, answer each alone."""

    def __init__(self) -> None:
        self.hooks: ModuleType | None = None
        self.model: Any = None
        self.load_error: str | None = None

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        try:
            self.hooks = load_hooks(model_dir)
            self.model = self.hooks.model_fn(str(model_dir))
        except Exception as err:  # MMS swallows errors raised here; remember it and answer 500 instead
            log.exception("could not load the model from %s", model_dir)
            self.load_error = f"the model in {model_dir} could not be loaded: {err}"

    def handle(self, data: list[dict] | None, context: Any) -> list[str] | None:
        if data is None:  # MMS's warm-up call
            return None
        answers: list[str | None] = [None] * len(data)
        images, positions = [], []
        for idx, request in enumerate(data):
            try:
                if self.load_error:
                    raise inference.RequestError(500, self.load_error)
                body = request.get("body") or request.get("data") or b""
                images.append(self.hooks.input_fn(body, _header(context, idx, "Content-Type")))
                positions.append(idx)
            except Exception as err:
                answers[idx] = self._error(context, idx, err)
        if images:
            try:
                results = self.hooks.predict_fn(images, self.model)
            except Exception as err:
                for idx in positions:
                    answers[idx] = self._error(context, idx, err)
            else:
                for idx, result in zip(positions, results, strict=True):
                    try:
                        answers[idx] = self.hooks.output_fn([result], _header(context, idx, "Accept"))
                        context.set_response_content_type(idx, inference.JSON_CONTENT_TYPE)
                    except Exception as err:
                        answers[idx] = self._error(context, idx, err)
        return answers

    @staticmethod
    def _error(context: Any, idx: int, err: Exception) -> str:
        status = getattr(err, "status", 500)  # the hooks' RequestError (the artifact may carry its own copy)
        if status >= 500:
            log.error("request %d failed", idx, exc_info=err)
        message = str(err) if hasattr(err, "status") else "internal error; see the endpoint's log"
        context.set_response_status(code=status, phrase=_PHRASES.get(status, "Error"), idx=idx)
        context.set_response_content_type(idx, inference.JSON_CONTENT_TYPE)
        return json.dumps({"error": message, "status": status})


_PHRASES = {400: "Bad Request", 406: "Not Acceptable", 415: "Unsupported Media Type", 500: "Internal Server Error"}
