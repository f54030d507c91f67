"""The network: a torchvision ResNet with a new head, starting from ImageNet weights found offline."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
import torchvision
from torch import nn

from imgclf.errors import UserError

log = logging.getLogger(__name__)

PRETRAINED_CHANNEL = "pretrained"
WEIGHT_SUFFIXES = (".pth", ".pt")


def cached_weights_path(model_name: str) -> Path:
    """Where torchvision caches this model's ImageNet weights; the image bakes them there."""
    url = torchvision.models.get_model_weights(model_name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def find_pretrained_weights(model_name: str, channels: dict[str, Path], wanted: bool | None) -> Path | None:
    """The state_dict file to start from: the `pretrained` channel first, then the cache. Never downloads.

    `wanted` is the `pretrained` hyperparameter: True requires weights, False ignores them, None uses them if found.
    """
    if wanted is False:
        return None
    channel = channels.get(PRETRAINED_CHANNEL)
    if channel is not None:
        files = [channel] if channel.is_file() else sorted(p for p in channel.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
        if len(files) != 1:
            raise UserError(
                f"the {PRETRAINED_CHANNEL!r} channel ({channel}) must hold exactly one {'/'.join(WEIGHT_SUFFIXES)} "
                f"state_dict file for {model_name}, found {len(files)}"
            )
        return files[0]
    cached = cached_weights_path(model_name)
    if cached.is_file():
        return cached
    if wanted:
        raise UserError(
            f"pretrained=true but no ImageNet weights for {model_name} were provided: give a "
            f"{PRETRAINED_CHANNEL!r} input channel holding a torchvision state_dict file, build the image with "
            f"baked weights (they are looked for at {cached}), or set pretrained=false to train from scratch"
        )
    return None


def build_model(model_name: str, num_classes: int, weights: Path | None, freeze_backbone: bool) -> nn.Module:
    """A ResNet whose final layer is replaced for `num_classes`; with `freeze_backbone` only that layer trains."""
    model = torchvision.models.get_model(model_name, weights=None)
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, KeyError, pickle.UnpicklingError) as err:
            raise UserError(f"cannot load {weights} as {model_name} ImageNet weights: {err}") from err
        log.info("starting from pretrained weights %s", weights)
    else:
        log.info("training %s from randomly initialised weights", model_name)
    if freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
