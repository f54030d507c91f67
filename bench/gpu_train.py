"""Training images/s of ResNet-50 on a GPU: our training loop against a bare loop on the same GPU, on synthetic
batches (the model's ceiling) and on JPEGs (the input pipeline included), our diagnostics on and off, with the
GPU utilisation our profiler measured; our train loader with `decode_device` gpu (files read by the workers,
decoded with `torchvision.io.decode_jpeg(device=...)`, cropped and flipped on the device) against its CPU path;
and serving: the model's own inference hooks (`model_fn`, `input_fn`, `predict_fn`, `output_fn`) in this process
at batch 1, 8 and 32. Both training loops use the same precision and memory
format (`--precision`, `--channels-last`; auto: bf16 or fp16 and channels-last on a GPU). Prints images/s and
the ratios. Needs torch, torchvision, Pillow and psutil (nvidia-ml-py for GPU utilisation); not smdebug, the
SageMaker toolkits, multi-model-server or Java, so it runs from source:

    PYTHONPATH=container_src python3 bench/gpu_train.py          # on a GPU machine (make bench-gpu)
    .venv/bin/python bench/gpu_train.py --device cpu --model resnet18 --steps 2 --images 32 --image-size 64
"""

from __future__ import annotations

import argparse
import logging
import os
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

from imgclf import artifacts, data, inference
from imgclf.checkpoint import TrainingState
from imgclf.diagnostics.evidence import JobSettings
from imgclf.diagnostics.monitor import SystemMonitor
from imgclf.diagnostics.watch import Diagnostics
from imgclf.precision import StepPrecision
from imgclf.train import make_optimizer, make_scheduler, train_one_epoch
from imgclf_contract.hyperparameters import Hyperparameters


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


def compare(label: str, runs: dict[str, Callable[[], int]], rounds: int, device: torch.device,
            monitor_dir: Path) -> dict[str, float]:  # fmt: skip
    """Run each of `runs` `rounds` times, interleaved; print the median images/s and each run's ratio to the
    first, with the mean GPU utilisation our system monitor measured meanwhile."""
    for run in runs.values():
        run()  # warm-up: cuDNN autotuning, allocator, loader workers
    rates: dict[str, list[float]] = {name: [] for name in runs}
    monitor = SystemMonitor(monitor_dir / f"{label}.jsonl", interval=0.5).start()
    try:
        for _ in range(rounds):
            for name, run in runs.items():
                rates[name].append(timed(run, device))
    finally:
        monitor.stop()
    gpu = [value for sample in monitor.samples for value in sample.gpu]
    utilisation = f"{statistics.mean(gpu):.0f} %" if gpu else "not measured (no NVML)"
    medians = {name: statistics.median(values) for name, values in rates.items()}
    first = next(iter(medians.values()))
    figures = ", ".join(f"{name} {rate:.1f} img/s ({rate / first:.3f})" for name, rate in medians.items())
    print(f"{label}: {figures}; GPU utilisation during the runs {utilisation}", flush=True)
    return medians


def serve_hooks(model_name: str, image_size: int, device: torch.device, folder: Path, batches: tuple[int, ...],
                seconds: float) -> None:  # fmt: skip
    """The served hooks in this process, as a model-server worker runs them: images/s per batch size."""
    model_dir = folder / "model"
    network = torchvision.models.get_model(model_name, num_classes=2)
    artifacts.save_model(model_dir, network, {"architecture": model_name, "classes": ["class0", "class1"],
                                              "preprocessing": data.eval_preprocessing(image_size)})  # fmt: skip
    if device.type == "cuda":
        torch.cuda.set_device(device)  # what the handler service does with the worker's gpu_id
    model = inference.model_fn(str(model_dir))
    jpegs = [path.read_bytes() for path in sorted((folder / "jpegs").rglob("*.jpg"))]
    for batch in batches:
        requests = [jpegs[i % len(jpegs)] for i in range(batch)]

        def answer(requests: list[bytes] = requests) -> int:
            images = [inference.input_fn(body, "image/jpeg") for body in requests]
            for prediction in inference.predict_fn(images, model):
                inference.output_fn(prediction, "application/json")
            return len(requests)

        answer()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            done += answer()
        elapsed = time.perf_counter() - start
        print(f"serving hooks, batch {batch}: {done / elapsed:.1f} img/s, {elapsed / (done / batch) * 1000:.1f} ms "
              f"a batch (decode, preprocess, forward, JSON)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40, help="training steps per measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=4096, help="JPEGs written for the JPEG comparisons")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16), help="loader workers")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--serve-batches", default="1,8,32", help="batch sizes for the serving hooks")
    parser.add_argument("--serve-seconds", type=float, default=10.0, help="per batch size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    channels_last = None if args.channels_last == "auto" else args.channels_last == "true"
    precision = StepPrecision.choose(args.precision, channels_last, device)
    hps = Hyperparameters.from_mapping({"batch_size": args.batch_size, "num_workers": args.workers})
    print(f"{args.model} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {precision.describe()}, batch {args.batch_size}, {args.image_size} px, "
          f"{args.steps} steps x {args.rounds} rounds, loader workers {hps.num_workers}", flush=True)  # fmt: skip

    def fresh_model() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = precision.prepare(torchvision.models.get_model(args.model, num_classes=2).to(device))
        return model, make_optimizer(hps, model)

    model, optimizer = fresh_model()
    scheduler = make_scheduler(hps, optimizer, 10**6)
    criterion = nn.CrossEntropyLoss()

    def ours_on(batches: Iterable, diagnostics: Diagnostics | None = None) -> Callable[[], int]:
        trained, loss, step = (
            (watched, watched_loss, watched_optimizer) if diagnostics else (model, criterion, optimizer)
        )
        return lambda: train_one_epoch(trained, loss, step, scheduler, batches, precision, TrainingState(), args.steps,
                                       diagnostics).images  # fmt: skip

    bare_model, _ = fresh_model()
    # the smdebug hook stays registered on the model and loss it watches
    (watched, watched_optimizer), watched_loss = fresh_model(), nn.CrossEntropyLoss()
    # ours takes uint8 batches, as its loaders give them, and normalises them on the GPU; the bare loop floats
    pixels = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8)
    labels = torch.randint(0, 2, (args.batch_size,))
    synthetic = [(pixels, labels, 0)] * args.steps
    normalised = [(data.normalize(pixels), labels, 0)] * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        compare("synthetic", {"bare": lambda: bare_loop(bare_model, normalised, precision, args.steps),
                              "ours": ours_on(synthetic)}, args.rounds, device, folder)  # fmt: skip
        write_jpegs(folder / "jpegs", args.images)
        images = data.load_image_folders({"train": folder / "jpegs", "valid": folder / "jpegs",
                                          "test": folder / "jpegs"})  # fmt: skip
        pin_memory = device.type == "cuda"
        loader = data.make_loaders(images, crop_size=args.image_size, batch_size=args.batch_size,
                                   num_workers=hps.num_workers, seed=0, pin_memory=pin_memory)["train"]  # fmt: skip
        bare_loader = torch.utils.data.DataLoader(
            torchvision.datasets.ImageFolder(folder / "jpegs", standard_train_transform(args.image_size)),
            batch_size=args.batch_size, shuffle=True, num_workers=hps.num_workers,
            pin_memory=pin_memory, persistent_workers=hps.num_workers > 0,
        )  # fmt: skip
        diagnostics = Diagnostics(
            base_dir=folder / "job", output_dir=folder / "job/output/data", loss=watched_loss,
            device=device, model=watched,
            settings=JobSettings(os.cpu_count() or 1, torch.cuda.device_count(), 1, hps.num_workers, args.batch_size,
                                 pin_memory),
            rule_config={}, train_interval=100, eval_interval=10, hook_enabled=True, profiler_interval=0.5,
        )  # fmt: skip
        print(f"diagnostics: {diagnostics.hook.note}", flush=True)
        try:
            compare("JPEG", {"bare": lambda: bare_loop(bare_model, bare_loader, precision, args.steps),
                             "ours": ours_on(loader), "ours with diagnostics": ours_on(loader, diagnostics)},
                    args.rounds, device, folder)  # fmt: skip
        finally:
            diagnostics.finish()
        device_decoded = data.make_loaders(images, crop_size=args.image_size, batch_size=args.batch_size,
                                           num_workers=hps.num_workers, seed=0, pin_memory=pin_memory,
                                           decode="gpu")["train"]  # fmt: skip
        compare(f"JPEG decoded on {device.type}", {"ours, decode_device cpu": ours_on(loader),
                                                   "ours, decode_device gpu": ours_on(device_decoded)},
                args.rounds, device, folder)  # fmt: skip
        serve_hooks(args.model, args.image_size, device, folder,
                    tuple(int(b) for b in args.serve_batches.split(",")), args.serve_seconds)  # fmt: skip


if __name__ == "__main__":
    main()
