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

from imgclf import accelerator, inference

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
            accelerator.use_worker_gpu(context.system_properties.get("gpu_id"))
            self.hooks = load_hooks(model_dir)
            self.model = self.hooks.model_fn(str(model_dir))
        except Exception as err:  # MMS swallows errors raised here; remember it and answer 500 instead
            log.exception("could not load the model from %s", model_dir)
            self.load_error = f"the model in {model_dir} could not be loaded: {err}"

    def handle(self, data: list[dict] | None, context: Any) -> list[Any] | None:
        if data is None:  # MMS's warm-up call
            return None
        answers: list[Any] = [None] * len(data)
        inputs = {}
        for idx, request in enumerate(data):
            try:
                if self.load_error:
                    raise inference.RequestError(500, self.load_error)
                body = request.get("body") or request.get("data") or b""
                inputs[idx] = self.hooks.input_fn(body, _header(context, idx, "Content-Type"))
            except Exception as err:
                answers[idx] = self._error(context, idx, err)
        # Our hooks classify a list in one forward pass; other hooks get one input at a time, as the toolkit does.
        batched = getattr(self.hooks, "BATCHED_PREDICT", False)
        for group in [list(inputs)] if batched and inputs else [[idx] for idx in inputs]:
            try:
                if batched:
                    results = self.hooks.predict_fn([inputs[idx] for idx in group], self.model)
                else:
                    results = [self.hooks.predict_fn(inputs[group[0]], self.model)]
            except Exception as err:
                for idx in group:
                    answers[idx] = self._error(context, idx, err)
                continue
            for idx, result in zip(group, results, strict=True):
                answers[idx] = self._respond(context, idx, result)
        return answers

    def _respond(self, context: Any, idx: int, result: Any) -> Any:
        accept = _header(context, idx, "Accept")
        try:
            body = self.hooks.output_fn(result, accept)
        except Exception as err:
            return self._error(context, idx, err)
        # The toolkit's convention: output_fn returns the body, or (body, content type).
        body, content_type = body if isinstance(body, tuple) else (body, None)
        if content_type is None:
            content_type = accept if accept and "*" not in accept and "," not in accept else inference.JSON_CONTENT_TYPE
        context.set_response_content_type(idx, content_type)
        return body

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
