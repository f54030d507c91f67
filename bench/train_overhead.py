"""Images/s of imgclf's training loop against a bare PyTorch loop: same model, images, batch size and workers.

Runs both loops alternately in one process (A B A B ...) and prints the median ratio ours/bare; 1.0 means
no overhead. Then the cost of the stop agreement (every process all-reduces a stop flag at each step, so that
all stop after the same step on SIGTERM): two processes train in one gloo group with and without it, alternately,
and the median ratio is printed, with the time of one agreement against a step's. The data is scikit-learn's
digits written as JPEGs (no download).

    .venv/bin/python bench/train_overhead.py [--steps 20] [--rounds 3] [--image-size 64]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from bare import standard_train_transform
from torch import nn

from imgclf import data, distributed
from imgclf.checkpoint import Checkpointer, TrainingState
from imgclf.precision import StepPrecision
from imgclf.train import make_optimizer, make_scheduler, train_one_epoch
from imgclf_contract.hyperparameters import Hyperparameters
from launcher.sample_data import write_digits


def bare_loop(model: nn.Module, loader: torch.utils.data.DataLoader, steps: int) -> int:
    """The textbook loop: torchvision ImageFolder batches, forward, loss, backward, step."""
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    seen = 0
    for step, (images, labels) in enumerate(loader, start=1):
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
        if step == steps:
            break
    return seen


def stop_agreement(rank: int, args: argparse.Namespace, root: Path, store: str) -> None:
    """One of two processes: our loop with and without the stop agreement, alternately, on this rank's shard."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(max(1, torch.get_num_threads() // 2))
    cluster = distributed.Cluster(rank=rank, world_size=2)
    images = data.load_image_folders({"training": root})
    loader = data.make_loaders(images, crop_size=args.image_size, batch_size=args.batch_size, num_workers=1,
                               seed=0, pin_memory=False, rank=rank, world_size=2)["train"]  # fmt: skip
    hps = Hyperparameters.from_mapping({"batch_size": args.batch_size})
    model = torchvision.models.resnet18(num_classes=len(images.classes))
    optimizer = make_optimizer(hps, model)
    scheduler = make_scheduler(hps, optimizer, 10**6)
    trained = distributed.wrap(model, cluster, torch.device("cpu"))
    criterion, precision = nn.CrossEntropyLoss(), StepPrecision.choose("fp32", False, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        agreeing = Checkpointer(Path(folder), {}, model, optimizer, scheduler, cluster=cluster)

        def run(checkpointer: Checkpointer | None) -> float:
            start = time.perf_counter()
            seen = train_one_epoch(trained, criterion, optimizer, scheduler, loader, precision, TrainingState(),
                                   args.steps, checkpointer=checkpointer).images  # fmt: skip
            return seen / (time.perf_counter() - start)

        run(agreeing), run(None)  # warm-up
        rates: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(args.rounds):
            rates["with"].append(run(agreeing))
            rates["without"].append(run(None))
        start = time.perf_counter()
        for _ in range(100):
            cluster.any(False)
        agreement = (time.perf_counter() - start) / 100
    if rank == 0:
        step = args.batch_size / statistics.median(rates["without"])
        ratio = statistics.median(rates["with"]) / statistics.median(rates["without"])
        with_rate, without_rate = statistics.median(rates["with"]), statistics.median(rates["without"])
        print(f"stop agreement, 2 gloo processes: {with_rate:.1f} vs {without_rate:.1f} images/s per process; "
              f"ratio with/without: {ratio:.3f}; one agreement {agreement * 1e6:.0f} us = {agreement / step:.2%} "
              f"of a {step * 1000:.0f} ms step")  # fmt: skip
    torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each loop")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_digits(root, size=args.image_size)
        images = data.load_image_folders({"training": root})
        hps = Hyperparameters.from_mapping({"batch_size": args.batch_size, "num_workers": args.workers})
        ours_loader = data.make_loaders(
            images, crop_size=args.image_size, batch_size=args.batch_size, num_workers=args.workers, seed=0,
            pin_memory=False,
        )["train"]  # fmt: skip
        bare_loader = torch.utils.data.DataLoader(
            torchvision.datasets.ImageFolder(root / "train", transform=standard_train_transform(args.image_size)),
            batch_size=args.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0,
        )  # fmt: skip
        model = torchvision.models.resnet18(num_classes=len(images.classes))
        optimizer = make_optimizer(hps, model)
        scheduler = make_scheduler(hps, optimizer, args.steps * (args.rounds + 1))
        criterion = nn.CrossEntropyLoss()

        precision = StepPrecision.choose("fp32", False, torch.device("cpu"))

        def ours() -> int:
            return train_one_epoch(model, criterion, optimizer, scheduler, ours_loader, precision, TrainingState(),
                                   args.steps).images  # fmt: skip

        def bare() -> int:
            return bare_loop(model, bare_loader, args.steps)

        rates: dict[str, list[float]] = {"ours": [], "bare": []}
        ours(), bare()  # warm-up: start the workers, fill the caches
        for _ in range(args.rounds):
            for name, run in (("ours", ours), ("bare", bare)):
                start = time.perf_counter()
                seen = run()
                rates[name].append(seen / (time.perf_counter() - start))

    ours_rate, bare_rate = statistics.median(rates["ours"]), statistics.median(rates["bare"])
    print(f"resnet18, {args.image_size}px, batch {args.batch_size}, {args.workers} workers, {args.steps} steps x "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"bare loop:  {bare_rate:.1f} images/s  (runs: {', '.join(f'{r:.1f}' for r in rates['bare'])})")
    print(f"imgclf:     {ours_rate:.1f} images/s  (runs: {', '.join(f'{r:.1f}' for r in rates['ours'])})")
    print(f"ratio imgclf/bare: {ours_rate / bare_rate:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_digits(root, size=args.image_size)
        torch.multiprocessing.spawn(stop_agreement, args=(args, root, str(root / "store")), nprocs=2)


if __name__ == "__main__":
    main()
