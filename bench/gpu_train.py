"""Training images/s of ResNet-50 on a GPU: our training loop against a bare loop on the same GPU, on synthetic
batches (the model's ceiling) and on JPEGs (the input pipeline included), with the GPU utilisation our
profiler measured during our runs. Both loops use the same precision and memory format (`--precision`,
`--channels-last`; auto: bf16 or fp16 and channels-last on a GPU). Prints images/s and the ratios.

    .venv/bin/python bench/gpu_train.py                      # on a GPU machine
    .venv/bin/python bench/gpu_train.py --device cpu --model resnet18 --steps 2 --images 32 --image-size 64
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torchvision
from bare import standard_train_transform
from input_pipeline import write_jpegs
from torch import nn

from imgclf import data
from imgclf.checkpoint import TrainingState
from imgclf.diagnostics.monitor import SystemMonitor
from imgclf.hyperparameters import Hyperparameters
from imgclf.precision import StepPrecision
from imgclf.train import make_optimizer, make_scheduler, train_one_epoch


def bare_loop(model: nn.Module, batches: Iterable, precision: StepPrecision, steps: int) -> int:
    """The textbook loop with the same autocast and memory format: forward, loss, backward, step."""
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.dtype == torch.float16)
    model.train()
    seen = 0
    for step, (images, labels, *_) in enumerate(batches, start=1):
        images = images.to(precision.device, non_blocking=True)
        if precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(precision.device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
            loss = criterion(model(images), labels.to(precision.device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += len(labels)
        if step == steps:
            break
    return seen


def timed(run: Callable[[], int], device: torch.device) -> float:
    """Images/s of one run, synchronised with the GPU at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    seen = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def compare(label: str, ours: Callable[[], int], bare: Callable[[], int], rounds: int, device: torch.device,
            monitor_dir: Path) -> None:  # fmt: skip
    ours(), bare()  # warm-up: cuDNN autotuning, allocator, loader workers
    rates: dict[str, list[float]] = {"ours": [], "bare": []}
    monitor = SystemMonitor(monitor_dir / f"{label}.jsonl", interval=0.5).start()
    for _ in range(rounds):
        rates["ours"].append(timed(ours, device))
        rates["bare"].append(timed(bare, device))
    monitor.stop()
    gpu = [value for sample in monitor.samples for value in sample.gpu]
    utilisation = f"{statistics.mean(gpu):.0f} %" if gpu else "not measured (no NVML)"
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{label}: ours {medians['ours']:.1f} img/s, bare {medians['bare']:.1f} img/s, "
          f"ratio {medians['ours'] / medians['bare']:.3f}; GPU utilisation during the runs {utilisation}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40, help="training steps per measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1024, help="JPEGs written for the JPEG comparison")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "true", "false"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    channels_last = None if args.channels_last == "auto" else args.channels_last == "true"
    precision = StepPrecision.choose(args.precision, channels_last, device)
    hps = Hyperparameters.from_mapping({"batch_size": args.batch_size})
    print(f"{args.model} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"{precision.describe()}, batch {args.batch_size}, {args.image_size} px, {args.steps} steps x "
          f"{args.rounds} rounds, loader workers {hps.num_workers}")  # fmt: skip

    def fresh_model() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = precision.prepare(torchvision.models.get_model(args.model, num_classes=2).to(device))
        return model, make_optimizer(hps, model)

    model, optimizer = fresh_model()
    scheduler = make_scheduler(hps, optimizer, 10**6)
    criterion = nn.CrossEntropyLoss()

    def ours_on(batches: Iterable) -> Callable[[], int]:
        return lambda: train_one_epoch(model, criterion, optimizer, scheduler, batches, precision, TrainingState(),
                                       args.steps).images  # fmt: skip

    bare_model, _ = fresh_model()
    # ours takes uint8 batches, as its loaders give them, and normalises them on the GPU; the bare loop floats
    pixels = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8)
    labels = torch.randint(0, 2, (args.batch_size,))
    synthetic = [(pixels, labels, 0)] * args.steps
    normalised = [(data.normalize(pixels), labels, 0)] * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        compare("synthetic", ours_on(synthetic), lambda: bare_loop(bare_model, normalised, precision, args.steps),
                args.rounds, device, folder)  # fmt: skip
        write_jpegs(folder / "jpegs", args.images)
        images = data.load_image_folders({"train": folder / "jpegs", "valid": folder / "jpegs",
                                          "test": folder / "jpegs"})  # fmt: skip
        loader = data.make_loaders(
            images,
            crop_size=args.image_size,
            batch_size=args.batch_size,
            num_workers=hps.num_workers,
            seed=0,
            pin_memory=device.type == "cuda",
        )["train"]
        bare_loader = torch.utils.data.DataLoader(
            torchvision.datasets.ImageFolder(folder / "jpegs", standard_train_transform(args.image_size)),
            batch_size=args.batch_size, shuffle=True, num_workers=hps.num_workers,
            pin_memory=device.type == "cuda", persistent_workers=hps.num_workers > 0,
        )  # fmt: skip
        compare("JPEG", ours_on(loader), lambda: bare_loop(bare_model, bare_loader, precision, args.steps),
                args.rounds, device, folder)  # fmt: skip


if __name__ == "__main__":
    main()
