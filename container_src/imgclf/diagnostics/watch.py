"""The diagnostics of one training process: what the training loop calls, and the rules evaluated on the way.

Every training process times its steps (`steps.jsonl`, `steps.rank<N>.jsonl` for rank N > 0); the primary
process (global rank 0) also runs the smdebug hook, the system monitor (which sees every GPU of its host), the
rules and writes the report.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import torch
from torch import nn

from imgclf.diagnostics import hook as smdebug_hook
from imgclf.diagnostics.evidence import Evidence, JobSettings
from imgclf.diagnostics.monitor import SystemMonitor
from imgclf.diagnostics.report import summary_table, write_report
from imgclf.diagnostics.rule import ERROR, ISSUES, Rule, RuleResult
from imgclf.diagnostics.rulebook import build_rules
from imgclf.diagnostics.steps import StepTimer
from imgclf.diagnostics.trace import MetricLog, SmdebugReader, TrainingTrace
from imgclf.diagnostics.training_rules import StalledTraining
from imgclf.errors import UserError

log = logging.getLogger(__name__)

DEBUG_DIR, DIAGNOSTICS_DIR, REPORT_DIR = "debug", "diagnostics", "report"
# At most this many steps' losses wait on the device before they are read (they are also read at every rule
# check, every `train_interval` training steps, and when the mode changes): one wait for the device a block.
MAX_PENDING = 256


class TrainingStopped(UserError):
    """A rule with `stop_on` fired."""


class Diagnostics:
    def __init__(
        self,
        *,
        base_dir: Path,
        output_dir: Path,
        model: nn.Module,
        loss: nn.Module,
        device: torch.device,
        settings: JobSettings,
        rule_config: Mapping[str, Any],
        train_interval: int,
        eval_interval: int,
        hook_enabled: bool,
        profiler_interval: float,
        rank: int = 0,
    ):
        self.primary = rank == 0
        self.output_dir = output_dir
        self.settings = settings
        folder = output_dir / DIAGNOSTICS_DIR
        suffix = f".rank{rank}" if rank else ""  # the processes of one host share its output folder
        self.timer = StepTimer(folder / f"steps{suffix}.jsonl", device)
        self.metric_log = MetricLog(folder / f"training{suffix}.jsonl", train_interval)
        self.train_interval = train_interval
        self.rules: list[Rule] = build_rules(rule_config) if self.primary else []
        self.hook = smdebug_hook.HookState(None, None, "smdebug runs in the primary process only")
        self.monitor = None
        self.reader = None
        if self.primary:
            self.hook = smdebug_hook.create_hook(base_dir, output_dir / DEBUG_DIR, model, loss, train_interval,
                                                 eval_interval, hook_enabled)  # fmt: skip
            self.reader = SmdebugReader(self.hook.trace_dir) if self.hook.trace_dir else None
            if profiler_interval > 0:
                self.monitor = SystemMonitor(folder / "system.jsonl", profiler_interval).start()
        self.activity: list[float] = []
        self.first_step_at: float | None = None
        self.results: dict[str, RuleResult] = {}
        self.stalled: RuleResult | None = None
        self._done = threading.Event()
        self._start_watchdog()

    # -- the training loop's calls --------------------------------------------------------------------------
    def mode(self, mode: str) -> None:
        """TRAIN, EVAL (validation) or PREDICT (test)."""
        self.settle()
        smdebug_hook.set_mode(self.hook, mode)
        self.timer.wait()

    def train_step(self, epoch: int, loss: torch.Tensor, model: nn.Module) -> None:
        """After the optimizer step. `loss` stays on the device: it is read with the others of its block."""
        self.timer.end(epoch)
        self.activity.append(time.time())
        self.metric_log.train_step(loss, model)
        if self.metric_log.train_steps % self.train_interval == 0:
            self.check()
        elif self.metric_log.pending >= MAX_PENDING:
            self.settle()

    def valid_step(self, loss: torch.Tensor) -> None:
        self.activity.append(time.time())
        self.metric_log.valid_step(loss)
        if self.metric_log.pending >= MAX_PENDING:
            self.settle()

    def test_step(self) -> None:
        self.activity.append(time.time())

    def settle(self) -> None:
        """Read the losses, checks and step timings kept on the device so far (one wait for the device)."""
        self.metric_log.settle()
        settled = self.timer.settle()
        if settled and self.first_step_at is None:
            self.first_step_at = settled[0].end - settled[0].total

    def check(self) -> None:
        """Evaluate the rules on the evidence so far; stop the job if a `stop_on` rule fires."""
        self.settle()
        if not self.primary:
            return
        self.metric_log.flush()
        results = self._evaluate()
        stopping = [r for r in self.rules if r.stop_on and results[r.name].status == ISSUES]
        if stopping:
            first = results[stopping[0].name]
            raise TrainingStopped(f"rule {first.rule} stopped training: {first.explanation}")

    def finish(self, notes: list[str] | None = None) -> None:
        """Evaluate once more on everything, write the report and log its summary. Safe to call once, always."""
        self._done.set()
        self.settle()
        self.timer.close()
        self.metric_log.close()
        if self.monitor:
            self.monitor.stop()
        smdebug_hook.close(self.hook)
        if not self.primary:
            return
        evidence = self._evidence(final=True)
        results = self._evaluate(evidence)
        folder = self.output_dir / REPORT_DIR
        page = write_report(folder, list(results.values()), evidence, [self.hook.note, *(notes or [])])
        print("rule summary:\n" + summary_table(list(results.values())), flush=True)
        log.info("report: %s", page)

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evidence(self, final: bool = False) -> Evidence:
        """What the rules judge. While training that is the metric log (every step's loss, in memory); at the end
        the smdebug trace joins it, series by series where it holds more (e.g. a SageMaker hook configuration
        that saves gradients more often than the metric log checks them)."""
        trace = self.metric_log.trace
        if final and self.reader is not None:
            try:
                trace = TrainingTrace.densest(trace, self.reader.read())
            except Exception as err:  # a broken trace must not cost the report
                log.warning("could not read the smdebug trace, rules use the metric log: %r", err)
        start = psutil.Process().create_time()
        return Evidence(
            trace=trace,
            samples=list(self.monitor.samples) if self.monitor else [],
            steps=list(self.timer.timings),
            settings=self.settings,
            initialization_seconds=None if self.first_step_at is None else self.first_step_at - start,
            activity=list(self.activity),
            now=time.time(),
        )

    def _evaluate(self, evidence: Evidence | None = None) -> dict[str, RuleResult]:
        evidence = evidence or self._evidence()
        for rule in self.rules:
            try:
                self.results[rule.name] = rule.evaluate(evidence)
                if rule.kind == "training":
                    self.results[rule.name].details["evidence"] = evidence.trace.source
            except Exception as err:
                log.exception("rule %s failed", rule.name)
                self.results[rule.name] = rule.result(ERROR, f"the rule failed: {err!r}")
        return self.results

    def _start_watchdog(self) -> None:
        """StalledTraining must fire while the loop is stuck, so it is also checked from a thread."""
        rule = next((r for r in self.rules if isinstance(r, StalledTraining)), None)
        if rule is None:
            return
        period = min(max(rule.parameters["threshold"] / 10, 0.5), 60.0)

        def watch() -> None:
            while not self._done.wait(period):
                if not self.activity:
                    continue
                result = rule.evaluate(Evidence(self.metric_log.trace, [], [], self.settings, None,
                                                list(self.activity[-1:]), time.time()))  # fmt: skip
                if result.status == ISSUES:
                    self.results[rule.name] = result
                    log.error("StalledTraining: %s", result.explanation)
                    if rule.stop_on:
                        self.stalled = result
                        _thread.interrupt_main()
                        return

        threading.Thread(target=watch, name="stalled-training-watchdog", daemon=True).start()
