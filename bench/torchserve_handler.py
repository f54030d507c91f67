"""The TorchServe handler `bench/serve.py` gives TorchServe: the same hooks as our endpoint (decode, preprocess,
one forward pass per batch), so the two servers differ only in what carries the requests."""

from __future__ import annotations

import json

from imgclf import inference


class ImageClassifier:
    def initialize(self, context) -> None:
        self.model = inference.model_fn(context.system_properties["model_dir"])

    def handle(self, data: list[dict], context) -> list[str]:
        images = [inference.decode_image(request.get("body") or request.get("data")) for request in data]
        return [json.dumps(result) for result in inference.predict_fn(images, self.model)]
