"""Our smdebug hook attaches smdebug's per-module and per-parameter hooks only for the steps it saves, and writes
the same trace as smdebug's own `register_module` and `register_loss`."""

from __future__ import annotations

from pathlib import Path

import pytest
import smdebug.pytorch as smd
import torch
import torchvision
from smdebug.core.reduction_config import ReductionConfig
from smdebug.trials import create_trial
from torch import nn

from imgclf.diagnostics import hook as smdebug_hook

pytestmark = pytest.mark.slow  # real training with smdebug

TRAIN_INTERVAL, EVAL_INTERVAL = 3, 2


def module_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules()) + sum(len(p._backward_hooks or {})
                                                                      for p in model.parameters())  # fmt: skip


def train_and_read(out: Path, ours: bool) -> tuple[dict[str, dict[int, float]], list[int]]:
    """Two epochs of 7 training and 3 validation steps; every saved tensor's mean |x| (losses: value) by step,
    and the number of module and parameter hooks the model carried at each training step."""
    torch.manual_seed(0)
    model, loss_module = torchvision.models.resnet18(num_classes=4), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    if ours:
        hook = smdebug_hook.create_hook(out, out / "debug", model, loss_module, TRAIN_INTERVAL, EVAL_INTERVAL,
                                        enabled=True).hook  # fmt: skip
    else:
        modes = {mode: smd.SaveConfigMode(save_interval=interval) for mode, interval in
                 ((smd.modes.TRAIN, TRAIN_INTERVAL), (smd.modes.EVAL, EVAL_INTERVAL))}  # fmt: skip
        hook = smd.Hook(out_dir=str(out / "debug"), save_config=smd.SaveConfig(mode_save_configs=modes),
                        include_collections=["losses", "gradients", "weights"])  # fmt: skip
        for name in ("gradients", "weights"):
            hook.get_collection(name).reduction_config = ReductionConfig(**smdebug_hook.REDUCTIONS)
        hook.register_module(model)
        hook.register_loss(loss_module)
    data = torch.Generator().manual_seed(1)
    hooks_during_steps = []
    for _ in range(2):
        hook.set_mode(smd.modes.TRAIN)
        model.train()
        for _ in range(7):
            images, labels = torch.randn(4, 3, 32, 32, generator=data), torch.randint(0, 4, (4,), generator=data)
            loss = loss_module(model(images), labels)
            hooks_during_steps.append(module_hooks(model))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        hook.set_mode(smd.modes.EVAL)
        model.eval()
        with torch.no_grad():
            for _ in range(3):
                images, labels = torch.randn(4, 3, 32, 32, generator=data), torch.randint(0, 4, (4,), generator=data)
                loss_module(model(images), labels)
    hook.close()
    trial = create_trial(str(out / "debug"))
    saved = {}
    for name in trial.tensor_names():
        tensor = trial.tensor(name)
        loss = "loss" in name.lower()
        saved[name] = {step: float(tensor.value(step) if loss else tensor.reduction_value(step, "mean", abs=True))
                       for step in tensor.steps()}  # fmt: skip
    return saved, hooks_during_steps


def test_the_trace_is_smdebugs_own_with_hooks_only_on_saved_steps(tmp_path: Path):
    theirs, their_hooks = train_and_read(tmp_path / "theirs", ours=False)
    ours, our_hooks = train_and_read(tmp_path / "ours", ours=True)

    assert ours == theirs  # the same tensors, at the same steps, with the same values
    losses = next(steps for name, steps in ours.items() if "loss" in name.lower())
    assert sorted(losses) == [0, 3, 6, 7, 9, 12, 15, 18]  # training steps 0, 3, 6, ... and validation steps 0, 2, 4
    assert any(name.startswith("gradient/") for name in ours) and any("weight" in name for name in ours)
    # smdebug's own registration keeps a hook on every module and parameter at every step; ours keeps one on the
    # model (smdebug's end-of-forward hook) and adds the others for the steps it saves.
    assert len(set(their_hooks)) == 1 and their_hooks[0] > 100
    assert our_hooks == [their_hooks[0] if step % TRAIN_INTERVAL == 0 else 1 for step in range(14)]
