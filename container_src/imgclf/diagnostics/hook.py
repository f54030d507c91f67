"""The smdebug hook: SageMaker's configuration when it gave one, else ours; never fatal to training.

smdebug's own `register_module` puts a Python hook on every module and every parameter, and they run at every
step, saved or not: a cost on every step that is heaviest on a GPU, where a step takes milliseconds. Here
only the model's forward pre-hook runs at every step (smdebug counts the step there, and closes and opens its
files); the per-module and per-parameter hooks are attached for the steps smdebug saves, and removed at the
next step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

log = logging.getLogger(__name__)

SAGEMAKER_HOOK_CONFIG = "input/config/debughookconfig.json"  # written by SageMaker for a DebuggerHookConfig
# Gradients and weights are saved as the reduction the rules read (mean |x|: also NaN or infinite when the tensor
# holds NaN or infinity), not whole tensors. smdebug writes each reduction of each tensor as its own protobuf
# record in pure Python (about 0.4 ms each on 2 cores): mean, max, min, mean |x| and L2 norm of ResNet-18's 62
# gradients and 62 weights cost 145 ms a saved step, mean |x| alone 45 ms.
REDUCTIONS = {"abs_reductions": ["mean"]}


@dataclass
class HookState:
    hook: Any  # smdebug.pytorch.Hook, or None
    trace_dir: Path | None
    note: str  # one sentence for the report


def create_hook(
    base_dir: Path, trace_dir: Path, model: nn.Module, loss: nn.Module, train_interval: int, eval_interval: int,
    enabled: bool,
) -> HookState:  # fmt: skip
    """Register `model` and `loss` with an smdebug hook, or say why there is none."""
    sagemaker_config = base_dir / SAGEMAKER_HOOK_CONFIG
    if not enabled and not sagemaker_config.is_file():
        return HookState(None, None, "the smdebug hook is off (debug_hook=false); rules read the metric log")
    try:
        import smdebug.pytorch as smd
        from smdebug.core.reduction_config import ReductionConfig

        if sagemaker_config.is_file():
            hook = smd.Hook.create_from_json_file(str(sagemaker_config))
            note = f"smdebug hook configured by SageMaker ({sagemaker_config})"
        else:
            save_config = smd.SaveConfig(
                mode_save_configs={
                    smd.modes.TRAIN: smd.SaveConfigMode(save_interval=train_interval),
                    smd.modes.EVAL: smd.SaveConfigMode(save_interval=eval_interval),
                    smd.modes.PREDICT: smd.SaveConfigMode(save_interval=eval_interval),
                }
            )
            hook = smd.Hook(out_dir=str(trace_dir), save_config=save_config,
                            include_collections=["losses", "gradients", "weights"])  # fmt: skip
            for name in ("gradients", "weights"):
                hook.get_collection(name).reduction_config = ReductionConfig(**REDUCTIONS)
            note = (
                f"smdebug hook writing to {trace_dir} (train.save_interval={train_interval}, "
                f"eval.save_interval={eval_interval})"
            )
        SavedStepsHooks(hook, model, loss)
    except Exception as err:  # smdebug is optional: training must go on without it
        log.warning("the smdebug hook could not be set up, training continues without it: %r", err)
        return HookState(None, None, f"smdebug failed ({err!r}); rules read the metric log")
    log.info(note)
    return HookState(hook, Path(hook.out_dir), note)


class SavedStepsHooks:
    """Registers `model` and `loss` with smdebug's `hook` as its `register_module` and `register_loss` do, except
    that the per-module and per-parameter hooks are attached only for the steps smdebug saves."""

    def __init__(self, hook: Any, model: nn.Module, loss: nn.Module):
        from smdebug.core.modes import ModeKeys  # smdebug is there: `hook` is its

        self.hook, self.model, self.loss = hook, model, loss
        self._global_mode = ModeKeys.GLOBAL
        self._attached: list[RemovableHandle] = []
        # What smdebug's register_module and register_loss record besides their hooks (smdebug 1.0.34).
        for name, module in model.named_modules():
            module._module_name = name
            hook.module_set.add(module)
        model._module_name = model._get_name()
        loss._module_name = loss._get_name()
        hook.module_set.add(loss)
        first = next(model.parameters(), None)
        hook.use_cuda = bool(first is not None and first.is_cuda)
        hook.profiler = torch.autograd.ProfilerState.CUDA if hook.use_cuda else torch.autograd.ProfilerState.CPU
        hook.has_registered_module = hook.has_registered_loss_module = True
        self._every_step = [model.register_forward_pre_hook(self._before_step), model.register_forward_hook(hook.fhook)]

    def _before_step(self, module: nn.Module, inputs: Any) -> None:
        try:
            self._detach()
            if self._quiet_step():
                return
            self.hook.forward_pre_hook(module, inputs)  # counts the step; opens its files when it is saved
            if self.hook._get_collections_to_save_for_step():
                self._attach()
        except Exception as err:  # as smdebug does with its own errors: stop saving, keep training
            log.warning("the smdebug hook failed and is switched off, training continues: %r", err)
            self._detach()
            for handle in self._every_step:
                handle.remove()

    def _quiet_step(self) -> bool:
        """Count a step that saves nothing, where nothing of the last one is left to write, as smdebug's
        `_increment_step` counts it, and skip the rest of its forward pre-hook (its timeline and profiler
        bookkeeping, which this image does not use): about half a millisecond of Python a step. Otherwise leave
        the count to smdebug and say so."""
        hook = self.hook
        if hook.writer is not None or not hook.prepared_collections:
            return False
        hook.step += 1
        hook.mode_steps[hook.mode] += 1
        hook._collections_to_save_for_step = None
        if hook._get_collections_to_save_for_step():  # a saved step: undo, smdebug counts it itself
            hook.step -= 1
            hook.mode_steps[hook.mode] -= 1
            hook._collections_to_save_for_step = None
            return False
        hook.written_tensor_name_for_step.clear()
        if hook.mode != self._global_mode:
            hook.mode_steps[self._global_mode] = hook.step
        return True

    def _attach(self) -> None:
        hook, prefix = self.hook, self.model._get_name()
        self._attached = [module.register_forward_hook(hook.forward_hook) for module in self.model.modules()]
        self._attached.append(self.loss.register_forward_hook(hook.forward_hook))
        self._attached += [parameter.register_hook(hook.backward_hook(f"{prefix}_{name}"))
                           for name, parameter in self.model.named_parameters() if parameter.requires_grad]  # fmt: skip

    def _detach(self) -> None:
        for handle in self._attached:
            handle.remove()
        self._attached = []


def set_mode(state: HookState, mode: str) -> None:
    """Switch the hook to TRAIN, EVAL or PREDICT."""
    if state.hook is not None:
        import smdebug.pytorch as smd

        state.hook.set_mode(getattr(smd.modes, mode))


def close(state: HookState) -> None:
    if state.hook is not None:
        state.hook.close()
