"""The multi-model-server handler: runs the model's hooks and answers every request with JSON.

MMS loads this module and instantiates its one class. The hooks come from the model's own
`code/inference.py` (so an artifact serves with the code it was trained with), else from `imgclf.inference`;
a hook the script leaves out is filled as AWS's PyTorch containers fill it (`default_hooks`). Errors are
answered per request with their HTTP status and a JSON body, never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from http import HTTPStatus
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from sagemaker_inference.content_types import UTF8_TYPES

from imgclf import accelerator, inference
from imgclf.serving import default_hooks, wire

log = logging.getLogger(__name__)

ARTIFACT_MODULE = "model_inference"
Request = tuple[bytes, str | None, str | None]  # body, content type, accept
Answer = tuple[int, str, bytes]  # status, content type, body


def load_hooks(model_dir: Path) -> SimpleNamespace:
    """The artifact's `code/inference.py` if it has one, else the built-in hooks; missing hooks get defaults."""
    code = model_dir / "code" / "inference.py"
    module: ModuleType = inference
    if code.is_file():
        spec = importlib.util.spec_from_file_location(ARTIFACT_MODULE, code)
        module = importlib.util.module_from_spec(spec)
        sys.modules[ARTIFACT_MODULE] = module  # dataclasses and pickling look classes up there
        spec.loader.exec_module(module)
    hooks = {name: getattr(module, name, default) for name, default in default_hooks.HOOKS.items()}
    missing = [name for name in default_hooks.HOOKS if not hasattr(module, name)]
    if missing:
        log.info("%s defines no %s: using the defaults of AWS's PyTorch containers", code, ", ".join(missing))
    return SimpleNamespace(**hooks, batched=getattr(module, "BATCHED_PREDICT", False))


def as_text_if_text(body: bytes, content_type: str | None) -> bytes | str:
    """JSON and CSV bodies reach `input_fn` as text, as the inference toolkit hands them; others, and bodies
    that are not UTF-8 whatever they claim, as bytes (the hook then says what is wrong)."""
    if (content_type or "").split(";")[0].strip().lower() not in UTF8_TYPES:
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return body


def status_of(err: Exception) -> int | None:
    """The HTTP status an error carries: our hooks' `status`, the inference toolkit's `status_code`."""
    status = getattr(err, "status", None) or getattr(err, "status_code", None)
    return status if isinstance(status, int) and 400 <= status < 600 else None


def _header(context: Any, idx: int, name: str) -> str | None:
    headers = {key.lower(): value for key, value in context.get_all_request_header(idx).items()}
    value = headers.get(name.lower())
    return value.decode() if isinstance(value, bytes | bytearray) else value


class ImageClassifierService:
    """Answers MMS's requests: a batch from the front (one message), or plain requests sent to MMS directly."""

    def __init__(self) -> None:
        self.hooks: SimpleNamespace | None = None
        self.model: Any = None
        self.load_error: str | None = None

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        try:
            accelerator.use_worker_gpu(context.system_properties.get("gpu_id"))
            self.hooks = load_hooks(model_dir)
            self.model = self.hooks.model_fn(str(model_dir))
        except Exception as err:  # MMS swallows errors raised here: remember it, answer 500; `serve` then exits
            log.exception("could not load the model from %s", model_dir)
            self.load_error = f"the model in {model_dir} could not be loaded: {type(err).__name__}: {err}"

    def handle(self, data: list[dict] | None, context: Any) -> list[Any] | None:
        if data is None:  # MMS's warm-up call
            return None
        bodies = [request.get("body") or request.get("data") or b"" for request in data]
        if len(data) == 1 and (_header(context, 0, "Content-Type") or "").startswith(wire.CONTENT_TYPE):
            return [self._handle_batch(bodies[0], context)]
        requests = [(body, _header(context, idx, "Content-Type"), _header(context, idx, "Accept"))
                    for idx, body in enumerate(bodies)]  # fmt: skip
        answers = self.answer(requests)
        for idx, (status, content_type, _) in enumerate(answers):
            if status != 200:
                context.set_response_status(code=status, phrase=phrase(status), idx=idx)
            context.set_response_content_type(idx, content_type)
        return [body for _, _, body in answers]

    def _handle_batch(self, body: bytes, context: Any) -> bytes:
        """The front's batch (see `wire`): its requests in, their answers out, in one message each way."""
        try:
            requests = [(part, content_type, accept) for (content_type, accept), part in wire.unpack(body)]
        except ValueError as err:
            answers = [self._error(inference.RequestError(400, f"a malformed batch body: {err}"))]
            context.set_response_status(code=400, phrase=phrase(400), idx=0)
            return answers[0][2]
        context.set_response_content_type(0, wire.CONTENT_TYPE)
        return wire.pack([([status, content_type], answer) for status, content_type, answer in self.answer(requests)])

    def answer(self, requests: list[Request]) -> list[Answer]:
        """Decode each request alone, predict the decodable ones (in one call where the hooks take a list),
        encode each answer alone: `(status, content type, body)` per request, errors included."""
        answers: list[Answer | None] = [None] * len(requests)
        inputs = {}
        for idx, (body, content_type, _) in enumerate(requests):
            try:
                if self.load_error:
                    raise inference.RequestError(500, self.load_error)
                inputs[idx] = self.hooks.input_fn(as_text_if_text(body, content_type), content_type)
            except Exception as err:
                answers[idx] = self._error(err)
        # Our hooks classify a list in one forward pass; other hooks get one input at a time, as the toolkit does.
        batched = self.hooks.batched if self.hooks else False
        for group in [list(inputs)] if batched and inputs else [[idx] for idx in inputs]:
            try:
                if batched:
                    results = self.hooks.predict_fn([inputs[idx] for idx in group], self.model)
                else:
                    results = [self.hooks.predict_fn(inputs[group[0]], self.model)]
            except Exception as err:
                for idx in group:
                    answers[idx] = self._error(err)
                continue
            for idx, result in zip(group, results, strict=True):
                answers[idx] = self._respond(result, requests[idx][2])
        return answers

    def _respond(self, result: Any, accept: str | None) -> Answer:
        try:
            body = self.hooks.output_fn(result, accept)
        except Exception as err:
            return self._error(err)
        # The toolkit's convention: output_fn returns the body, or (body, content type).
        body, content_type = body if isinstance(body, tuple) else (body, None)
        if content_type is None:
            content_type = accept if accept and "*" not in accept and "," not in accept else inference.JSON_CONTENT_TYPE
        return 200, content_type, body.encode() if isinstance(body, str) else bytes(body)

    @staticmethod
    def _error(err: Exception) -> Answer:
        status = status_of(err) or 500  # the hooks' RequestError (the artifact may carry its own copy)
        if status >= 500:
            log.error("a request failed", exc_info=err)
        message = (getattr(err, "message", None) or str(err)) if status_of(err) else "internal error; see the log"
        return status, inference.JSON_CONTENT_TYPE, json.dumps({"error": message, "status": status}).encode()


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
