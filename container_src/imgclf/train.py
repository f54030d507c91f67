"""The built-in trainer: fine-tune a ResNet on the job's image folders and save a servable model."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from imgclf import accelerator, artifacts, data, decoding, distributed, hyperparameters
from imgclf.checkpoint import Checkpointer, EpochProgress, TrainingState
from imgclf.diagnostics.evidence import JobSettings
from imgclf.diagnostics.watch import Diagnostics, TrainingStopped
from imgclf.environment import TrainingEnv
from imgclf.model import build_model, find_pretrained_weights
from imgclf.precision import StepPrecision
from imgclf_contract import metrics
from imgclf_contract.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

PROGRESS_LINES_PER_EPOCH = 10
MAX_UNREAD_STEPS = 256  # steps whose loss waits on the device at most, between progress lines
# Hyperparameters that do not change what is computed: a checkpoint resumes across changes of these
# (processes_per_host is one: the checkpoint keeps the world size, which is what counts).
NOT_IN_CHECKPOINT_IDENTITY = ("num_workers", "debug_hook", "debug_train_save_interval", "debug_eval_save_interval",
                              "rules", "profiler_interval_ms", "checkpoint_interval", "allow_cpu",
                              "processes_per_host", "decode_device")  # fmt: skip


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    dropped: int


class RunningSums:
    """A loop's loss and correct-prediction sums, with each step's figures kept on the device until `settle`.

    Adding a step queues two small device operations and waits for nothing; a `.item()` per step would make the
    host wait for every step's kernels, which stalls a GPU's pipeline. `settle` reads the steps kept so far (one
    sync) and adds them to an `EpochProgress` one by one, in order, exactly as per-step `.item()` calls would:
    sums do not depend on when they are settled (a resumed job's metrics equal an uninterrupted one's).
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []
        self._sizes: list[int] = []

    @property
    def pending(self) -> int:
        return len(self._losses)

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        self._losses.append(loss.detach().float())
        self._correct.append((outputs.argmax(1) == labels).sum())
        self._sizes.append(len(labels))

    def settle(self, progress: EpochProgress) -> None:
        if not self._losses:
            return
        losses, correct = torch.stack(self._losses).tolist(), torch.stack(self._correct).tolist()
        for loss, right, size in zip(losses, correct, self._sizes, strict=True):
            progress.loss_sum += loss * size
            progress.correct += right
        self._losses, self._correct, self._sizes = [], [], []


def make_optimizer(hps: Hyperparameters, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if hps.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hps.learning_rate, momentum=hps.momentum, weight_decay=hps.weight_decay)
    optimizer_class = torch.optim.Adam if hps.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(params, lr=hps.learning_rate, weight_decay=hps.weight_decay)


def make_scheduler(hps: Hyperparameters, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """Stepped once per training step."""
    if hps.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def steps_per_epoch(loader: DataLoader, max_steps: int) -> int:
    return min(len(loader), max_steps) if max_steps else len(loader)


def on_device(
    images: torch.Tensor | decoding.EncodedBatch, labels: torch.Tensor, precision: StepPrecision
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A loader's batch as the network's input and labels on the device: uint8 images normalised there, in the
    step's memory format (an `EncodedBatch` decoded there first). Also how many images its decoder left out."""
    left_out = 0
    if isinstance(images, decoding.EncodedBatch):
        images, kept = images.decode(precision.device)
        left_out, labels = len(labels) - len(kept), labels[kept]
    images = precision.inputs(data.normalize(images.to(precision.device, non_blocking=True)))
    return images, labels.to(precision.device, non_blocking=True), left_out


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loader: DataLoader,
    precision: StepPrecision,
    state: TrainingState,
    max_steps: int = 0,
    diagnostics: Diagnostics | None = None,
    checkpointer: Checkpointer | None = None,
) -> EpochStats:
    """Train on the rest of `state.epoch` (all of it, unless resumed mid-epoch), updating `state.progress`."""
    model.train()
    if diagnostics:
        diagnostics.mode("TRAIN")
    steps = steps_per_epoch(loader, max_steps)
    report_every = max(1, steps // PROGRESS_LINES_PER_EPOCH)
    progress, epoch = state.progress, state.epoch
    sums = RunningSums()
    start, first_seen = time.perf_counter(), progress.seen
    for images, labels, broken in loader:  # a resumed epoch's loader starts after progress.step batches
        progress.step += 1
        images, labels, left_out = on_device(images, labels, precision)
        progress.dropped += broken + left_out
        if len(labels):
            if diagnostics:
                diagnostics.timer.batch_ready()
            with precision.autocast():
                outputs = model(images)
                loss = criterion(outputs, labels)
            if diagnostics:
                diagnostics.timer.mark()
            optimizer.zero_grad(set_to_none=True)
            precision.backward(loss)
            if diagnostics:
                diagnostics.timer.mark()
            precision.step(optimizer)
            scheduler.step()
            if diagnostics:
                diagnostics.timer.mark()
            sums.add(loss, outputs, labels)  # no `.item()`: nothing here waits for the device
            progress.seen += len(labels)
            if diagnostics:
                diagnostics.train_step(epoch, loss, model)
            if sums.pending >= MAX_UNREAD_STEPS:
                sums.settle(progress)
        if progress.step % report_every == 0 or progress.step == steps:
            sums.settle(progress)  # a sync point, a few times an epoch
            rate = (progress.seen - first_seen) / (time.perf_counter() - start)
            log.info("epoch %d step %d/%d loss %.4f (%.1f images/s)", epoch, progress.step, steps,
                     progress.loss_sum / max(progress.seen, 1), rate)  # fmt: skip
        if checkpointer:
            checkpointer.after_step(state, settle=lambda: sums.settle(progress))
        if progress.step == steps:
            break
    sums.settle(progress)
    seen = max(progress.seen, 1)
    return EpochStats(progress.loss_sum / seen, progress.correct / seen, progress.seen, progress.dropped)


def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    precision: StepPrecision,
    diagnostics: Diagnostics | None = None,
    mode: str = "EVAL",
) -> EpochStats:
    """Loss and accuracy over a split; `mode` is EVAL for validation, PREDICT for the test split."""
    model.eval()
    if diagnostics:
        diagnostics.mode(mode)
    sums, progress = RunningSums(), EpochProgress()
    with torch.inference_mode():
        for images, labels, broken in loader:
            progress.dropped += broken
            if not len(labels):
                continue
            images, labels, _ = on_device(images, labels, precision)
            with precision.autocast():
                outputs = model(images)
            loss = criterion(outputs.float(), labels)
            sums.add(loss, outputs, labels)
            progress.seen += len(labels)
            if diagnostics:
                diagnostics.valid_step(loss) if mode == "EVAL" else diagnostics.test_step()
    sums.settle(progress)
    seen = max(progress.seen, 1)
    return EpochStats(progress.loss_sum / seen, progress.correct / seen, progress.seen, progress.dropped)


def _fit(
    hps: Hyperparameters,
    trained: nn.Module,
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loaders: dict[str, DataLoader],
    precision: StepPrecision,
    cluster: distributed.Cluster,
    diagnostics: Diagnostics,
    checkpointer: Checkpointer,
    state: TrainingState,
) -> tuple[TrainingState, EpochStats]:
    """The epochs from where `state` stands (train, validate, print the metrics line, checkpoint, check the
    rules), then the test split."""
    while state.epoch <= hps.epochs:
        # This epoch's shuffle (and shard), after the batches a resumed epoch already trained on.
        loaders["train"].sampler.set_epoch(state.epoch, start=state.progress.step * hps.batch_size)
        train = train_one_epoch(trained, criterion, optimizer, scheduler, loaders["train"], precision, state,
                                hps.max_steps_per_epoch, diagnostics, checkpointer)  # fmt: skip
        valid = evaluate(model, criterion, loaders["valid"], precision, diagnostics)
        if cluster.is_primary:
            values = {metrics.TRAIN_LOSS: train.loss, metrics.VALID_LOSS: valid.loss,
                      metrics.VALID_ACCURACY: valid.accuracy}  # fmt: skip
            print(metrics.epoch_line(state.epoch, values), flush=True)  # the lines tuners and SageMaker read
        state.history.append({"epoch": state.epoch, "train": dataclasses.asdict(train),
                              "valid": dataclasses.asdict(valid)})  # fmt: skip
        state.trained_images += train.images
        state.epoch, state.progress = state.epoch + 1, EpochProgress()
        checkpointer.after_epoch(state)
        diagnostics.check()
    checkpointer.training_ended()
    test = evaluate(model, criterion, loaders["test"], precision, diagnostics, mode="PREDICT")
    return state, test


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def run(env: TrainingEnv) -> dict:
    """Train, validate each epoch, test once; the primary host saves the model and metrics. Return the metrics."""
    hps = hyperparameters.parse(env.hyperparameters)  # fails before any data is read
    log.info("hyperparameters: %s", dataclasses.asdict(hps))
    weights = find_pretrained_weights(hps.model_name, env.channels, hps.pretrained)
    seed_everything(hps.seed)
    device = accelerator.select_device(hps.allow_cpu, distributed.local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cluster = distributed.join(device)

    images = data.load_image_folders(env.channels)
    log.info(
        "%d classes; %s images",
        len(images.classes),
        ", ".join(f"{name} {len(split.samples)}" for name, split in images.splits.items()),
    )
    decode = decoding.choose(hps.decode_device, device)
    loaders = data.make_loaders(
        images,
        crop_size=hps.image_size,
        batch_size=hps.batch_size,
        num_workers=hps.num_workers,
        seed=hps.seed,
        pin_memory=device.type == "cuda",
        rank=cluster.rank,
        world_size=cluster.world_size,
        decode=decode,
    )
    precision = StepPrecision.choose(hps.mixed_precision, hps.channels_last, device)
    log.info("training in %s on %s; training JPEGs decoded on the %s", precision.describe(), device, decode.upper())
    model = precision.prepare(build_model(hps.model_name, len(images.classes), weights, hps.freeze_backbone).to(device))
    criterion = nn.CrossEntropyLoss()
    optimizer = make_optimizer(hps, model)
    scheduler = make_scheduler(hps, optimizer, hps.epochs * steps_per_epoch(loaders["train"], hps.max_steps_per_epoch))
    identity = {k: v for k, v in dataclasses.asdict(hps).items() if k not in NOT_IN_CHECKPOINT_IDENTITY}
    checkpointer = Checkpointer(
        env.checkpoint_dir,
        {**identity, "classes": images.classes, "world_size": cluster.world_size},
        model,
        optimizer,
        scheduler,
        interval=hps.checkpoint_interval,
        cluster=cluster,
        scaler=precision.scaler,
    )
    state = checkpointer.resume()  # before DDP's wrap, which hands rank 0's weights to every process
    trained = distributed.wrap(model, cluster, device)

    diagnostics = Diagnostics(
        base_dir=env.base_dir,
        output_dir=env.output_data_dir,
        model=model,
        loss=criterion,
        device=device,
        settings=JobSettings(
            cpu_count=os.cpu_count() or 1,
            gpu_count=torch.cuda.device_count(),
            world_size=cluster.world_size,
            num_workers=hps.num_workers,
            batch_size=hps.batch_size,
            pin_memory=device.type == "cuda",
            processes_per_host=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
            decode_device=decode,
        ),
        rule_config=hps.rules,
        train_interval=hps.debug_train_save_interval,
        eval_interval=hps.debug_eval_save_interval,
        hook_enabled=hps.debug_hook,
        profiler_interval=hps.profiler_interval_ms / 1000,
        rank=cluster.rank,
    )
    checkpointer.handle_sigterm()
    notes: list[str] = []
    try:
        state, test = _fit(hps, trained, model, criterion, optimizer, scheduler, loaders, precision, cluster,
                           diagnostics, checkpointer, state)  # fmt: skip
        step_seconds = cluster.gather(diagnostics.timer.median_step_seconds())
        if cluster.is_distributed:
            notes.append(distributed.step_spread(step_seconds))
            log.info("%s", notes[-1])
    except KeyboardInterrupt:
        if diagnostics.stalled is None:
            raise
        raise TrainingStopped(f"rule StalledTraining stopped training: {diagnostics.stalled.explanation}") from None
    finally:
        diagnostics.finish(notes)
    summary = {"epochs": state.history, "test": dataclasses.asdict(test), "skipped_files": images.skipped_report()}

    artifacts.save_host_report(
        env.output_data_dir,
        env.current_host,
        cluster.rank,
        {
            "host": env.current_host,
            "rank": cluster.rank,
            "local_rank": cluster.local_rank,
            "world_size": cluster.world_size,
            "device": str(device),
            "median_step_seconds": step_seconds[cluster.rank],
            "trained_images": state.trained_images,
            "parameters_sha256": distributed.fingerprint(dict(model.named_parameters())),
            "state_sha256": distributed.fingerprint(model.state_dict()),
        },
    )
    if cluster.is_primary:
        print(metrics.final_line(metrics.TEST_LOSS, test.loss), flush=True)
        print(metrics.final_line(metrics.TEST_ACCURACY, test.accuracy), flush=True)
        artifacts.save_model(
            env.model_dir,
            model,
            {
                "architecture": hps.model_name,
                "classes": images.classes,
                "preprocessing": data.eval_preprocessing(hps.image_size),
                "pretrained_weights": str(weights) if weights else None,
                "hyperparameters": dataclasses.asdict(hps),
                "hosts": len(env.hosts),
                "processes": cluster.world_size,
            },
        )
        path = artifacts.save_metrics(env.output_data_dir, summary)
        log.info("saved the model to %s and metrics to %s", env.model_dir, path)
        checkpointer.discard()
    distributed.leave(cluster)
    return summary
