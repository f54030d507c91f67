"""The smdebug hook: SageMaker's configuration when it gave one, else ours; never fatal to training."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

SAGEMAKER_HOOK_CONFIG = "input/config/debughookconfig.json"  # written by SageMaker for a DebuggerHookConfig
# Gradients and weights are saved as reductions (what the rules read), not whole tensors, to keep the trace small.
REDUCTIONS = {"reductions": ["mean", "max", "min"], "abs_reductions": ["mean"], "norms": ["l2"]}


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
        hook.register_module(model)
        hook.register_loss(loss)
    except Exception as err:  # smdebug is optional: training must go on without it
        log.warning("the smdebug hook could not be set up, training continues without it: %r", err)
        return HookState(None, None, f"smdebug failed ({err!r}); rules read the metric log")
    log.info(note)
    return HookState(hook, Path(hook.out_dir), note)


def set_mode(state: HookState, mode: str) -> None:
    """Switch the hook to TRAIN, EVAL or PREDICT."""
    if state.hook is not None:
        import smdebug.pytorch as smd

        state.hook.set_mode(getattr(smd.modes, mode))


def close(state: HookState) -> None:
    if state.hook is not None:
        state.hook.close()
