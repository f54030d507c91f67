"""Mixed precision and memory format for a training step: autocast (bf16 or fp16) with a gradient scaler for
fp16, and channels-last tensors. `auto` turns both on for a CUDA device and off on a CPU, where they do not pay."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass
class StepPrecision:
    device: torch.device
    dtype: torch.dtype | None  # autocast's; None: full precision
    channels_last: bool
    scaler: torch.amp.GradScaler

    @classmethod
    def choose(cls, mixed_precision: str, channels_last: bool | None, device: torch.device) -> StepPrecision:
        """Resolve `auto`: bf16 on a GPU that has it, else fp16 on a GPU; fp32 on a CPU. Channels-last: on GPU."""
        name = mixed_precision
        if name == "auto":
            name = "fp32" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        dtype = DTYPES[name]
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        return cls(device, dtype, device.type == "cuda" if channels_last is None else channels_last, scaler)

    def describe(self) -> str:
        return f"{'fp32' if self.dtype is None else str(self.dtype).removeprefix('torch.')}, " + (
            "channels-last" if self.channels_last else "contiguous"
        )

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)
        self.scaler.update()
